//! [`LaunchError`]: a setup step that failed, with its errno, reported by the child through a
//! close-on-exec pipe as plain numbers and turned into this type by the parent.

use std::fmt;
use std::path::PathBuf;

use molde_layerfs::mount::MountError;
use nix::errno::Errno;

/// The setup step of a launch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Stage {
    /// Preparing the launch before `clone` (strings with NUL bytes, pipes, `/dev/null`).
    Prepare = 1,
    /// `clone3`/`clone` into the new namespaces.
    Clone,
    /// Writing the user namespace's `uid_map`.
    UidMap,
    /// Writing `setgroups` (`deny`) or `gid_map`.
    GidMap,
    /// Writing the child's pid into a cgroup's `cgroup.procs` / `tasks`.
    Cgroup,
    /// Waiting for the parent's go-ahead.
    Sync,
    /// `PR_SET_PDEATHSIG`, or the parent died before the child started.
    DeathSignal,
    /// Making `/` a recursive slave (`MS_SLAVE|MS_REC`).
    Propagation,
    /// Mounting the root filesystem (overlay or bind) at the root directory.
    RootfsMount,
    /// Bind-mounting the root directory onto itself (to make it a mount point).
    RootBind,
    /// A further mount ([`super::ContainerMount`]).
    Mount,
    /// Mounting `/proc`.
    Proc,
    /// Setting up `/dev` (tmpfs, device nodes, devpts, ptmx, shm).
    Dev,
    /// Mounting `/sys` read-only.
    Sys,
    /// Making the rootfs the root: `pivot_root` and detaching the old root, or, in a mount
    /// namespace made ahead, `chroot`.
    PivotRoot,
    /// Masking paths (`/proc/kcore` etc.).
    MaskPaths,
    /// Making paths read-only (`/proc/sys` etc.).
    ReadonlyPaths,
    /// Remounting the root filesystem read-only.
    ReadonlyRoot,
    /// `sethostname`.
    Hostname,
    /// Bringing up the loopback interface.
    Loopback,
    /// Setting resource limits.
    Rlimit,
    /// `chdir` into the working directory.
    Chdir,
    /// `setgroups`.
    Setgroups,
    /// `setgid`.
    Setgid,
    /// `setuid`.
    Setuid,
    /// Dropping capabilities (bounding set, capset, ambient).
    Capabilities,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Closing stray file descriptors.
    CloseFds,
    /// Connecting stdin, stdout and stderr.
    Stdio,
    /// The init's `fork` of the program.
    InitFork,
    /// Entering a running container's namespaces (`setns`), for exec.
    Setns,
    /// `execve` of the program.
    Exec,
    /// Resetting signal dispositions to their defaults and unblocking signals for the program.
    Signals,
    /// Joining a namespace made ahead (`setns`): the network namespace (index 0), the mount
    /// namespace (index 1), or a user namespace to join ([`Spec::join_userns`](super::Spec::join_userns))
    /// and the namespaces made in it (index 2).
    JoinNamespace,
    /// Installing the seccomp filter (or, before `clone`, compiling its profile).
    Seccomp,
    /// Making the process's terminal (the index names the step: opening `/dev/pts/ptmx`,
    /// the window size, `/dev/console`, `setsid`, `TIOCSCTTY`...).
    Terminal,
    /// Adding the Landlock ruleset's rules and enforcing it (or, before `clone`, creating it);
    /// the index names the rule.
    Landlock,
}

