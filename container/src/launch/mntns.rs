//! Mount namespaces made ahead of need, for privileged launches: each holds nothing of the
//! host, only an empty read-only tmpfs as its root, on which the child stacks its rootfs.
//!
//! A child made with `CLONE_NEWNS` gets a copy of every mount of the host, and detaching the
//! old root after `pivot_root` unmounts all of those copies again: the launch's cost grows
//! with the host's mount table (about 1.5-2 microseconds per mount here: with 1000 more mounts
//! a start took 3.8 ms instead of 2.3 ms; a host running other containers, or a desktop with
//! snaps, has hundreds to thousands), and the unmount waits for an RCU grace period. A child
//! that joins a namespace from here (`setns`) copies nothing of the host and unmounts nothing:
//! it stacks its rootfs on the namespace's root and makes it its root (`chroot`); there is no
//! old root to detach, since nothing of the host was ever in the namespace (see
//! [`child`](super::child)). The maker thread makes the next one when a launch that took one
//! ends (its child has exec'd, or it failed), not meanwhile: both would take the kernel's
//! mount lock. Each is handed out once.
//!
//! The maker thread has a home namespace, never handed out: it leaves the host's tree once (a
//! private copy, a new tmpfs pivoted in as its root, the copy of the host's tree detached).
//! Every namespace it hands out is a copy of its home (`unshare`: two mounts, the tmpfs root a
//! new mount of the same tmpfs), after which it goes back home: a copy of the namespace it
//! just handed out would hold that container's mounts. These mounts are private: none
//! propagates to the host, to home or to another namespace, though all share the tmpfs
//! (propagation follows peer groups, not filesystems). The tmpfs is empty, read-only,
//! `nodev,nosuid,noexec`. What the child attaches is made a slave of the host (the binds of
//! host paths are clones of the host's own mounts).
//!
//! Only for a child outside a user namespace of a process in the initial one (a namespace
//! made here belongs to the process's user namespace: a rootless container's has no privilege
//! over it, and in another than the initial one the kernel would not mount the container's
//! proc in it), and where the rootfs can be made as a detached mount before joining (the new
//! mount API; see [`PreparedMount::detach`](molde_layerfs::mount::PreparedMount::detach)).
//! Where this process cannot make such namespaces (no `fsopen`, no `pivot_root` of its root),
//! the pool switches itself off for a while ([`super::ahead`]) and launches copy the host's
//! with `CLONE_NEWNS`, as they would anyway.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

use super::ahead::Ahead;

static POOL: Ahead<Made> = Ahead::new("molde-mntns", super::ahead::RETRY);

/// How many namespaces were handed out so far ([`super::mount_namespaces_made_ahead`]).
pub(crate) fn handed_out() -> u64 {
    POOL.handed_out()
}

/// A namespace made ahead.
#[derive(Debug)]
pub(crate) struct Made {
    pub(crate) ns: OwnedFd,
    /// The unique id of its root mount (the tmpfs copy): what a child joining it must find as
    /// its root. Anything stacked on it, or a namespace other than the one made, shows as
    /// another id.
    pub(crate) root_mount: u64,
}

/// A fresh mount namespace (see the module docs), if one is ready; the caller asks for the
/// next by dropping a [`Refill`] once its child has exec'd. `None`: copy the host's at
/// `clone` (the maker is asked for more, in case a failed launch never asked).
pub(crate) fn take() -> Option<Made> {
    let got = POOL.take(maker);
    if got.is_none() {
        POOL.wake();
    }
    got
}

/// Asks the maker for the next namespace when dropped: held by a launch that took one, until
/// its child has exec'd (or the launch failed), so that the making does not compete with that
/// child's setup for the kernel's mount lock.
#[derive(Debug)]
pub(crate) struct Refill;

impl Drop for Refill {
    fn drop(&mut self) {
        POOL.wake();
    }
}

/// The maker thread: keeps the pool filled. Its mount namespace, root and working directory
/// are its own (`unshare(CLONE_NEWNS)` unshares them from the rest of the process, which
/// stays where it was).
fn maker(pool: &'static Ahead<Made>) {
    // The host's /proc, to name the namespaces made once this thread has left the host's
    // tree (a lookup from a descriptor needs no path in the current namespace).
    let proc_dir = match nix::fcntl::open(
        "/proc",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(errno) => return pool.switch_off(errno),
    };
    let home = match leave_host(&proc_dir) {
        Ok(fd) => fd,
        Err(errno) => return pool.switch_off(errno),
    };
    loop {
        pool.wait_until_wanted();
        let made = copy_of_home(&proc_dir);
        // Home again, whatever happened.
        if let Err(errno) = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNS) {
            return pool.switch_off(errno);
        }
        match made {
            Ok(made) => pool.push(made),
            Err(errno) => return pool.switch_off(errno),
        }
    }
}

/// Move this thread into its home: a private copy of the host's mount namespace with a new,
/// empty, read-only tmpfs pivoted in as its root and the host's tree detached. Its descriptor.
fn leave_host(proc_dir: &OwnedFd) -> Result<OwnedFd, Errno> {
    use nix::mount::MsFlags;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    // Nothing done in this copy propagates back to the host.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    // Only for a process whose root is its namespace's (not one in a chroot): pivot_root
    // below would detach only the tree under this root, and whatever surrounds it would stay
    // in every namespace made. Joining the namespace (here, the copy) lands on its root.
    let own_root = root_mount_id()?;
    nix::sched::setns(
        &own_namespace(proc_dir)?,
        nix::sched::CloneFlags::CLONE_NEWNS,
    )?;
    if root_mount_id()? != own_root {
        return Err(Errno::EXDEV);
    }
    let root = molde_layerfs::mount::detached_tmpfs(c"4k", true)?;
    // Stacked on the current root, made the root with pivot_root(".", "."), the old one
    // detached beneath it.
    // SAFETY: valid NUL-terminated strings; plain flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            root.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c"/".as_ptr(),
            4 as libc::c_uint, // MOVE_MOUNT_F_EMPTY_PATH
        )
    })?;
    nix::unistd::fchdir(&root)?;
    drop(root);
    // SAFETY: valid NUL-terminated paths.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")?;
    own_namespace(proc_dir)
}

/// A copy of home (its tmpfs root, nothing else), which this thread moves into; its
/// descriptor. The copies' roots are mounts of one tmpfs: each namespace stacks its
/// container's rootfs on its own.
fn copy_of_home(proc_dir: &OwnedFd) -> Result<Made, Errno> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    Ok(Made {
        ns: own_namespace(proc_dir)?,
        root_mount: root_mount_id()?,
    })
}

/// The unique id of the mount of this thread's root.
fn root_mount_id() -> Result<u64, Errno> {
    super::sys::root_mount_id().map_err(Errno::from_raw)
}

/// This thread's mount namespace.
fn own_namespace(proc_dir: &OwnedFd) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        proc_dir,
        "thread-self/ns/mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}
