//! What to launch: the [`Spec`] of a container's first process and the [`ExecSpec`] of a
//! further process in a running container.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub use caps::Capability;

/// Everything the launcher needs to start a container's first process.
///
/// Built by the container lifecycle (or a test); `launch::spawn()` prepares all of it (C strings,
/// pointer arrays, candidate program paths) before `clone`, so the child allocates nothing.
#[derive(Debug)]
pub struct Spec {
    /// The container's root: `rootfs_mounts` are performed, in the container's own mount
    /// namespace, at this existing (empty) host directory, e.g. `<snapshot dir>/rootfs`. With
    /// no rootfs mounts the directory itself (an unpacked rootfs) becomes the root.
    pub root: PathBuf,
    /// The mounts making the root filesystem (from a layerfs snapshot), performed in order.
    pub rootfs_mounts: Vec<molde_layerfs::mount::Mount>,
    /// Mount a fresh tmpfs (mode 0700) on `root` in the container's own mount namespace, and
    /// make these directories in it (host paths under `root`, e.g. an overlay's upper and
    /// work directories), before the `rootfs_mounts`: the writable layer of an `ephemeral`
    /// container without root, which cannot mount a tmpfs on the host but can in its user
    /// namespace. It lives as long as that namespace. Empty: no tmpfs.
    pub layer_tmpfs: Vec<PathBuf>,
    /// Remount the root read-only after setting it up.
    pub readonly_rootfs: bool,
    /// Further mounts inside the container, in order.
    pub mounts: Vec<ContainerMount>,
    /// The container's hostname (its own UTS namespace); `None` keeps the inherited one.
    pub hostname: Option<String>,
    /// The program: a path inside the container, or a name (no `/`) searched in `path_dirs`.
    pub program: OsString,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// `argv[0]`; `None` uses `program`.
    pub arg0: Option<OsString>,
    /// The complete environment of the process.
    pub env: Vec<(OsString, OsString)>,
    /// The directories searched for a `program` without `/`, in order (the container's PATH).
    pub path_dirs: Vec<PathBuf>,
    /// The working directory, inside the container.
    pub cwd: PathBuf,
    /// The user id inside the container.
    pub uid: u32,
    /// The group id inside the container.
    pub gid: u32,
    /// The supplementary groups inside the container.
    pub groups: Vec<u32>,
    /// The network: the container's own namespace with loopback only, or the host's.
    pub network: Network,
    /// A user namespace with these id maps; `Some` when the caller is not privileged.
    pub user_namespace: Option<IdMaps>,
    /// With [`Network::Isolated`]: join this network namespace (configured beforehand, e.g.
    /// with veths on a bridge) instead of making one.
    pub join_netns: Option<OwnedFd>,
    /// Join this user namespace instead of making one (with `user_namespace` set to the maps
    /// it has, and `join_netns` a network namespace it owns): a rootless container on a bridge
    /// network joins the store's rootless network namespace's user namespace, and makes its
    /// mount, pid, UTS, IPC and cgroup namespaces inside it. The process made is then a small
    /// supervisor outside the new pid namespace (it forwards signals to the container's first
    /// process and exits with its status, as [`Spec::init`] does inside).
    pub join_userns: Option<OwnedFd>,
    /// Run in the caller once the child exists and before it runs anything (its id maps and
    /// cgroups are written, it waits for the go-ahead), with its host pid: e.g. attach a
    /// user-mode network stack to its namespaces. An error fails the launch.
    pub before_run: Option<BeforeRun>,
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
    /// Give the process a terminal of this size (Docker's `-t`): a pseudo-terminal of the
    /// container's own devpts, its slave the process's stdin, stdout and stderr (the three
    /// [`Stdio`] fields are then unused), its controlling terminal in a session of its own, and
    /// `/dev/console`; the master is the [`Process`](super::Process)'s
    /// [`take_terminal`](super::Process::take_terminal).
    pub terminal: Option<super::WindowSize>,
    /// The capabilities the process may hold: its bounding set, and for uid 0 its permitted
    /// and effective sets. A process of any other uid holds none of them (as with runc, crun
    /// and Docker) but those in `ambient_capabilities`; a setuid-root binary it runs may gain
    /// them where `no_new_privs` is off. Default: [`default_capabilities`], Docker's set
    /// without `CAP_MKNOD`.
    pub capabilities: Vec<Capability>,
    /// Capabilities raised as ambient (so also inheritable, permitted and effective) for any
    /// uid: a non-root process keeps these across `execve`. Each must be in `capabilities`
    /// (else the launch fails at [`Stage::Capabilities`](super::Stage::Capabilities) with
    /// `EINVAL`) and one the launcher can grant (else `EPERM`). Default: none.
    pub ambient_capabilities: Vec<Capability>,
    /// Set `PR_SET_NO_NEW_PRIVS` (no privilege gain through setuid binaries or file caps).
    pub no_new_privs: bool,
    /// The system call filter. Default: [`Seccomp::Default`](crate::seccomp::Seccomp), moby's
    /// profile.
    pub seccomp: crate::seccomp::Seccomp,
    /// A Landlock ruleset: the paths the container's processes may reach. Default: none.
    pub landlock: Option<crate::landlock::Landlock>,
    /// Resource limits. A limit above the current hard limit is clamped to it when the caller
    /// lacks `CAP_SYS_RESOURCE` in its bounding set.
    pub rlimits: Vec<Rlimit>,
    /// Open `cgroup.procs` / `tasks` files (opened `O_WRONLY` before spawning); the parent writes
    /// the child's pid into each before the child runs anything.
    pub cgroup_procs: Vec<OwnedFd>,
    /// Run a minimal init as PID 1 that reaps zombies and forwards signals to the program,
    /// which runs as its child.
    pub init: bool,
}

