//! Bridge networks for rootless containers, as podman's rootless network namespace does.
//!
//! An unprivileged process cannot make a bridge in the host's network namespace, nor join a
//! network namespace at all (`setns` wants `CAP_SYS_ADMIN` in the caller's own user
//! namespace). What it may do: own a user namespace, and hold every capability there. So a
//! store's rootless networks live in one user namespace of their own (`U_net`, with the id
//! maps the store's containers get, [`IdMaps::for_current_process`]) and one network
//! namespace in it (`N`), which holds the networks' bridges. A small *holder* process keeps
//! both alive: `sleep infinity`, started in them (`unshare` before its `exec`), in a session
//! of its own; its pid and start time are in `<store>/molde/networks/rootless-netns`. It is
//! started when a container on a network starts and none lives, and stopped once no
//! container of the store holds an address on any network (its namespaces, the bridges and
//! every veth in them go with it); [`super::sweep`] stops one that a killed process left.
//!
//! Each start of a container on networks gets a network namespace of its own (`C`, made in
//! `U_net`), with a veth per network (the host end a port of the bridge in `N`, the peer
//! `eth<n>` in `C`): made by a forked helper that joins `U_net` and `N` (a forked child is
//! single-threaded, as `setns` into a user namespace needs). The container then joins `U_net`
//! and `C` instead of making its own user and network namespaces (see
//! [`Spec::join_userns`](crate::launch::Spec::join_userns)), and its mount, pid, UTS, IPC and
//! cgroup namespaces are made inside `U_net`. pasta, attached to `C`, gives it the way out and
//! its published ports (see [`super::pasta`]); its default route is pasta's, the network's
//! subnet is on `eth0`.
//!
//! The consequence, as with podman: every rootless container of a store on a network shares
//! one user namespace, and so one id map.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use molde_image::Store;
use molde_layerfs::idmap::IdMaps;
use nix::sched::CloneFlags;

use super::attach::{Inside, configure, host_end, mac_of};
use super::error::io_err;
use super::netlink::Rtnl;
use super::{Network, NetworkError, networks_dir};

/// The file naming the holder: `<pid> <start time>`.
const HOLDER_FILE: &str = "rootless-netns";

/// The holder of a store's rootless network namespace: its user and network namespaces.
#[derive(Debug)]
pub(crate) struct Holder {
    /// `U_net`.
    pub(crate) user: OwnedFd,
    /// `N`, where the bridges are.
    pub(crate) net: OwnedFd,
}

fn holder_file(store: &Store) -> PathBuf {
    networks_dir(store).join(HOLDER_FILE)
}

/// The live holder `file` names, if any.
fn recorded(file: &Path) -> Option<u32> {
    let text = fs::read_to_string(file).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let start: u64 = words.next()?.parse().ok()?;
    crate::record::alive(Some(pid), Some(start)).then_some(pid)
}

/// The holder of `store`'s rootless network namespace, started if none lives. The caller
/// holds the networks' lock.
pub(crate) fn holder(store: &Store) -> Result<Holder, NetworkError> {
    let file = holder_file(store);
    if let Some(pid) = recorded(&file) {
        if let Ok(h) = open(pid) {
            return Ok(h);
        }
    }
    let maps = IdMaps::for_current_process().ok_or(NetworkError::NeedsRoot)?;
    let pid = start(maps)?;
    let opened = (|| {
        let (start, _) = crate::record::pid_info(pid)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let tmp = file.with_extension("tmp");
        fs::write(&tmp, format!("{pid} {start}\n"))?;
        fs::rename(&tmp, &file)?;
        open(pid)
    })();
    opened.map_err(|e| {
        kill(pid);
        let _ = fs::remove_file(&file);
        io_err("starting the rootless network namespace's holder", &file)(e)
    })
}

/// The namespaces of holder `pid`.
fn open(pid: u32) -> io::Result<Holder> {
    let ns = |kind: &str| -> io::Result<OwnedFd> {
        Ok(fs::File::open(format!("/proc/{pid}/ns/{kind}"))?.into())
    };
    Ok(Holder {
        user: ns("user")?,
        net: ns("net")?,
    })
}

/// Start a holder in a new user namespace (mapped with `maps`) and network namespace.
fn start(maps: &IdMaps) -> Result<u32, NetworkError> {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| NetworkError::Io {
            op: "finding the holder of the rootless network namespace",
            path: "/usr/bin/sleep".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        })?;
    let mut cmd = Command::new(sleep);
    cmd.arg("infinity")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid and unshare are plain system calls, safe between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io_err(
        "starting the rootless network namespace's holder",
        sleep,
    ))?;
    let pid = child.id();
    // The holder is this process's child, and may be stopped by another process: a thread
    // waits for it, so that it never stays a zombie here (a `kill` from this process reaps it
    // first; the thread's wait then fails, harmlessly).
    let mut child = child;
    let _ = std::thread::Builder::new()
        .name("molde-netns-holder".into())
        .spawn(move || child.wait());
    if let Err(e) = maps.write_for(pid) {
        kill(pid);
        return Err(NetworkError::Io {
            op: "writing the id maps of the rootless network namespace's holder",
            path: format!("/proc/{pid}/uid_map").into(),
            source: io::Error::other(e),
        });
    }
    Ok(pid)
}

