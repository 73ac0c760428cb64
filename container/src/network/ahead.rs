//! Veths made ahead of need, as the launcher's network namespaces are: making a veth pair
//! registers two network devices (sysfs entries, per-device sysctl tables, under the RTNL
//! lock), the dearest part of plumbing a container. A background thread (`molde-veth`) keeps
//! two network namespaces for the bridge last asked for, each with loopback up, a netlink
//! socket opened inside it, and a veth pair already on the bridge: the peer `eth0` inside,
//! the host end `mvp<12 random hex>`, both up. A start takes one, renames the host end after
//! its owner, and gives the peer its MAC, address and route.
//!
//! Up, because a link that comes up is not at once of use: the kernel enables a bridge port
//! (and, when the bridge had no port up, lets the bridge send again) only when its link-state
//! work (`linkwatch`) has seen the carrier, some milliseconds later under load; until then
//! what the host sends the container is dropped, and the first ARP request or SYN of a client
//! is sent again only after a second. Made up ahead, the port is enabled long before its
//! container starts, and the ports kept ready keep the bridge's carrier on between containers.
//!
//! Nothing made here outlives the process: a namespace's references are the pool's
//! descriptor and socket, so it (and its veth) goes when they are dropped or the process
//! dies. Where a namespace or veth cannot be made, the maker stops and starts plumb their own.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Condvar, Mutex, OnceLock};

use super::netlink::Rtnl;

/// How many are kept ready.
const KEEP: usize = 2;

/// A namespace made ahead, with its veth on `bridge`.
pub(crate) struct Ready {
    pub(crate) ns: OwnedFd,
    /// A netlink socket in `ns`.
    pub(crate) rtnl: Rtnl,
    /// The index of the veth's host end (down, on the bridge).
    pub(crate) host: u32,
}

#[derive(Default)]
struct State {
    /// The bridge the pool makes veths for (the last one asked for).
    bridge: Option<(String, u32)>,
    ready: Vec<Ready>,
    /// The maker failed: no more.
    off: bool,
}

struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let pool = Pool {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        };
        // Started once, on first use; it blocks every signal as the launcher's makers do.
        let _ = std::thread::Builder::new()
            .name("molde-veth".into())
            .spawn(maker);
        pool
    })
}

/// A namespace with a veth on `bridge` (named `name`), if one is ready; the maker is asked
/// for the next ones.
pub(crate) fn take(name: &str, bridge: u32) -> Option<Ready> {
    let pool = pool();
    let mut st = pool.state.lock().ok()?;
    if st.off {
        return None;
    }
    let got = if st
        .bridge
        .as_ref()
        .is_some_and(|(n, i)| n == name && *i == bridge)
    {
        st.ready.pop()
    } else {
        st.bridge = Some((name.to_owned(), bridge));
        st.ready.clear();
        None
    };
    pool.wake.notify_all();
    got
}

/// The bridge `name` is going: drop what was made for it (its namespaces, and so its veths,
/// go with their descriptors) and make nothing more for it.
pub(crate) fn forget(name: &str) {
    let Some(pool) = POOL.get() else { return };
    if let Ok(mut st) = pool.state.lock()
        && st.bridge.as_ref().is_some_and(|(n, _)| n == name)
    {
        st.bridge = None;
        st.ready.clear();
    }
}

fn maker() {
    let mut set = nix::sys::signal::SigSet::all();
    set.remove(nix::sys::signal::Signal::SIGSEGV);
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    );
    let pool = pool_wait();
    let made = (|| -> std::io::Result<()> {
        let host_ns = own_ns()?;
        let mut host = Rtnl::open()?;
        loop {
            let (name, bridge) = {
                let mut st = pool
                    .state
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?;
                loop {
                    if let Some(b) = st.bridge.clone()
                        && st.ready.len() < KEEP
                    {
                        break b;
                    }
                    st = pool
                        .wake
                        .wait(st)
                        .map_err(|_| std::io::Error::other("poisoned"))?;
                }
            };
            let ready = make(&host_ns, &mut host, bridge)?;
            let mut st = pool
                .state
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            if st
                .bridge
                .as_ref()
                .is_some_and(|(n, i)| *n == name && *i == bridge)
            {
                st.ready.push(ready);
            }
        }
    })();
    if let Err(e) = made {
        tracing::debug!("veths made ahead are off: {e}");
        if let Ok(mut st) = pool.state.lock() {
            st.off = true;
            st.ready.clear();
        }
    }
}

/// The pool, once `pool()` has stored it (the maker starts inside its initialisation).
fn pool_wait() -> &'static Pool {
    loop {
        if let Some(p) = POOL.get() {
            return p;
        }
        std::thread::yield_now();
    }
}

/// A new namespace (this thread goes into it and back), loopback up, a netlink socket
/// inside, and a veth on `bridge` with its peer `eth0` inside.
fn make(host_ns: &OwnedFd, host: &mut Rtnl, bridge: u32) -> std::io::Result<Ready> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let inside = (|| {
        crate::launch::netns::loopback_up()?;
        Ok::<_, std::io::Error>((own_ns()?, Rtnl::open()?))
    })();
    nix::sched::setns(host_ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let (ns, mut rtnl) = inside?;
    let mut id = [0u8; 6];
    getrandom(&mut id)?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut mac = id;
    mac[0] = 0x02;
    let name = format!("mvp{hex}");
    host.add_veth(&name, "eth0", ns.as_fd(), (bridge, true), mac)?;
    let no_dev = || std::io::Error::from_raw_os_error(libc::ENODEV);
    let host = host.link_index(&name)?.ok_or_else(no_dev)?;
    let eth0 = rtnl.link_index("eth0")?.ok_or_else(no_dev)?;
    rtnl.set_up(eth0)?;
    Ok(Ready { ns, rtnl, host })
}

fn own_ns() -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        "/proc/thread-self/ns/net",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, buf)
}