impl Spec {
    /// A spec running `program` in the root directory `root` with the secure defaults: no
    /// rootfs mounts (`root` is a ready rootfs), own network namespace, uid and gid 0, cwd `/`,
    /// Docker's capabilities, `no_new_privs`, stdio inherited, `PATH` search of the usual dirs.
    pub fn new(root: impl Into<PathBuf>, program: impl Into<OsString>) -> Spec {
        Spec {
            root: root.into(),
            rootfs_mounts: Vec::new(),
            layer_tmpfs: Vec::new(),
            readonly_rootfs: false,
            mounts: Vec::new(),
            hostname: None,
            program: program.into(),
            args: Vec::new(),
            arg0: None,
            env: vec![(OsString::from("PATH"), OsString::from(DEFAULT_PATH))],
            path_dirs: std::env::split_paths(DEFAULT_PATH).collect(),
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            network: Network::Isolated,
            user_namespace: None,
            join_netns: None,
            join_userns: None,
            before_run: None,
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            terminal: None,
            capabilities: default_capabilities(),
            ambient_capabilities: Vec::new(),
            no_new_privs: true,
            seccomp: crate::seccomp::Seccomp::Default,
            landlock: None,
            rlimits: Vec::new(),
            cgroup_procs: Vec::new(),
            init: false,
        }
    }
}

/// A step run in the caller while the child waits for its go-ahead (see [`Spec::before_run`]).
pub struct BeforeRun(pub Box<dyn Fn(u32) -> std::io::Result<()> + Send + Sync>);

impl std::fmt::Debug for BeforeRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeRun(..)")
    }
}

/// The `PATH` Docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set without `CAP_MKNOD` (13 capabilities).
///
/// Docker pairs `CAP_MKNOD` with a device cgroup that refuses every device but a few; molde
/// sets no device cgroup, so with `CAP_MKNOD` a container's root could make a node for the
/// host's disk on its `/dev` tmpfs (which must allow device nodes) and read it. Ask for it
/// explicitly where a device cgroup or the host guards the devices.
pub fn default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        CAP_CHOWN,
        CAP_DAC_OVERRIDE,
        CAP_FSETID,
        CAP_FOWNER,
        CAP_NET_RAW,
        CAP_SETGID,
        CAP_SETUID,
        CAP_SETFCAP,
        CAP_SETPCAP,
        CAP_NET_BIND_SERVICE,
        CAP_SYS_CHROOT,
        CAP_KILL,
        CAP_AUDIT_WRITE,
    ]
}

