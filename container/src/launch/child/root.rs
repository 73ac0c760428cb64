//! The container's root filesystem: the rootfs mounted (in a copy of the host's mount
//! namespace, or detached and attached in one made ahead), the host trees further mounts need
//! taken while the host's tree is reachable, `/proc` and `/sys`, the switch of root, then
//! (after `/dev` and the further mounts) a read-only root, hostname, loopback and rlimits.

use super::{DEVICES, ExtraKind, RootSetup, dev, mounts};
use crate::launch::error::Stage;
use crate::launch::failure::{fail, step};
use crate::launch::sys;

/// Set up the whole root (see the module docs); the working directory ends at `/`.
pub(super) fn setup_root(err_w: i32, r: &mut RootSetup) {
    let p = err_w;
    if r.userns >= 0 {
        super::join::join_user_namespace(p, r);
    } else if r.netns >= 0 {
        // SAFETY: plain integer arguments.
        step!(
            p,
            Stage::JoinNamespace,
            0,
            sys::check(unsafe { libc::syscall(libc::SYS_setns, r.netns, libc::CLONE_NEWNET) })
        );
    }
    if r.mntns >= 0 {
        join_mount_namespace(p, r);
    } else {
        mount_root_in_copy(p, r);
    }
    host_trees(p, r);
    if r.mntns >= 0 {
        attach_root(p, r);
    } else {
        step!(p, Stage::PivotRoot, 0, sys::chdir(&r.root));
    }
    proc_and_sys(p, r);
    switch_root(p, r);
    dev::setup_dev(p, r);
    mounts::extra(p, r);
    mounts::mask_and_read_only(p);
    settings(p, r);
}

/// Host-side trees, taken while the host's tree is still reachable.
fn host_trees(p: i32, r: &mut RootSetup) {
    for (i, m) in r.extra.iter().enumerate() {
        if let ExtraKind::Bind { source, read_only } = &m.kind {
            let fd = step!(p, Stage::Mount, i, sys::open_tree_clone(source)) as i32;
            r.extra_trees[i] = fd;
            if r.mntns >= 0 {
                // Cloned from the host's tree itself, not from a slave copy of it.
                step!(p, Stage::Mount, i, sys::make_slave(fd));
            }
            if *read_only {
                step!(p, Stage::Mount, i, sys::make_read_only(fd, c"", true));
            }
        }
    }
    if !r.mknod_devices {
        for (i, dev) in DEVICES.iter().enumerate() {
            r.device_trees[i] = step!(p, Stage::Dev, 0, sys::open_tree_clone(dev)) as i32;
            if r.mntns >= 0 {
                step!(p, Stage::Dev, 0, sys::make_slave(r.device_trees[i]));
            }
        }
    }
    if r.sys_fallback {
        let fd = step!(p, Stage::Sys, 0, sys::open_tree_clone(c"/sys")) as i32;
        step!(p, Stage::Sys, 0, sys::make_read_only(fd, c"", true));
        r.sys_tree = fd;
    }
}

/// `/proc` and `/sys` (read-only) in the new root, the working directory.
fn proc_and_sys(p: i32, r: &RootSetup) {
    let err_w = p;
    // /proc and /sys before pivot_root, relative to the new root: in a user namespace the
    // kernel mounts a new proc or sysfs only where one is already fully visible in the mount
    // namespace (`mount_too_revealing`), which the host's stops being once detached.
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // The image's `proc` and `sys` must be real directories: a mount follows a symlink (`proc
    // -> /x` would resolve against the host's root here, before pivot_root).
    step!(p, Stage::Proc, 0, sys::mkdir_exist_ok(c"proc", 0o555));
    step!(p, Stage::Proc, 0, sys::real_dir(c"proc"));
    step!(
        p,
        Stage::Proc,
        0,
        sys::mount(
            Some(c"proc"),
            c"proc",
            Some(c"proc"),
            nosuid_nodev_noexec,
            None
        )
    );
    step!(p, Stage::Sys, 0, sys::mkdir_exist_ok(c"sys", 0o555));
    step!(p, Stage::Sys, 0, sys::real_dir(c"sys"));
    let sysfs = sys::mount(
        Some(c"sysfs"),
        c"sys",
        Some(c"sysfs"),
        nosuid_nodev_noexec | libc::MS_RDONLY,
        None,
    );
    if let Err(errno) = sysfs {
        // In a user namespace without its own network namespace sysfs is refused: the
        // host's, read-only, taken before.
        if r.sys_tree < 0 {
            fail(err_w, Stage::Sys, errno, 0);
        }
        step!(p, Stage::Sys, 0, sys::move_mount(r.sys_tree, c"sys"));
    }
}

/// In a copy of the host's namespace, `pivot_root` and the old root detached; `cd /`.
fn switch_root(p: i32, r: &RootSetup) {
    if r.mntns < 0 {
        // pivot_root(".", "."): the old root (the copy of the host's tree) ends up stacked
        // under the new one, detached at once.
        // SAFETY: valid NUL-terminated paths.
        step!(
            p,
            Stage::PivotRoot,
            0,
            sys::check(unsafe {
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr())
            })
        );
        // SAFETY: a valid NUL-terminated path.
        step!(
            p,
            Stage::PivotRoot,
            0,
            sys::check(unsafe {
                libc::syscall(libc::SYS_umount2, c".".as_ptr(), libc::MNT_DETACH)
            })
        );
    }
    step!(p, Stage::PivotRoot, 0, sys::chdir(c"/"));
}

