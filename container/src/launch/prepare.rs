//! Turning a [`Spec`] or an [`ExecSpec`](super::spec::ExecSpec) into the [`Prepared`] data of
//! the child (all allocation happens here, before `clone`) and the parent's ends of the pipes.
//! [`common`] is the part both share.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use caps::{CapSet, Capability};
use nix::errno::Errno;

use super::child::{DEVICES, Enter, ExtraKind, ExtraMount, Prepared, RootSetup};
use super::console::ConsoleSetup;
use super::error::{LaunchError, Stage};
use super::spec::{MountKind, Spec, Stdio};

/// What the parent keeps: the descriptors it must hold (and close) around `clone`.
#[derive(Debug)]
pub(crate) struct ParentSide {
    pub err_r: OwnedFd,
    /// The go-ahead's write end: handed to the launch (`clone_child`).
    pub sync_w: Option<OwnedFd>,
    /// The child's ends (error channel write end, sync read end, stdio): closed after `clone`.
    pub child_ends: Vec<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The exec candidates, to name the program in an error.
    pub candidates: Vec<PathBuf>,
    /// Mount targets, to name them in an error.
    pub rootfs_targets: Vec<PathBuf>,
    pub extra_targets: Vec<PathBuf>,
    /// The Landlock ruleset's paths, by rule index.
    pub landlock_paths: Vec<PathBuf>,
    /// A mount namespace made ahead was taken: the next is asked for when this side is
    /// dropped, at the launch's end (the child exec'd, or the launch failed).
    pub refill_mntns: Option<super::mntns::Refill>,
}

fn prep_err(errno: Errno, path: impl Into<PathBuf>) -> LaunchError {
    LaunchError::at(Stage::Prepare, errno, path)
}

pub(crate) fn cstring(bytes: &[u8], what: &Path) -> Result<CString, LaunchError> {
    CString::new(bytes).map_err(|_| prep_err(Errno::EINVAL, what))
}

pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// A close-on-exec pipe, both ends numbered 3 or above (see [`high_fd`]).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LaunchError::new(Stage::Prepare, e))?;
    Ok((high_fd(r, Stage::Prepare)?, high_fd(w, Stage::Prepare)?))
}

/// The error channel: a connected pair of stream sockets, close-on-exec (its closing at the
/// program's `execve` tells the parent the exec happened, as a pipe's would). The parent's end
/// (first) has `SO_PASSCRED`: every report carries its sender's pid, translated by the kernel
/// into the parent's pid namespace. That is how the init's child, the program, tells its host
/// pid (inside the container it only knows its namespace's pid). Both ends are numbered 3 or
/// above: in a host whose stdio is closed they would otherwise take 0 to 2, which the child's
/// stdio setup overwrites.
pub(crate) fn error_channel() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is valid for writes of two descriptors.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if ret < 0 {
        return Err(LaunchError::new(Stage::Prepare, Errno::last()));
    }
    // SAFETY: socketpair returned two new descriptors nothing else owns.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (parent, child) = (
        high_fd(parent, Stage::Prepare)?,
        high_fd(child, Stage::Prepare)?,
    );
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int living across the call.
    let ret = unsafe {
        libc::setsockopt(
            parent.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(LaunchError::new(Stage::Prepare, Errno::last()));
    }
    Ok((parent, child))
}

/// A descriptor numbered 3 or above (so dup'ing a stdio source onto 0..2 in the child never
/// clobbers another source, the error channel or the sync pipe).
fn high_fd(fd: OwnedFd, stage: Stage) -> Result<OwnedFd, LaunchError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let new = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|e| LaunchError::new(stage, e))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The three stdio slots: the child's source fds and the parent's pipe ends.
pub(crate) fn stdio(
    streams: [&Stdio; 3],
    side: &mut ParentSide,
) -> Result<[RawFd; 3], LaunchError> {
    let mut sources = [-1; 3];
    for (i, stream) in streams.into_iter().enumerate() {
        let child_end = match stream {
            Stdio::Inherit => continue,
            Stdio::Null => {
                let fd = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| LaunchError::at(Stage::Stdio, e, "/dev/null"))?;
                high_fd(fd, Stage::Stdio)?
            }
            Stdio::Piped => {
                let (r, w) = pipe()?;
                let (child, parent) = if i == 0 { (r, w) } else { (w, r) };
                *[&mut side.stdin, &mut side.stdout, &mut side.stderr][i] = Some(parent);
                high_fd(child, Stage::Stdio)?
            }
            Stdio::Fd(fd) => high_fd(
                fd.try_clone()
                    .map_err(|e| LaunchError::new(Stage::Stdio, io_errno(&e)))?,
                Stage::Stdio,
            )?,
        };
        sources[i] = child_end.as_raw_fd();
        side.child_ends.push(child_end);
    }
    Ok(sources)
}

