//! Fresh network namespaces made ahead of need, for privileged launches.
//!
//! Making a network namespace is the dearest part of a container's start (`setup_net`
//! registers the loopback device and every per-namespace sysctl table: about half a
//! millisecond here, more while the kernel is still tearing down earlier namespaces), and
//! bringing its loopback up takes the RTNL lock. A launch that finds one ready here joins it
//! (`setns`) instead, and a background thread makes the next one meanwhile, off the start's
//! critical path. Each namespace is fresh: made for one container, never handed out twice;
//! its only device is loopback, up.
//!
//! Only for a child outside a user namespace: a namespace made here belongs to the host's
//! user namespace, which a rootless container's user namespace has no privilege over (it
//! could not mount its `/sys`). Where this process may not make network namespaces, the pool
//! switches itself off and launches make their own with `CLONE_NEWNET`, as they would anyway.

use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex};

/// How many namespaces to keep ready: enough for a burst of two starts, few enough that an
/// idle host holds almost nothing (a namespace with only loopback is a few pages).
const READY: usize = 2;

struct Pool {
    /// The process the pool belongs to: a child forked without exec gets its own (its copies
    /// of the namespaces are its parent's too, and its maker thread is gone).
    pid: u32,
    ready: Vec<OwnedFd>,
    /// The maker thread exists (started at the first `take`).
    started: bool,
    /// Making namespaces failed: every `take` is `None`.
    off: bool,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    pid: 0,
    ready: Vec::new(),
    started: false,
    off: false,
});
static WANTED: Condvar = Condvar::new();

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh network namespace with loopback up, if one is ready; the maker is asked for the
/// next. `None`: make one at `clone`.
pub(crate) fn take() -> Option<OwnedFd> {
    let mut pool = pool();
    let pid = std::process::id();
    if pool.pid != pid {
        // First use, or a forked child: nothing made by another process is handed out.
        pool.pid = pid;
        pool.ready.clear();
        pool.started = false;
        pool.off = false;
    }
    if pool.off {
        return None;
    }
    if !pool.started {
        pool.started = true;
        if std::thread::Builder::new()
            .name("molde-netns".into())
            .spawn(maker)
            .is_err()
        {
            pool.off = true;
        }
        return None;
    }
    let got = pool.ready.pop();
    WANTED.notify_one();
    got
}

/// The maker thread: keeps [`READY`] namespaces made. It blocks every signal, and unshares its
/// own network namespace once per namespace made (a thread's network namespace is its own;
/// the rest of the process is untouched).
fn maker() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
    // Each namespace is made from the host's: a new one may copy its maker's settings
    // (`net.core.devconf_inherit_init_net`), never those of the namespace made before.
    let host = match open_own() {
        Ok(fd) => fd,
        Err(errno) => {
            tracing::debug!("network namespace pool off: {errno}");
            pool().off = true;
            return;
        }
    };
    loop {
        {
            let mut pool = pool();
            while pool.ready.len() >= READY {
                pool = WANTED
                    .wait(pool)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        match make(&host) {
            Ok(fd) => pool().ready.push(fd),
            Err(errno) => {
                tracing::debug!("network namespace pool off: {errno}");
                let mut pool = pool();
                pool.off = true;
                pool.ready.clear();
                return;
            }
        }
    }
}

/// A new network namespace, made from `host` (this thread moves into it), loopback up.
fn make(host: &OwnedFd) -> Result<OwnedFd, nix::errno::Errno> {
    nix::sched::setns(host, nix::sched::CloneFlags::CLONE_NEWNET)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    super::child::loopback_up().map_err(nix::errno::Errno::from_raw)?;
    open_own()
}

/// This thread's network namespace.
fn open_own() -> Result<OwnedFd, nix::errno::Errno> {
    nix::fcntl::open(
        "/proc/thread-self/ns/net",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}