/// End holder `pid` and reap it (it may be this process's child).
fn kill(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Stop `store`'s holder, if one lives: its namespaces, bridges and veths go with it. The
/// caller holds the networks' lock.
pub(crate) fn stop(store: &Store) {
    let file = holder_file(store);
    if let Some(pid) = recorded(&file) {
        kill(pid);
    }
    let _ = fs::remove_file(&file);
}

/// Stop `store`'s holder if no container holds an address on any of its networks. The
/// caller holds the networks' lock.
pub(crate) fn stop_if_unused(store: &Store) -> Result<(), NetworkError> {
    if !holder_file(store).exists() {
        return Ok(());
    }
    for net in Network::list_unlocked(store)? {
        if !super::allocation::allocations(&networks_dir(store).join(&net.name))?.is_empty() {
            return Ok(());
        }
    }
    stop(store);
    Ok(())
}

/// Delete `net`'s bridge in the rootless network namespace, if its holder lives. The caller
/// holds the networks' lock.
pub(crate) fn delete_bridge(store: &Store, net: &Network) -> Result<(), NetworkError> {
    let Some(pid) = recorded(&holder_file(store)) else {
        return Ok(());
    };
    let holder = open(pid).map_err(io_err("opening the namespaces of", format!("/proc/{pid}")))?;
    in_holder(&holder, || {
        let mut rtnl = Rtnl::open()?;
        if let Some(index) = rtnl.link_index(&net.bridge)? {
            rtnl.delete_link(index)?;
        }
        Ok(None)
    })
    .map_err(super::error::nl_err("deleting bridge", &net.bridge))?;
    Ok(())
}

/// A network namespace in `holder`'s user namespace with `owner`'s veths on `networks`
/// (bridges in the holder's network namespace, made if missing), each end with its address;
/// no default route (pasta gives it).
pub(crate) fn plumb(
    holder: &Holder,
    owner: &str,
    networks: &[(Network, Ipv4Addr)],
) -> Result<OwnedFd, NetworkError> {
    let inside = Inside::all(networks, false);
    let made = in_holder(holder, || {
        let mut outer = Rtnl::open()?;
        let mut bridges = Vec::with_capacity(networks.len());
        for (net, _) in networks {
            bridges.push(bridge(&mut outer, net)?);
        }
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
        crate::launch::netns::loopback_up()?;
        let own: OwnedFd = fs::File::open("/proc/thread-self/ns/net")?.into();
        for (n, ((_, ip), bridge)) in networks.iter().zip(&bridges).enumerate() {
            let host = host_end(owner, n);
            let peer = format!("eth{n}");
            let add =
                |r: &mut Rtnl| r.add_veth(&host, &peer, own.as_fd(), (*bridge, true), mac_of(*ip));
            match add(&mut outer) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if let Some(index) = outer.link_index(&host)? {
                        outer.delete_link(index)?;
                    }
                    add(&mut outer)?;
                }
                other => other?,
            }
        }
        configure(&mut Rtnl::open()?, &inside)?;
        Ok(Some(own))
    })
    .map_err(super::error::nl_err(
        "plumbing the rootless network namespace of",
        owner,
    ))?;
    made.ok_or_else(|| NetworkError::Netlink {
        op: "plumbing the rootless network namespace of",
        name: owner.to_owned(),
        source: io::Error::from_raw_os_error(libc::EBADMSG),
    })
}

/// `net`'s bridge in the calling thread's network namespace, made (with the gateway's
/// address, up) if missing; its index.
fn bridge(rtnl: &mut Rtnl, net: &Network) -> io::Result<u32> {
    if let Some(index) = rtnl.link_index(&net.bridge)? {
        return Ok(index);
    }
    rtnl.add_bridge(&net.bridge, mac_of(net.gateway))?;
    let index = rtnl
        .link_index(&net.bridge)?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
    rtnl.add_address(index, net.gateway, net.subnet.prefix_len())?;
    rtnl.set_up(index)?;
    Ok(index)
}

/// Run `work` in a forked child that joined `holder`'s user namespace (as its root, with
/// every capability there) and network namespace; the descriptor it returns comes back
/// through a socket (`SCM_RIGHTS`), its error as an errno. The child of a fork in a
/// multi-threaded process is a copy of one thread: `work` takes no lock another thread may
/// hold (glibc's allocator is made safe across `fork`; netlink sockets and the messages of
/// `netlink-packet-route` take none), as `molde_layerfs::userns` does.
fn in_holder(
    holder: &Holder,
    work: impl FnOnce() -> io::Result<Option<OwnedFd>>,
) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (parent, child) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: the child joins namespaces and runs `work` (see above), reports, and `_exit`s
    // without running the parent's destructors.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(parent);
            let result = (|| {
                nix::sched::setns(holder.user.as_fd(), CloneFlags::CLONE_NEWUSER)?;
                nix::sched::setns(holder.net.as_fd(), CloneFlags::CLONE_NEWNET)?;
                work()
            })();
            send(&child, result);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child: pid } => {
            drop(child);
            let got = receive(&parent);
            let _ = nix::sys::wait::waitpid(pid, None);
            got
        }
    }
}

/// The child's report: its errno (0: done), with the descriptor it made.
fn send(socket: &OwnedFd, result: io::Result<Option<OwnedFd>>) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (errno, fd) = match &result {
        Ok(fd) => (0i32, fd.as_ref().map(|f| f.as_raw_fd())),
        Err(e) => (e.raw_os_error().unwrap_or(libc::EIO), None),
    };
    let bytes = errno.to_ne_bytes();
    let iov = [io::IoSlice::new(&bytes)];
    let fds: Vec<i32> = fd.into_iter().collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let _ = sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None);
}

/// The parent's side of [`send`].
fn receive(socket: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut bytes = [0u8; 4];
    let mut iov = [io::IoSliceMut::new(&mut bytes)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: a descriptor just received, which nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    if msg.bytes != 4 {
        return Err(io::Error::from_raw_os_error(libc::ECHILD));
    }
    match i32::from_ne_bytes(bytes) {
        0 => Ok(fd),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}