impl Stage {
    /// Every stage, for decoding the number the child reports.
    const ALL: [Stage; 37] = [
        Stage::Prepare,
        Stage::Clone,
        Stage::UidMap,
        Stage::GidMap,
        Stage::Cgroup,
        Stage::Sync,
        Stage::DeathSignal,
        Stage::Propagation,
        Stage::RootfsMount,
        Stage::RootBind,
        Stage::Mount,
        Stage::Proc,
        Stage::Dev,
        Stage::Sys,
        Stage::PivotRoot,
        Stage::MaskPaths,
        Stage::ReadonlyPaths,
        Stage::ReadonlyRoot,
        Stage::Hostname,
        Stage::Loopback,
        Stage::Rlimit,
        Stage::Chdir,
        Stage::Setgroups,
        Stage::Setgid,
        Stage::Setuid,
        Stage::Capabilities,
        Stage::NoNewPrivs,
        Stage::CloseFds,
        Stage::Stdio,
        Stage::InitFork,
        Stage::Setns,
        Stage::Exec,
        Stage::Signals,
        Stage::JoinNamespace,
        Stage::Seccomp,
        Stage::Terminal,
        Stage::Landlock,
    ];

    /// The stage with this number, as the child reported it.
    pub(crate) fn from_code(code: u32) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u32 == code)
    }

    fn describe(self) -> &'static str {
        match self {
            Stage::Prepare => "preparing the launch",
            Stage::Clone => "clone into new namespaces",
            Stage::UidMap => "writing uid_map",
            Stage::GidMap => "writing setgroups/gid_map",
            Stage::Cgroup => "joining the cgroup",
            Stage::Sync => "waiting for the parent",
            Stage::DeathSignal => "setting the parent-death signal",
            Stage::Propagation => "making / a recursive slave mount",
            Stage::RootfsMount => "mounting the root filesystem",
            Stage::RootBind => "bind-mounting the root onto itself",
            Stage::Mount => "mounting",
            Stage::Proc => "mounting /proc",
            Stage::Dev => "setting up /dev",
            Stage::Sys => "mounting /sys",
            Stage::PivotRoot => "making the rootfs the root (pivot_root or chroot)",
            Stage::MaskPaths => "masking paths",
            Stage::ReadonlyPaths => "making paths read-only",
            Stage::ReadonlyRoot => "remounting the root read-only",
            Stage::Hostname => "sethostname",
            Stage::Loopback => "bringing up loopback",
            Stage::Rlimit => "setrlimit",
            Stage::Chdir => "chdir to the working directory",
            Stage::Setgroups => "setgroups",
            Stage::Setgid => "setgid",
            Stage::Setuid => "setuid",
            Stage::Capabilities => "dropping capabilities",
            Stage::NoNewPrivs => "PR_SET_NO_NEW_PRIVS",
            Stage::CloseFds => "closing stray file descriptors",
            Stage::Stdio => "connecting stdio",
            Stage::InitFork => "init forking the program",
            Stage::Setns => "entering the container's namespaces",
            Stage::Exec => "exec of the program",
            Stage::Signals => "resetting signal dispositions and mask",
            Stage::JoinNamespace => "joining a namespace made ahead",
            Stage::Seccomp => "installing the seccomp filter",
            Stage::Terminal => "making the terminal",
            Stage::Landlock => "applying the Landlock ruleset",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A container's setup failed: at which [`Stage`], with which errno, and on which path where
/// one is known. Never an invented exit code.
///
/// Its [`source`](std::error::Error::source) is the typed cause where there is one (a rootfs
/// mount that could not even be prepared: [`MountError`]), else the errno.
#[derive(Debug)]
#[non_exhaustive]
pub struct LaunchError {
    /// The step that failed.
    pub stage: Stage,
    /// Its error number.
    pub errno: Errno,
    /// The path concerned (a mount target, the working directory, the program), where known.
    pub path: Option<PathBuf>,
    /// The typed cause, where the step failed before the child ran (preparing a mount).
    pub cause: Option<Box<MountError>>,
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container setup failed at {}", self.stage)?;
        if let Some(p) = &self.path {
            write!(f, " ({})", p.display())?;
        }
        write!(f, ": {}{}", self.errno, hint(self.stage, self.errno))?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LaunchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Some(cause) => Some(&**cause),
            None => Some(&self.errno),
        }
    }
}

