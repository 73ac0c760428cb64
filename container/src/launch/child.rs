//! The code that runs in the child after `clone`, and the data prepared for it.
//!
//! Nothing here allocates, takes a lock or touches std's I/O: the host may be multi-threaded
//! and the child is a copy of one thread of it. Every string, pointer array and descriptor slot
//! is made before `clone` ([`Prepared`]); a failure is written to the error channel as
//! (stage, errno, index) and the child `_exit`s.

use std::ffi::{CStr, CString};

use molde_layerfs::mount::PreparedMount;

use super::error::Stage;
use super::init;
use super::sys::{self, Sys};

/// A report on the error channel: the stage, the errno and an index (which mount, which exec
/// candidate) the parent uses to name the path.
pub(crate) const REPORT_LEN: usize = 12;

/// A device node bind-mounted from the host's /dev.
pub(crate) const DEVICES: [&CStr; 6] = [
    c"/dev/null",
    c"/dev/zero",
    c"/dev/full",
    c"/dev/random",
    c"/dev/urandom",
    c"/dev/tty",
];

/// The numbers of [`DEVICES`] (fixed by the kernel's device list), for `mknod`.
pub(crate) const DEVICE_NUMBERS: [libc::dev_t; 6] = [
    libc::makedev(1, 3),
    libc::makedev(1, 5),
    libc::makedev(1, 7),
    libc::makedev(1, 8),
    libc::makedev(1, 9),
    libc::makedev(5, 0),
];

/// Docker's masked paths.
pub(crate) const MASKED: [&CStr; 10] = [
    c"/proc/acpi",
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
    c"/proc/scsi",
    c"/sys/firmware",
    c"/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub(crate) const READ_ONLY: [&CStr; 5] = [
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];

/// A further mount, prepared.
#[derive(Debug)]
pub(crate) struct ExtraMount {
    /// The directories to create on the way to the target (each prefix), in the new root.
    pub dirs: Vec<CString>,
    /// The target inside the container.
    pub target: CString,
    /// Whether the target is a file (a bind of a file).
    pub is_file: bool,
    pub kind: ExtraKind,
}

#[derive(Debug)]
pub(crate) enum ExtraKind {
    Bind { source: CString, read_only: bool },
    Tmpfs { data: CString },
}

/// The root filesystem part of a launch (absent for an exec into a running container).
#[derive(Debug)]
pub(crate) struct RootSetup {
    pub root: CString,
    pub rootfs: Vec<PreparedMount>,
    pub readonly_rootfs: bool,
    pub extra: Vec<ExtraMount>,
    /// Detached trees (open_tree fds) of the extra binds, filled in by the child.
    pub extra_trees: Vec<i32>,
    /// Detached trees of the host's device nodes, filled in by the child (unless
    /// `mknod_devices`).
    pub device_trees: [i32; DEVICES.len()],
    /// Make the device nodes with `mknod` (a child outside a user namespace holds
    /// `CAP_MKNOD`) rather than bind-mounting the host's: no mounts to make and tear down.
    pub mknod_devices: bool,
    /// Pre-open the host's /sys as a fallback (in a user namespace sysfs may be refused).
    pub sys_fallback: bool,
    pub sys_tree: i32,
    pub hostname: Option<CString>,
    /// A network namespace made ahead ([`super::netns`]) to join, or -1 (the child was made
    /// in a new one, or shares the host's).
    pub netns: i32,
    /// Bring loopback up (a network namespace of the child's own making).
    pub loopback: bool,
    /// A mount namespace made ahead ([`super::mntns`]) to join, or -1 (the child was made in
    /// a copy of the host's). Joining it, the rootfs mounts are made detached before (in
    /// `rootfs_trees`) and attached on the namespace's root.
    pub mntns: i32,
    /// The unique id of the root mount of `mntns`, as made: checked once joined.
    pub mntns_root: u64,
    /// The detached rootfs mounts (`rootfs`, or the bind of `root`), filled in by the child.
    pub rootfs_trees: Vec<i32>,
    /// The resource limits asked for; `rlimits` is what may be set of them, settled on the
    /// cloning thread ([`super::thread_caps::fit`]).
    pub wanted_rlimits: Vec<super::spec::Rlimit>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
}