/// A mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    /// The mount point, an absolute path inside the container (created if missing).
    pub target: PathBuf,
    /// What to mount there.
    pub kind: MountKind,
}

/// The kinds of [`ContainerMount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path (a directory or a file).
    Bind {
        /// The host path.
        source: PathBuf,
        /// Make the bind mount read-only.
        read_only: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Its size limit in bytes; `None` is the kernel default (half the RAM).
        size_bytes: Option<u64>,
        /// The mode of its root directory, e.g. `0o1777`.
        mode: u32,
    },
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Its own network namespace with only the loopback interface, up.
    #[default]
    Isolated,
    /// The host's network namespace.
    Host,
}

pub use molde_layerfs::idmap::{IdMap, IdMaps};

/// Where a standard stream of the process goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe to the caller, taken with `Process::take_stdin` etc.
    Piped,
    /// This open file (a file, a pipe, a socket, a terminal).
    Fd(OwnedFd),
}

/// A resource limit (`setrlimit(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The resource, e.g. `libc::RLIMIT_NOFILE`.
    pub resource: libc::__rlimit_resource_t,
    /// The soft limit (`libc::RLIM_INFINITY` for none).
    pub soft: u64,
    /// The hard limit (`libc::RLIM_INFINITY` for none).
    pub hard: u64,
}

/// A further process to run in a running container (by `launch::exec()`).
#[derive(Debug)]
pub struct ExecSpec {
    /// The program: a path inside the container, or a name searched in `path_dirs`.
    pub program: OsString,
    /// The arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// `argv[0]`; `None` uses `program`.
    pub arg0: Option<OsString>,
    /// The complete environment.
    pub env: Vec<(OsString, OsString)>,
    /// The directories searched for a `program` without `/`.
    pub path_dirs: Vec<PathBuf>,
    /// The working directory inside the container.
    pub cwd: PathBuf,
    /// The user id inside the container.
    pub uid: u32,
    /// The group id inside the container.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
    /// Give the process a terminal of this size (`docker exec -t`), as [`Spec::terminal`]
    /// does (without binding `/dev/console`, which the container has).
    pub terminal: Option<super::WindowSize>,
    /// The capabilities the process may hold: as [`Spec::capabilities`] (none for a non-root
    /// uid but the ambient ones).
    pub capabilities: Vec<Capability>,
    /// Capabilities raised as ambient for any uid: as [`Spec::ambient_capabilities`].
    pub ambient_capabilities: Vec<Capability>,
    /// Set `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The system call filter (a container's exec'd processes get the container's).
    pub seccomp: crate::seccomp::Seccomp,
    /// The Landlock ruleset (a container's exec'd processes get the container's).
    pub landlock: Option<crate::landlock::Landlock>,
    /// Open `cgroup.procs` / `tasks` files of the container's cgroups: the process joins them
    /// before entering the container.
    pub cgroup_procs: Vec<OwnedFd>,
    /// The start time (field 22 of `/proc/<pid>/stat`) the target process must have, against
    /// pid reuse: checked once the launcher holds a pidfd of the target and has read its
    /// namespaces and root. `None`: not checked (the caller's own unreaped child).
    pub target_start: Option<u64>,
}

impl ExecSpec {
    /// An exec spec for `program` with the same defaults as [`Spec::new`].
    pub fn new(program: impl Into<OsString>) -> ExecSpec {
        ExecSpec {
            program: program.into(),
            args: Vec::new(),
            arg0: None,
            env: vec![(OsString::from("PATH"), OsString::from(DEFAULT_PATH))],
            path_dirs: std::env::split_paths(DEFAULT_PATH).collect(),
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            terminal: None,
            capabilities: default_capabilities(),
            ambient_capabilities: Vec::new(),
            no_new_privs: true,
            seccomp: crate::seccomp::Seccomp::Default,
            landlock: None,
            cgroup_procs: Vec::new(),
            target_start: None,
        }
    }
}