/// A read-only root, the hostname, loopback up, the resource limits.
fn settings(p: i32, r: &RootSetup) {
    if r.readonly_rootfs {
        step!(
            p,
            Stage::ReadonlyRoot,
            0,
            sys::make_read_only(libc::AT_FDCWD, c"/", false)
        );
    }
    if let Some(name) = &r.hostname {
        let bytes = name.to_bytes();
        // SAFETY: `bytes` is valid for reads of its length.
        step!(
            p,
            Stage::Hostname,
            0,
            sys::check(unsafe {
                libc::syscall(libc::SYS_sethostname, bytes.as_ptr(), bytes.len())
            })
        );
    }
    if r.loopback {
        step!(
            p,
            Stage::Loopback,
            0,
            crate::launch::loopback::loopback_up()
        );
    }
    for (i, (resource, limit)) in r.rlimits.iter().enumerate() {
        // SAFETY: `limit` is a valid rlimit living across the call.
        step!(
            p,
            Stage::Rlimit,
            i,
            sys::check(unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    *resource,
                    limit as *const libc::rlimit,
                    std::ptr::null_mut::<libc::rlimit>(),
                )
            })
        );
    }
}

/// The rootfs in the copy of the host's mount namespace the child was made in: `/` made a
/// recursive slave first (no mount of the container propagates to the host), the rootfs
/// mounted on the root directory.
fn mount_root_in_copy(p: i32, r: &mut RootSetup) {
    step!(
        p,
        Stage::Propagation,
        0,
        sys::mount(None, c"/", None, libc::MS_SLAVE | libc::MS_REC, None)
    );
    if let Some(dirs) = &r.layer_tmpfs {
        step!(
            p,
            Stage::RootfsMount,
            0,
            sys::mount(
                Some(c"tmpfs"),
                &r.root,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(c"mode=0700")
            )
        );
        for dir in dirs {
            step!(p, Stage::RootfsMount, 0, sys::mkdir_exist_ok(dir, 0o700));
        }
    }
    if r.rootfs.is_empty() {
        step!(
            p,
            Stage::RootBind,
            0,
            sys::mount(
                Some(&r.root),
                &r.root,
                None,
                libc::MS_BIND | libc::MS_REC,
                None
            )
        );
    }
    for (i, m) in r.rootfs.iter().enumerate() {
        step!(
            p,
            Stage::RootfsMount,
            i,
            m.perform().map_err(|(_, errno)| errno as i32)
        );
    }
    // No device node of the image can be opened: without a device cgroup, a node an image
    // ships (a layer unpacked as root makes them) would reach the host's device. Only the
    // container's own /dev (a tmpfs mounted later) allows them.
    step!(
        p,
        Stage::RootfsMount,
        0,
        sys::set_mount_attr(libc::AT_FDCWD, &r.root, sys::MOUNT_ATTR_NODEV, true)
    );
}

/// The rootfs for a mount namespace made ahead: made as detached mounts here, while their
/// sources (the host's paths) can be reached, and attached once the child has joined it. Each
/// is made a recursive slave: a clone of a shared host mount would otherwise be its peer
/// (mounts in the container would appear on the host). No device node of the image can be
/// opened (see `mount_root_in_copy`).
fn join_mount_namespace(p: i32, r: &mut RootSetup) {
    if r.rootfs.is_empty() {
        r.rootfs_trees[0] = step!(p, Stage::RootBind, 0, sys::open_tree_clone(&r.root)) as i32;
    }
    for (i, m) in r.rootfs.iter().enumerate() {
        r.rootfs_trees[i] = step!(
            p,
            Stage::RootfsMount,
            i,
            m.detach().map_err(|(_, errno)| errno as i32)
        );
    }
    let stage = if r.rootfs.is_empty() {
        Stage::RootBind
    } else {
        Stage::RootfsMount
    };
    for (i, &fd) in r.rootfs_trees.iter().enumerate() {
        step!(p, Stage::Propagation, i, sys::make_slave(fd));
        step!(
            p,
            stage,
            i,
            sys::set_mount_attr(fd, c"", sys::MOUNT_ATTR_NODEV, true)
        );
    }
}

/// Join the mount namespace made ahead (nothing of the host is needed any more), attach the
/// rootfs on its root and make it this process's root and working directory. The
/// namespace's own root (a read-only empty tmpfs) stays beneath, shadowed: joining the
/// namespace (`setns`, as `nsenter --mount` does) lands on the topmost mount, the rootfs, and
/// no path from the rootfs leads down to it. No `pivot_root`, so no old root to detach, and
/// no wait for the RCU grace period an unmount takes.
fn attach_root(p: i32, r: &RootSetup) {
    // SAFETY: plain integer arguments.
    step!(
        p,
        Stage::JoinNamespace,
        1,
        sys::check(unsafe { libc::syscall(libc::SYS_setns, r.mntns, libc::CLONE_NEWNS) })
    );
    // The root it landed on is the namespace's empty tmpfs as made, with nothing stacked on
    // it: what the rootfs is about to cover, and all that is beneath.
    if step!(p, Stage::JoinNamespace, 1, sys::root_mount_id()) != r.mntns_root {
        fail(p, Stage::JoinNamespace, libc::EXDEV, 1);
    }
    let stage = if r.rootfs.is_empty() {
        Stage::RootBind
    } else {
        Stage::RootfsMount
    };
    let mut top = -1;
    for (i, &fd) in r.rootfs_trees.iter().enumerate() {
        step!(p, stage, i, sys::move_mount(fd, c"/"));
        if top >= 0 {
            sys::close(top);
        }
        top = fd;
    }
    // SAFETY: plain integer argument.
    step!(
        p,
        stage,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_fchdir, top) })
    );
    sys::close(top);
    // SAFETY: a valid NUL-terminated path.
    step!(
        p,
        Stage::PivotRoot,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_chroot, c".".as_ptr()) })
    );
}