/// Entering a running container (exec).
#[derive(Debug)]
pub(crate) struct Enter {
    pub pidfd: i32,
    pub ns_flags: libc::c_int,
    pub root_fd: i32,
    pub cgroup_procs: Vec<i32>,
}

/// Everything the child needs, prepared before `clone`.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub err_w: i32,
    pub sync_r: i32,
    pub sync_w: i32,
    pub root: Option<RootSetup>,
    pub enter: Option<Enter>,
    /// Source fds for stdin, stdout, stderr (`-1`: inherit).
    pub stdio: [i32; 3],
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Whether `setgroups` is denied in the user namespace (skip it).
    pub setgroups_denied: bool,
    /// The capabilities (bits) asked for, and whether the child is in a new user namespace.
    pub wanted_caps: u64,
    pub new_userns: bool,
    /// The capabilities (bits) kept in the bounding set, and for uid 0 also permitted and
    /// effective: of `wanted_caps`, those the cloning thread can pass on (settled on it by
    /// [`super::thread_caps::fit`]); the last capability of the kernel.
    pub caps: u64,
    pub last_cap: u32,
    /// The ambient capabilities (bits, a subset of `caps`): also inheritable, permitted and
    /// effective, whatever the uid. A non-root process holds these and no others.
    pub ambient: u64,
    pub no_new_privs: bool,
    /// The seccomp filters to install, in order (none: unconfined).
    pub seccomp: Option<crate::seccomp::Programs>,
    pub init: bool,
    /// Send a first report (stage 0), then wait for the go-ahead: the report's credentials
    /// tell the parent the child's host pid (the launcher thread that made it may still be
    /// suspended), with which it writes the id maps and cgroup membership. Without a
    /// handshake the child goes on at once.
    pub handshake: bool,
    /// The child shares the host's memory until its `execve` (`CLONE_VM | CLONE_VFORK`): it
    /// must leave every process-wide property of that memory alone (dumpability).
    pub shares_memory: bool,
    pub candidates: Vec<CString>,
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
    /// Owners of the strings `argv` and `envp` point into.
    pub _strings: Vec<CString>,
}

/// Report `stage`/`errno`/`index` to the parent and exit.
pub(crate) fn fail(err_w: i32, stage: Stage, errno: i32, index: u32) -> ! {
    let mut buf = [0u8; REPORT_LEN];
    buf[0..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&errno.to_ne_bytes());
    buf[8..12].copy_from_slice(&index.to_ne_bytes());
    let _ = sys::write(err_w, &buf);
    sys::exit(127)
}

macro_rules! step {
    ($p:expr, $stage:expr, $index:expr, $call:expr) => {
        match $call {
            Ok(v) => v,
            Err(errno) => fail($p.err_w(), $stage, errno, $index as u32),
        }
    };
}

/// The child's whole life: set up, then exec (or become init). Never returns.
pub(crate) fn main(p: &mut Prepared) -> ! {
    sys::close(p.sync_w);
    // The launcher thread blocks every signal, so this child starts with all blocked: no host
    // handler can run here (the child may share the host's memory). Dispositions go back to
    // their defaults now; the mask is emptied right before `execve`.
    step!(p, Stage::Signals, 0, sys::default_signal_dispositions());
    step!(
        p,
        Stage::DeathSignal,
        0,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
    );
    if p.handshake {
        let hello = [0u8; REPORT_LEN];
        step!(p, Stage::Sync, 0, sys::write(p.err_w, &hello));
        // The parent writes one byte once the id maps and cgroups are in place; EOF means it
        // died or gave up.
        let mut go = [0u8; 1];
        match sys::read(p.sync_r, &mut go) {
            Ok(1) => {}
            Ok(_) => fail(p.err_w, Stage::Sync, libc::EPIPE, 0),
            Err(e) => fail(p.err_w, Stage::Sync, e, 0),
        }
    }
    sys::close(p.sync_r);
    // Not dumpable (until the program's exec makes it so again): container processes cannot
    // open this copy of the host binary, its memory or its descriptors through
    // /proc/<pid>/{exe,mem,fd} (the CVE-2019-5736 shape), nor ptrace it. After the go-ahead:
    // a non-dumpable process's /proc files belong to root, and an unprivileged parent could
    // not write the id maps. Dumpability belongs to the memory: a child sharing the host's
    // would make the host non-dumpable. Such a child is the first and only process of its new
    // pid namespace until its exec, so no container process can reach it meanwhile. (Its
    // change of ids below still makes the shared memory non-dumpable, as the kernel does for
    // any change of ids; the parent restores the host's setting when `clone` returns.)
    if !p.shares_memory {
        step!(
            p,
            Stage::DeathSignal,
            0,
            sys::prctl(libc::PR_SET_DUMPABLE, 0, 0)
        );
    }

    if let Some(enter) = &p.enter {
        enter_container(p.err_w, enter);
    }
    if let Some(root) = &mut p.root {
        setup_root(p.err_w, root);
    }
    credentials_and_exec(p)
}