/// The capability bits asked for, and the last capability of the kernel. What of them a child
/// can hold is settled on the cloning thread ([`super::thread_caps::fit`]).
pub(crate) fn capability_mask(wanted: &[Capability]) -> (u64, u32) {
    let mask = wanted
        .iter()
        .filter(|c| c.index() < 64)
        .fold(0u64, |m, c| m | 1u64 << c.index());
    let last = last_cap(
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .as_deref(),
    );
    (mask, last)
}

/// The ambient capability bits: each one asked for must be among the capabilities kept
/// (`EINVAL` otherwise: the bounding set would refuse it). Whether the child can hold them is
/// checked on the cloning thread.
fn ambient_mask(ambient: &[Capability], wanted: &[Capability]) -> Result<u64, LaunchError> {
    let mut mask = 0u64;
    for cap in ambient {
        if !wanted.contains(cap) {
            return Err(LaunchError::new(Stage::Capabilities, Errno::EINVAL));
        }
        mask |= 1u64 << cap.index();
    }
    Ok(mask)
}

/// The highest capability number from the text of `/proc/sys/kernel/cap_last_cap` (40 when
/// unreadable), at most 63: the child shifts `1u64` by every number up to it.
fn last_cap(text: Option<&str>) -> u32 {
    text.and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63)
}

/// argv, envp and the exec candidates.
pub(crate) struct Program {
    pub candidates: Vec<CString>,
    pub candidate_paths: Vec<PathBuf>,
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
    pub strings: Vec<CString>,
}

pub(crate) fn program(
    program: &OsStr,
    arg0: Option<&OsStr>,
    args: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    path_dirs: &[PathBuf],
) -> Result<Program, LaunchError> {
    let exec_err = |p: &Path| LaunchError::at(Stage::Exec, Errno::EINVAL, p);
    let name = Path::new(program);
    if program.is_empty() {
        return Err(LaunchError::at(Stage::Exec, Errno::ENOENT, name));
    }
    let candidate_paths: Vec<PathBuf> = if program.as_bytes().contains(&b'/') {
        vec![name.to_path_buf()]
    } else {
        path_dirs.iter().map(|d| d.join(name)).collect()
    };
    let candidates = candidate_paths
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(|_| exec_err(p)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut strings = Vec::with_capacity(1 + args.len() + env.len());
    strings.push(cstring(arg0.unwrap_or(program).as_bytes(), name)?);
    for arg in args {
        strings.push(CString::new(arg.as_bytes()).map_err(|_| exec_err(Path::new(arg)))?);
    }
    for (k, v) in env {
        if k.as_bytes().contains(&b'=') || k.is_empty() {
            return Err(exec_err(Path::new(k)));
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        strings.push(CString::new(kv).map_err(|_| exec_err(Path::new(k)))?);
    }
    let argc = 1 + args.len();
    let mut argv: Vec<_> = strings[..argc].iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<_> = strings[argc..].iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    Ok(Program {
        candidates,
        candidate_paths,
        argv,
        envp,
        strings,
    })
}

/// A path inside the container as a C string, absolute and without `..`.
fn container_path(path: &Path) -> Result<CString, LaunchError> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(LaunchError::at(Stage::Mount, Errno::EINVAL, path));
    }
    cstring(path.as_os_str().as_bytes(), path)
}