impl LaunchError {
    pub(crate) fn new(stage: Stage, errno: Errno) -> LaunchError {
        LaunchError {
            stage,
            errno,
            path: None,
            cause: None,
        }
    }

    pub(crate) fn at(stage: Stage, errno: Errno, path: impl Into<PathBuf>) -> LaunchError {
        LaunchError {
            stage,
            errno,
            path: Some(path.into()),
            cause: None,
        }
    }

    /// The error of a mount that could not be prepared (before the child runs).
    pub(crate) fn mount(stage: Stage, path: impl Into<PathBuf>, cause: MountError) -> LaunchError {
        LaunchError {
            stage,
            errno: cause.errno().unwrap_or(Errno::EINVAL),
            path: Some(path.into()),
            cause: Some(Box::new(cause)),
        }
    }
}

/// What the caller can do about the failures that have a known remedy.
fn hint(stage: Stage, errno: Errno) -> &'static str {
    match (stage, errno) {
        (Stage::Clone, Errno::EPERM | Errno::ENOSPC | Errno::EUSERS) => {
            " (creating namespaces needs root, or unprivileged user namespaces: check the \
             sysctls kernel.unprivileged_userns_clone=1, user.max_user_namespaces>0 and, on \
             Ubuntu, kernel.apparmor_restrict_unprivileged_userns=0)"
        }
        (Stage::Clone, Errno::EINVAL) => {
            " (the kernel lacks one of the namespaces asked for: check CONFIG_*_NS)"
        }
        (Stage::UidMap | Stage::GidMap, Errno::EPERM) => {
            " (an unprivileged caller may map only its own uid and gid itself; more ids go \
             through newuidmap/newgidmap (Debian's uidmap), which need the user's ranges in \
             /etc/subuid and /etc/subgid: usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 USER)"
        }
        (Stage::Proc | Stage::Sys, Errno::ENOTDIR) => {
            " (in the image it is not a directory: a symlink or a file)"
        }
        (Stage::Cgroup, _) => " (is the cgroup still there and writable by the caller?)",
        (Stage::Exec, Errno::ENOENT) => {
            " (the program is not in the container: check the path, PATH and the image)"
        }
        (Stage::Exec, Errno::EACCES) => " (the program is not executable by the user)",
        (Stage::Chdir, Errno::ENOENT) => " (the working directory does not exist in the container)",
        (Stage::Chdir, Errno::EXDEV) => {
            " (the working directory resolves outside the container's root, e.g. through \
             /proc/self/fd)"
        }
        (Stage::RootfsMount | Stage::Mount | Stage::Proc | Stage::Sys, Errno::EPERM) => {
            " (mounting needs CAP_SYS_ADMIN in the container's user namespace)"
        }
        (Stage::Rlimit, Errno::EPERM) => {
            " (raising a hard limit needs CAP_SYS_RESOURCE, which the caller lacks)"
        }
        (Stage::Capabilities, Errno::EINVAL) => {
            " (an ambient capability must also be one of the process's capabilities)"
        }
        (Stage::Capabilities, Errno::EPERM) => {
            " (an ambient capability asked for is not one this process can grant)"
        }
        (Stage::Setns, Errno::ESRCH) => " (the container's process has exited)",
        (Stage::Landlock, Errno::ENOSYS) => {
            " (this kernel has no Landlock: Linux 5.13 or later built with \
             CONFIG_SECURITY_LANDLOCK; see molde::probe())"
        }
        (Stage::Landlock, Errno::EOPNOTSUPP) => {
            " (Landlock is not enabled: add `landlock` to the kernel's `lsm=` boot parameter; \
             see molde::probe())"
        }
        (Stage::Landlock, Errno::ENOENT) => " (the path is not in the container)",
        (Stage::Landlock, Errno::EINVAL) => " (a path of the ruleset is not absolute)",
        _ => "",
    }
}