/// Join a running container: cgroups, namespaces (by pidfd), its root; then fork so that the
/// process enters its pid namespace (the fork's child, made with `CLONE_PARENT`, is the
/// caller's child). The intermediate reports the new pid and exits.
fn enter_container(err_w: i32, e: &Enter) {
    for &fd in &e.cgroup_procs {
        step!(err_w, Stage::Cgroup, 0, sys::write(fd, b"0"));
    }
    // SAFETY: plain integer arguments.
    step!(
        err_w,
        Stage::Setns,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setns, e.pidfd, e.ns_flags) })
    );
    // SAFETY: plain integer argument.
    step!(
        err_w,
        Stage::Setns,
        1,
        sys::check(unsafe { libc::syscall(libc::SYS_fchdir, e.root_fd) })
    );
    // SAFETY: a valid NUL-terminated path.
    step!(
        err_w,
        Stage::Setns,
        1,
        sys::check(unsafe { libc::syscall(libc::SYS_chroot, c".".as_ptr()) })
    );
    // SAFETY: fork-like clone (no new stack): the child continues here with a copy.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        fail(err_w, Stage::InitFork, sys::errno(), 0);
    }
    if pid > 0 {
        // Tell the caller the pid (stage 0 = not an error), then leave.
        let mut buf = [0u8; REPORT_LEN];
        buf[4..8].copy_from_slice(&(pid as i32).to_ne_bytes());
        let _ = sys::write(err_w, &buf);
        sys::exit(0);
    }
    // SAFETY: plain integer arguments.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
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