/// The process a [`Spec`] or an [`ExecSpec`](super::spec::ExecSpec) runs: the fields they share.
pub(crate) struct Run<'a> {
    pub stdio: [&'a Stdio; 3],
    pub program: &'a OsStr,
    pub arg0: Option<&'a OsStr>,
    pub args: &'a [OsString],
    pub env: &'a [(OsString, OsString)],
    pub path_dirs: &'a [PathBuf],
    /// The capabilities asked for.
    pub capabilities: &'a [Capability],
    /// The ambient capabilities asked for by name.
    pub ambient_capabilities: &'a [Capability],
    /// Whether the process is in a user namespace new to it (it may hold every capability).
    pub new_userns: bool,
    pub cwd: &'a Path,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    pub setgroups_denied: bool,
    pub no_new_privs: bool,
    pub seccomp: &'a crate::seccomp::Seccomp,
    pub landlock: Option<&'a crate::landlock::Landlock>,
    pub init: bool,
    /// A terminal of this size instead of `stdio`.
    pub terminal: Option<super::WindowSize>,
}

/// What a container's first process ([`spawn`]) and an exec'd one (`launch::exec`) share: the
/// error channel and sync pipe, the stdio slots, then `place` (where the process goes: its own
/// root, or a running container to enter; it may record mount targets in the [`ParentSide`]),
/// then the program, capabilities and groups, in that order (the first failure is the error).
pub(crate) fn common(
    run: Run<'_>,
    place: impl FnOnce(&mut ParentSide) -> Result<(Option<RootSetup>, Option<Enter>), LaunchError>,
) -> Result<(Prepared, ParentSide), LaunchError> {
    let (err_r, err_w) = error_channel()?;
    let (sync_r, sync_w) = pipe()?;
    let mut side = ParentSide {
        err_r,
        sync_w: None,
        child_ends: Vec::new(),
        stdin: None,
        stdout: None,
        stderr: None,
        candidates: Vec::new(),
        rootfs_targets: Vec::new(),
        extra_targets: Vec::new(),
        landlock_paths: Vec::new(),
        refill_mntns: None,
    };
    let stdio_fds = if run.terminal.is_some() {
        [-1; 3]
    } else {
        stdio(run.stdio, &mut side)?
    };
    let (root, enter) = place(&mut side)?;
    let bind_console = root.is_some();
    let program = program(run.program, run.arg0, run.args, run.env, run.path_dirs)?;
    side.candidates = program.candidate_paths;
    let (wanted_caps, last_cap) = capability_mask(run.capabilities);
    let ambient = ambient_mask(run.ambient_capabilities, run.capabilities)?;
    let seccomp = run.seccomp.programs(wanted_caps).map_err(|e| {
        tracing::warn!(error = %e, "seccomp profile");
        LaunchError::new(Stage::Seccomp, Errno::EINVAL)
    })?;
    let landlock = match run.landlock {
        Some(l) => {
            let (fd, rules) = l
                .prepare()
                .map_err(|e| LaunchError::new(Stage::Landlock, Errno::from_raw(e)))?;
            side.child_ends.push(fd);
            side.landlock_paths = l.paths().cloned().collect();
            Some(rules)
        }
        None => None,
    };
    if run.setgroups_denied && !run.groups.is_empty() {
        return Err(LaunchError::new(Stage::Setgroups, Errno::EPERM));
    }
    let prepared = Prepared {
        err_w: err_w.as_raw_fd(),
        sync_r: sync_r.as_raw_fd(),
        sync_w: sync_w.as_raw_fd(),
        root,
        enter,
        stdio: stdio_fds,
        cwd: cstring(run.cwd.as_os_str().as_bytes(), run.cwd)?,
        uid: run.uid,
        gid: run.gid,
        groups: run.groups.to_vec(),
        setgroups_denied: run.setgroups_denied,
        wanted_caps,
        new_userns: run.new_userns,
        caps: 0,
        last_cap,
        ambient,
        no_new_privs: run.no_new_privs,
        seccomp,
        landlock,
        init: run.init,
        // A container's first process binds /dev/console to it; an exec'd one finds it.
        console: run.terminal.map(|size| ConsoleSetup {
            size: size.to_winsize(),
            bind_console,
        }),
        handshake: false,
        shares_memory: false,
        candidates: program.candidates,
        argv: program.argv,
        envp: program.envp,
        _strings: program.strings,
    };
    side.child_ends.push(err_w);
    side.child_ends.push(sync_r);
    side.sync_w = Some(sync_w);
    Ok((prepared, side))
}

