//! Everything the child needs, prepared before `clone`: strings, pointer arrays and descriptor
//! slots it only reads or fills in.

use std::ffi::CString;

use molde_layerfs::mount::PreparedMount;

use super::dev::DEVICES;
use crate::launch::failure::ErrFd;

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
    /// The directories to make in a tmpfs mounted on `root` first (`Spec::layer_tmpfs`); no
    /// tmpfs when `None`.
    pub layer_tmpfs: Option<Vec<CString>>,
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
    /// A network namespace made ahead ([`crate::launch::netns`]) to join, or -1 (the child was made
    /// in a new one, or shares the host's).
    pub netns: i32,
    /// A user namespace to join (`setns`) before `netns`, or -1. Joining it, the child makes
    /// its other namespaces inside it (`unshare`) and forks: the fork's child, pid 1 of the
    /// new pid namespace, goes on; the child itself supervises it (see `child::join`).
    pub userns: i32,
    /// Bring loopback up (a network namespace of the child's own making).
    pub loopback: bool,
    /// A mount namespace made ahead ([`crate::launch::mntns`]) to join, or -1 (the child was made in
    /// a copy of the host's). Joining it, the rootfs mounts are made detached before (in
    /// `rootfs_trees`) and attached on the namespace's root.
    pub mntns: i32,
    /// The unique id of the root mount of `mntns`, as made: checked once joined.
    pub mntns_root: u64,
    /// The detached rootfs mounts (`rootfs`, or the bind of `root`), filled in by the child.
    pub rootfs_trees: Vec<i32>,
    /// The resource limits asked for; `rlimits` is what may be set of them, settled on the
    /// cloning thread ([`crate::launch::thread_caps::fit`]).
    pub wanted_rlimits: Vec<crate::launch::spec::Rlimit>,
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
    /// [`crate::launch::thread_caps::fit`]); the last capability of the kernel.
    pub caps: u64,
    pub last_cap: u32,
    /// The ambient capabilities (bits, a subset of `caps`): also inheritable, permitted and
    /// effective, whatever the uid. A non-root process holds these and no others.
    pub ambient: u64,
    pub no_new_privs: bool,
    /// The seccomp filters to install, in order (none: unconfined).
    pub seccomp: Option<crate::seccomp::Programs>,
    /// The Landlock rules to add and enforce (none: no ruleset).
    pub landlock: Option<crate::landlock::Rules>,
    pub init: bool,
    /// Make a terminal, the process's stdio ([`crate::launch::console`]).
    pub console: Option<crate::launch::console::ConsoleSetup>,
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

impl ErrFd for Prepared {
    fn err_w(&self) -> i32 {
        self.err_w
    }
}