fn setup_root(err_w: i32, r: &mut RootSetup) {
    let p = err_w;
    if r.netns >= 0 {
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
    // Host-side trees, taken while the host's tree is still reachable.
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

    if r.mntns >= 0 {
        attach_root(p, r);
    } else {
        step!(p, Stage::PivotRoot, 0, sys::chdir(&r.root));
    }
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

    setup_dev(p, r);

    for (i, m) in r.extra.iter().enumerate() {
        for dir in &m.dirs {
            step!(p, Stage::Mount, i, sys::mkdir_exist_ok(dir, 0o755));
        }
        if m.is_file {
            step!(p, Stage::Mount, i, sys::touch(&m.target, 0o644));
        } else {
            step!(p, Stage::Mount, i, sys::mkdir_exist_ok(&m.target, 0o755));
        }
        match &m.kind {
            ExtraKind::Bind { .. } => {
                step!(
                    p,
                    Stage::Mount,
                    i,
                    sys::move_mount(r.extra_trees[i], &m.target)
                );
                sys::close(r.extra_trees[i]);
            }
            ExtraKind::Tmpfs { data } => {
                step!(
                    p,
                    Stage::Mount,
                    i,
                    sys::mount(
                        Some(c"tmpfs"),
                        &m.target,
                        Some(c"tmpfs"),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        Some(data)
                    )
                );
            }
        }
    }

    for (i, path) in MASKED.iter().enumerate() {
        // Looked at first: a bind of /dev/null onto a directory fails only after the kernel
        // has copied the mount, and undoing the copy costs an RCU grace period.
        let mask = match sys::file_type(path) {
            Err(libc::ENOENT) => continue,
            Err(e) => fail(err_w, Stage::MaskPaths, e, i as u32),
            Ok(libc::S_IFDIR) => sys::mount(
                Some(c"tmpfs"),
                path,
                Some(c"tmpfs"),
                libc::MS_RDONLY | nosuid_nodev_noexec,
                Some(c"size=0"),
            ),
            Ok(_) => sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
        };
        match mask {
            Ok(_) | Err(libc::ENOENT) => {}
            Err(e) => fail(err_w, Stage::MaskPaths, e, i as u32),
        }
    }
    for (i, path) in READ_ONLY.iter().enumerate() {
        match sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Ok(_) => {
                step!(
                    p,
                    Stage::ReadonlyPaths,
                    i,
                    sys::make_read_only(libc::AT_FDCWD, path, true)
                );
            }
            Err(libc::ENOENT) => {}
            Err(e) => fail(err_w, Stage::ReadonlyPaths, e, i as u32),
        }
    }
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
        step!(p, Stage::Loopback, 0, loopback_up());
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

/// Where `step!` reports: the error channel's descriptor.
trait ErrFd {
    fn err_w(&self) -> i32;
}

impl ErrFd for i32 {
    fn err_w(&self) -> i32 {
        *self
    }
}

fn setup_dev(p: i32, r: &RootSetup) {
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev", 0o755));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"tmpfs"),
            c"/dev",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some(c"mode=755,size=65536k")
        )
    );
    for (i, dev) in DEVICES.iter().enumerate() {
        if r.mknod_devices {
            step!(
                p,
                Stage::Dev,
                i,
                sys::mknod_char(dev, 0o666, DEVICE_NUMBERS[i])
            );
        } else {
            step!(p, Stage::Dev, i, sys::touch(dev, 0o666));
            step!(p, Stage::Dev, i, sys::move_mount(r.device_trees[i], dev));
            sys::close(r.device_trees[i]);
        }
    }
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev/pts", 0o755));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"devpts"),
            c"/dev/pts",
            Some(c"devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=0620")
        )
    );
    for (target, link) in [
        (c"pts/ptmx", c"/dev/ptmx"),
        (c"/proc/self/fd", c"/dev/fd"),
        (c"/proc/self/fd/0", c"/dev/stdin"),
        (c"/proc/self/fd/1", c"/dev/stdout"),
        (c"/proc/self/fd/2", c"/dev/stderr"),
    ] {
        // SAFETY: valid NUL-terminated paths.
        step!(
            p,
            Stage::Dev,
            0,
            sys::check(unsafe {
                libc::syscall(
                    libc::SYS_symlinkat,
                    target.as_ptr(),
                    libc::AT_FDCWD,
                    link.as_ptr(),
                )
            })
        );
    }
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev/shm", 0o1777));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"shm"),
            c"/dev/shm",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"mode=1777,size=65536k")
        )
    );
}

/// Bring up the loopback interface of the current network namespace.
pub(crate) fn loopback_up() -> Sys {
    // SAFETY: plain integer arguments.
    let sock = sys::check(unsafe {
        libc::syscall(
            libc::SYS_socket,
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        )
    })? as i32;
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq living across the calls.
    let result = sys::check(unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            sock,
            libc::SIOCGIFFLAGS,
            &mut req as *mut libc::ifreq,
        )
    })
    .and_then(|_| {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                sock,
                libc::SIOCSIFFLAGS,
                &req as *const libc::ifreq,
            )
        })
    });
    sys::close(sock);
    result
}

