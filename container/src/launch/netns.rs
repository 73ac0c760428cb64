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
//! switches itself off for a while ([`super::ahead`]) and launches make their own with
//! `CLONE_NEWNET`, as they would anyway.

use std::os::fd::OwnedFd;

use super::ahead::Ahead;

/// The namespaces made ahead (a namespace with only loopback is a few pages).
static POOL: Ahead<OwnedFd> = Ahead::new("molde-netns", super::ahead::RETRY);

/// A fresh network namespace with loopback up, if one is ready; the maker is asked for the
/// next. `None`: make one at `clone`.
pub(crate) fn take() -> Option<OwnedFd> {
    let got = POOL.take(maker);
    POOL.wake();
    got
}

/// The maker thread: keeps the pool filled. It unshares its own network namespace once per
/// namespace made (a thread's network namespace is its own; the rest of the process is
/// untouched).
fn maker(pool: &'static Ahead<OwnedFd>) {
    // Each namespace is made from the host's: a new one may copy its maker's settings
    // (`net.core.devconf_inherit_init_net`), never those of the namespace made before.
    let host = match open_own() {
        Ok(fd) => fd,
        Err(errno) => return pool.switch_off(errno),
    };
    loop {
        pool.wait_until_wanted();
        match make(&host) {
            Ok(fd) => pool.push(fd),
            Err(errno) => return pool.switch_off(errno),
        }
    }
}

/// A new network namespace, made from `host` (this thread moves into it), loopback up.
fn make(host: &OwnedFd) -> Result<OwnedFd, nix::errno::Errno> {
    nix::sched::setns(host, nix::sched::CloneFlags::CLONE_NEWNET)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    super::loopback::loopback_up().map_err(nix::errno::Errno::from_raw)?;
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

/// Bring up the loopback interface of the calling thread's network namespace.
pub(crate) fn loopback_up() -> std::io::Result<()> {
    super::loopback::loopback_up()
        .map(drop)
        .map_err(std::io::Error::from_raw_os_error)
}

/// A fresh network namespace with loopback up, for a launch that configures it before
/// joining it (a container on bridge networks): one made ahead if ready, else one made now
/// on a short-lived thread (the caller's threads stay in their namespace).
pub(crate) fn fresh() -> std::io::Result<OwnedFd> {
    if let Some(fd) = take() {
        return Ok(fd);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            super::loopback::loopback_up().map_err(nix::errno::Errno::from_raw)?;
            open_own()
        })
        .join()
        .unwrap_or(Err(nix::errno::Errno::EIO))
    })
    .map_err(std::io::Error::from)
}