/// Everything for a container's first process.
pub(crate) fn spawn(spec: &Spec) -> Result<(Prepared, ParentSide), LaunchError> {
    let new_userns = spec.user_namespace.is_some();
    let run = Run {
        stdio: [&spec.stdin, &spec.stdout, &spec.stderr],
        program: &spec.program,
        arg0: spec.arg0.as_deref(),
        args: &spec.args,
        env: &spec.env,
        path_dirs: &spec.path_dirs,
        capabilities: &spec.capabilities,
        ambient_capabilities: &spec.ambient_capabilities,
        new_userns,
        cwd: &spec.cwd,
        uid: spec.uid,
        gid: spec.gid,
        groups: &spec.groups,
        setgroups_denied: spec
            .user_namespace
            .as_ref()
            .is_some_and(|maps| !maps.setgroups_allowed()),
        no_new_privs: spec.no_new_privs,
        seccomp: &spec.seccomp,
        landlock: spec.landlock.as_ref(),
        init: spec.init,
        terminal: spec.terminal,
    };
    common(run, |side| Ok((Some(root_setup(spec, side)?), None)))
}

/// Whether this process may make the container's device nodes with `mknod` (it holds
/// `CAP_MKNOD`, and no device cgroup or security module refuses their numbers): each tried
/// once per process in a temporary directory. Where it may not, the launcher binds the host's
/// nodes instead.
fn mknod_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static OWNER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // A child forked without exec never waits on its parent's once-cell (which a thread of the
    // parent may have been filling at the fork): it leaves mknod alone.
    if !super::ahead::owns(&OWNER) {
        return false;
    }
    *WORKS.get_or_init(|| {
        if !caps::has_cap(None, CapSet::Effective, Capability::CAP_MKNOD).unwrap_or(false) {
            return false;
        }
        let Ok(dir) = tempfile::Builder::new().prefix("molde-mknod-").tempdir() else {
            return false;
        };
        super::child::DEVICE_NUMBERS
            .iter()
            .enumerate()
            .all(|(i, &dev)| {
                nix::sys::stat::mknod(
                    &dir.path().join(i.to_string()),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    dev,
                )
                .is_ok()
            })
    })
}