/// Capability header and data of `capset(2)` (version 3: two 32-bit words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn credentials_and_exec(p: &Prepared) -> ! {
    for (target, &source) in p.stdio.iter().enumerate() {
        if source >= 0 {
            // SAFETY: plain integer arguments.
            step!(
                p,
                Stage::Stdio,
                target,
                sys::check(unsafe { libc::syscall(libc::SYS_dup3, source, target as i32, 0) })
            );
        }
    }
    // Every other descriptor is closed now, not merely at exec: a host directory leaked by the
    // caller without O_CLOEXEC must not serve as the working directory or in the program's
    // path (`/proc/self/fd/<n>/..`, the CVE-2024-21626 shape). Only the error channel stays; it is
    // close-on-exec and its closing tells the parent the exec happened.
    step!(p, Stage::CloseFds, 0, sys::close_all_but(p.err_w));
    // Bounding set first: dropping needs CAP_SETPCAP, which setuid may take away.
    for cap in 0..=p.last_cap {
        if p.caps & (1u64 << cap) == 0 {
            match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
                Ok(_) | Err(libc::EINVAL) => {}
                Err(e) => fail(p.err_w, Stage::Capabilities, e, cap),
            }
        }
    }
    if !p.no_new_privs {
        // Without no_new_privs the kernel installs a filter only for a holder of
        // CAP_SYS_ADMIN: now, before the ids change (what follows is in every profile's
        // reach: setgroups, setres[ug]id, capset, prctl, chdir, execve).
        seccomp(p);
    }
    if !p.setgroups_denied {
        // SAFETY: `groups` is valid for reads of its length.
        step!(
            p,
            Stage::Setgroups,
            0,
            sys::check(unsafe {
                libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr())
            })
        );
    }
    // Raw syscalls, not libc's setgid/setuid: glibc's broadcast them to all threads of the
    // parent (which do not exist here) under a lock.
    // SAFETY: plain integer argument.
    step!(
        p,
        Stage::Setgid,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) })
    );
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0)
    );
    // SAFETY: plain integer argument.
    step!(
        p,
        Stage::Setuid,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) })
    );
    // A change of ids clears the parent-death signal: armed again (as runc does).
    step!(
        p,
        Stage::DeathSignal,
        0,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
    );
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0)
    );
    // As runc, crun and Docker: root keeps `caps`; any other uid holds none but the ambient
    // ones asked for by name (the bounding set keeps `caps`, so a setuid binary such as `su`
    // still works where no_new_privs is off). Inheritable: the ambient ones only (the
    // CVE-2022-29162 lesson).
    let held = if p.uid == 0 {
        p.caps | p.ambient
    } else {
        p.ambient
    };
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| CapData {
        effective: (held >> shift) as u32,
        permitted: (held >> shift) as u32,
        inheritable: (p.ambient >> shift) as u32,
    };
    let data = [word(0), word(32)];
    // SAFETY: header and two data words, as capset v3 expects, living across the call.
    step!(
        p,
        Stage::Capabilities,
        0,
        sys::check(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
        })
    );
    for cap in 0..=p.last_cap {
        if p.ambient & (1u64 << cap) != 0 {
            step!(
                p,
                Stage::Capabilities,
                cap,
                sys::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong
                )
            );
        }
    }
    step!(p, Stage::Chdir, 0, sys::chdir(&p.cwd));
    // The working directory must be inside the root: the kernel names one outside it
    // "(unreachable)/..." rather than "/...".
    let mut cwd = [0u8; libc::PATH_MAX as usize];
    // SAFETY: `cwd` is valid for writes of its length.
    let got = sys::check(unsafe { libc::syscall(libc::SYS_getcwd, cwd.as_mut_ptr(), cwd.len()) });
    match got {
        Ok(_) if cwd[0] == b'/' => {}
        Ok(_) => fail(p.err_w, Stage::Chdir, libc::EXDEV, 0),
        Err(e) => fail(p.err_w, Stage::Chdir, e, 0),
    }
    if p.no_new_privs {
        step!(
            p,
            Stage::NoNewPrivs,
            0,
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
        );
        seccomp(p);
    }
    if p.init {
        init::fork_and_supervise(p.err_w);
    }
    exec(p)
}

/// Install the seccomp filters, if any.
fn seccomp(p: &Prepared) {
    if let Some(programs) = &p.seccomp {
        step!(p, Stage::Seccomp, 0, crate::seccomp::install(programs));
    }
}

/// Try each candidate path in order; report the most telling error.
fn exec(p: &Prepared) -> ! {
    // The program starts with no signal blocked.
    step!(p, Stage::Signals, 0, sys::sigprocmask(libc::SIG_SETMASK, 0));
    let mut report = (libc::ENOENT, 0u32);
    for (i, path) in p.candidates.iter().enumerate() {
        // SAFETY: `path`, `argv` and `envp` are NUL-terminated and NULL-terminated, prepared
        // before clone and alive in this copy of the address space.
        unsafe {
            libc::syscall(
                libc::SYS_execve,
                path.as_ptr(),
                p.argv.as_ptr(),
                p.envp.as_ptr(),
            )
        };
        let errno = sys::errno();
        match errno {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => report = (libc::EACCES, i as u32),
            other => fail(p.err_w, Stage::Exec, other, i as u32),
        }
    }
    fail(p.err_w, Stage::Exec, report.0, report.1)
}

impl ErrFd for Prepared {
    fn err_w(&self) -> i32 {
        self.err_w
    }
}