/// The child's own root: rootfs, mounts, hostname, limits (mount targets recorded in `side`).
fn root_setup(spec: &Spec, side: &mut ParentSide) -> Result<RootSetup, LaunchError> {
    let new_userns = spec.user_namespace.is_some();
    let root = cstring(spec.root.as_os_str().as_bytes(), &spec.root)?;
    let mut rootfs = Vec::with_capacity(spec.rootfs_mounts.len());
    for m in &spec.rootfs_mounts {
        rootfs.push(
            m.prepare(&spec.root)
                .map_err(|e| LaunchError::mount(Stage::RootfsMount, &spec.root, e))?,
        );
        side.rootfs_targets.push(spec.root.clone());
    }
    let layer_tmpfs = layer_tmpfs(spec)?;
    let mut extra = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        let target = container_path(&m.target)?;
        let mut dirs = Vec::new();
        let mut prefix = PathBuf::from("/");
        let parts: Vec<_> = m.target.components().skip(1).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(part);
            dirs.push(cstring(prefix.as_os_str().as_bytes(), &m.target)?);
        }
        let (kind, is_file) = match &m.kind {
            MountKind::Bind { source, read_only } => {
                let meta = std::fs::metadata(source)
                    .map_err(|e| LaunchError::at(Stage::Mount, io_errno(&e), source))?;
                (
                    ExtraKind::Bind {
                        source: cstring(source.as_os_str().as_bytes(), source)?,
                        read_only: *read_only,
                    },
                    !meta.is_dir(),
                )
            }
            MountKind::Tmpfs { size_bytes, mode } => {
                let mut data = format!("mode={:o}", mode & 0o7777);
                if let Some(size) = size_bytes {
                    data.push_str(&format!(",size={size}"));
                }
                (
                    ExtraKind::Tmpfs {
                        data: cstring(data.as_bytes(), &m.target)?,
                    },
                    false,
                )
            }
        };
        extra.push(ExtraMount {
            dirs,
            target,
            is_file,
            kind,
        });
        side.extra_targets.push(m.target.clone());
    }
    let hostname = match &spec.hostname {
        Some(h) => Some(
            CString::new(h.as_bytes())
                .ok()
                .filter(|c| !c.is_empty() && c.as_bytes().len() <= 64)
                .ok_or_else(|| LaunchError::at(Stage::Hostname, Errno::EINVAL, h))?,
        ),
        None => None,
    };

    // A namespace made ahead, held by this side until `clone` returns.
    let netns = match spec.network {
        super::spec::Network::Isolated if spec.join_netns.is_some() => {
            let fd = spec.join_netns.as_ref().map(|fd| fd.try_clone());
            let fd = fd
                .transpose()
                .map_err(|e| LaunchError::new(Stage::Prepare, io_errno(&e)))?
                .ok_or_else(|| LaunchError::new(Stage::Prepare, Errno::EBADF))?;
            let raw = fd.as_raw_fd();
            side.child_ends.push(fd);
            raw
        }
        super::spec::Network::Isolated if !new_userns => match super::netns::take() {
            Some(fd) => {
                let raw = fd.as_raw_fd();
                side.child_ends.push(fd);
                raw
            }
            None => -1,
        },
        _ => -1,
    };
    // A user namespace to join (a rootless container on a bridge network), held likewise.
    let userns = match &spec.join_userns {
        Some(fd) => {
            let fd = fd
                .try_clone()
                .map_err(|e| LaunchError::new(Stage::Prepare, io_errno(&e)))?;
            let raw = fd.as_raw_fd();
            side.child_ends.push(fd);
            raw
        }
        None => -1,
    };
    // A mount namespace made ahead, where the rootfs can be made detached before joining it.
    // Not for a root of another user namespace than the initial one: a made namespace would
    // belong to it, and the kernel mounts a new proc there only where one is fully visible
    // (`mount_too_revealing`), which nothing is in a made namespace.
    let joinable = !new_userns
        && layer_tmpfs.is_none()
        && molde_layerfs::privilege::is_privileged()
        && rootfs.iter().all(|m| m.can_detach());
    let (mntns, mntns_root) = match joinable.then(super::mntns::take).flatten() {
        Some(made) => {
            let raw = made.ns.as_raw_fd();
            side.child_ends.push(made.ns);
            side.refill_mntns = Some(super::mntns::Refill);
            (raw, made.root_mount)
        }
        None => (-1, 0),
    };
    Ok(RootSetup {
        root,
        rootfs_trees: vec![-1; rootfs.len().max(1)],
        rootfs,
        layer_tmpfs,
        readonly_rootfs: spec.readonly_rootfs,
        extra_trees: vec![-1; extra.len()],
        extra,
        device_trees: [-1; DEVICES.len()],
        mknod_devices: !new_userns && mknod_works(),
        sys_fallback: new_userns,
        sys_tree: -1,
        hostname,
        netns,
        userns,
        mntns,
        mntns_root,
        loopback: spec.network == super::spec::Network::Isolated && netns < 0,
        wanted_rlimits: spec.rlimits.clone(),
        rlimits: Vec::new(),
    })
}

/// `Spec::layer_tmpfs` as C strings: each directory under `root` (`EINVAL` otherwise), and
/// only with rootfs mounts (a tmpfs on an unpacked rootfs would hide it).
fn layer_tmpfs(spec: &Spec) -> Result<Option<Vec<CString>>, LaunchError> {
    if spec.layer_tmpfs.is_empty() {
        return Ok(None);
    }
    if spec.rootfs_mounts.is_empty() {
        return Err(LaunchError::at(
            Stage::RootfsMount,
            Errno::EINVAL,
            &spec.root,
        ));
    }
    let mut dirs = Vec::with_capacity(spec.layer_tmpfs.len());
    for dir in &spec.layer_tmpfs {
        if !dir.starts_with(&spec.root) || dir == &spec.root {
            return Err(LaunchError::at(Stage::RootfsMount, Errno::EINVAL, dir));
        }
        dirs.push(cstring(dir.as_os_str().as_bytes(), dir)?);
    }
    Ok(Some(dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_cap_is_clamped_to_what_a_u64_mask_holds() {
        assert_eq!(last_cap(Some("40\n")), 40);
        assert_eq!(last_cap(Some("63")), 63);
        assert_eq!(last_cap(Some("64")), 63);
        assert_eq!(last_cap(Some("4294967295")), 63);
        assert_eq!(last_cap(Some("junk")), 40);
        assert_eq!(last_cap(None), 40);
        assert!(capability_mask(&[]).1 <= 63);
    }
}
