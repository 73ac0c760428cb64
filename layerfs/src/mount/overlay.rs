//! Performing a kernel overlayfs mount.
//!
//! - **New mount API** (Linux >= 6.8): `fsopen("overlay")`, one `fsconfig("lowerdir+")` per
//!   layer (no length limit on the whole stack), `upperdir`, `workdir`, flags, then
//!   `FSCONFIG_CMD_CREATE`, `fsmount` and `move_mount`. A path longer than `fsconfig` accepts
//!   (255 bytes) is passed as `/proc/self/fd/N` of an `O_PATH` descriptor.
//! - **`mount(2)`** with an option string, which the kernel truncates at one page. When the
//!   absolute paths do not fit, every directory is opened `O_PATH` and the mount is made from a
//!   forked single-threaded child whose working directory is `/proc/self/fd`, so that each
//!   layer is named by its descriptor number (`lowerdir=7:8:9...`): 500 layers take about
//!   2.5 KB. The calling process never changes its own working directory.
//!
//! Both paths ask for an upper directory that [`crate::diff`] can read: `redirect_dir=nofollow`
//! (a renamed lower directory is copied, not recorded as a redirect xattr, and redirect xattrs
//! found in lowers are not followed), `metacopy=off` (a copy-up copies data, never only
//! metadata) and `index=off`. The kernel accepts all three with and without `userxattr`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use super::syscalls;
use super::{MAX_OVERLAY_LAYERS, MountApi, MountError, MountStage, OverlayMount, c_path};

pub(super) const KIND: &str = "overlay";

/// The longest string value `fsconfig(2)` accepts (it copies at most 256 bytes with the NUL).
const FSCONFIG_MAX_STRING: usize = 255;

/// Options that keep the upper directory readable by a diff, with and without `userxattr`.
pub(super) const DIFFABLE_OPTIONS: [(&CStr, &CStr); 3] = [
    (c"redirect_dir", c"nofollow"),
    (c"metacopy", c"off"),
    (c"index", c"off"),
];

/// Mount `overlay` at `target`.
pub(super) fn mount(
    overlay: &OverlayMount,
    target: &Path,
    api: MountApi,
) -> Result<(), MountError> {
    validate(overlay, target)?;
    if overlay.upperdir.is_none() && overlay.lowerdirs.len() == 1 {
        // overlayfs wants two lowers for a read-only mount ("at least 2 lowerdir are needed
        // while upperdir nonexistent"). The empty directory under the single layer is the
        // target itself: it is covered by the mount, so nothing else can write into it, and
        // nothing is left behind. (A temporary directory would not do: overlayfs cannot read a
        // merged directory one of whose layers was removed.)
        let empty = target_is_empty(target)?;
        if !empty {
            return Err(MountError::InvalidOverlay {
                target: target.to_path_buf(),
                reason: "a read-only overlay of a single layer is mounted over an empty target \
                         directory (it serves as the second layer overlayfs needs); this one \
                         has entries"
                    .into(),
            });
        }
        let padded = OverlayMount {
            lowerdirs: vec![overlay.lowerdirs[0].clone(), target.to_path_buf()],
            ..overlay.clone()
        };
        return mount_validated(&padded, target, api);
    }
    mount_validated(overlay, target, api)
}

fn mount_validated(overlay: &OverlayMount, target: &Path, api: MountApi) -> Result<(), MountError> {
    if api != MountApi::Legacy {
        match new_api(overlay, target) {
            Ok(()) => return Ok(()),
            Err(Attempt::Unsupported { stage, errno }) => {
                if api == MountApi::New {
                    return Err(MountError::Syscall {
                        kind: KIND,
                        target: target.to_path_buf(),
                        stage,
                        errno,
                        kernel_message: (errno != Errno::EPERM).then(|| {
                            "the new mount API with \"lowerdir+\" needs Linux 6.8 or later".into()
                        }),
                    });
                }
                tracing::debug!(?stage, %errno, "overlay: new mount API unavailable, using mount(2)");
            }
            Err(Attempt::Failed(error)) => return Err(error),
        }
    }
    legacy(overlay, target)
}

/// Whether the directory `target` has no entries.
pub(super) fn target_is_empty(target: &Path) -> Result<bool, MountError> {
    std::fs::read_dir(target)
        .map(|mut entries| entries.next().is_none())
        .map_err(|source| MountError::Path {
            kind: KIND,
            target: target.to_path_buf(),
            path: target.to_path_buf(),
            source,
        })
}

/// Refuse what the kernel would refuse with a less helpful error.
pub(super) fn validate(overlay: &OverlayMount, target: &Path) -> Result<(), MountError> {
    let invalid = |reason: String| MountError::InvalidOverlay {
        target: target.to_path_buf(),
        reason,
    };
    if overlay.lowerdirs.is_empty() {
        return Err(invalid(
            "no lower directory (overlayfs needs at least one)".into(),
        ));
    }
    if overlay.lowerdirs.len() > MAX_OVERLAY_LAYERS {
        return Err(invalid(format!(
            "{} lower directories, more than overlayfs' maximum of {MAX_OVERLAY_LAYERS}",
            overlay.lowerdirs.len()
        )));
    }
    match (&overlay.upperdir, &overlay.workdir) {
        (Some(_), None) => return Err(invalid("an upper directory needs a work directory".into())),
        (None, Some(_)) => {
            return Err(invalid(
                "a work directory without an upper directory".into(),
            ));
        }
        _ => {}
    }
    if overlay.upperdir.is_none() && overlay.volatile {
        return Err(invalid("volatile needs an upper directory".into()));
    }
    let all = overlay
        .lowerdirs
        .iter()
        .chain(overlay.upperdir.iter())
        .chain(overlay.workdir.iter());
    for dir in all {
        c_path(KIND, target, dir)?;
        let usable = match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )),
            Err(e) => Err(e),
        };
        usable.map_err(|source| MountError::Path {
            kind: KIND,
            target: target.to_path_buf(),
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// How an attempt with the new mount API ended, short of success.
enum Attempt {
    /// This kernel lacks what it needs; `mount(2)` may still work.
    Unsupported { stage: MountStage, errno: Errno },
    /// It failed for a reason `mount(2)` would share.
    Failed(MountError),
}

/// Whether the running kernel is at least `major.minor` (true when the release is unreadable).
pub(super) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(uts) = nix::sys::utsname::uname() else {
        return true;
    };
    let release = uts.release().to_string_lossy().into_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// Open `dir` as an `O_PATH` descriptor.
pub(super) fn open_path(dir: &Path, target: &Path) -> Result<OwnedFd, MountError> {
    open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| MountError::Path {
        kind: KIND,
        target: target.to_path_buf(),
        path: dir.to_path_buf(),
        source: std::io::Error::from(errno),
    })
}

/// Escape the characters overlayfs treats specially in option values: `\` (always unescaped
/// for upperdir, workdir and `lowerdir`), `:` (the `lowerdir` separator) and `,` (the option
/// separator of `mount(2)`).
pub(super) fn escape(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if matches!(b, b'\\' | b':' | b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The `fsconfig` value naming `dir`: the path itself (escaped when the kernel unescapes this
/// key), or `/proc/self/fd/N` of a descriptor kept in `held` when it is too long.
pub(super) fn fsconfig_value(
    dir: &Path,
    unescaped_by_kernel: bool,
    target: &Path,
    held: &mut Vec<OwnedFd>,
) -> Result<CString, MountError> {
    let raw = dir.as_os_str().as_bytes();
    let value = if unescaped_by_kernel {
        escape(raw)
    } else {
        raw.to_vec()
    };
    if value.len() <= FSCONFIG_MAX_STRING {
        return c_path(KIND, target, Path::new(std::ffi::OsStr::from_bytes(&value)));
    }
    let fd = open_path(dir, target)?;
    let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
    held.push(fd);
    Ok(CString::new(name).expect("a formatted number has no NUL"))
}

fn new_api(overlay: &OverlayMount, target: &Path) -> Result<(), Attempt> {
    if !kernel_at_least(6, 8) {
        return Err(Attempt::Unsupported {
            stage: MountStage::Fsconfig {
                key: "lowerdir+".into(),
            },
            errno: Errno::ENOSYS,
        });
    }
    let target_c = c_path(KIND, target, target).map_err(Attempt::Failed)?;
    let fs = match syscalls::fsopen(c"overlay") {
        Ok(fd) => fd,
        // ENOSYS: no new mount API. EPERM: no privilege (mount(2) will say so too), or a
        // seccomp filter that knows only the old API.
        Err(errno @ (Errno::ENOSYS | Errno::EPERM)) => {
            return Err(Attempt::Unsupported {
                stage: MountStage::Fsopen,
                errno,
            });
        }
        Err(errno) => {
            return Err(Attempt::Failed(MountError::Syscall {
                kind: KIND,
                target: target.to_path_buf(),
                stage: MountStage::Fsopen,
                errno,
                kernel_message: None,
            }));
        }
    };
    let failed = |stage: MountStage, errno: Errno| {
        Attempt::Failed(MountError::Syscall {
            kind: KIND,
            target: target.to_path_buf(),
            stage,
            errno,
            kernel_message: syscalls::fs_context_log(fs.as_fd()),
        })
    };
    let fsconfig_key = |key: &CStr| MountStage::Fsconfig {
        key: key.to_string_lossy().into_owned(),
    };
    // Descriptors standing for over-long paths, open until the superblock is created.
    let mut held = Vec::new();

    for (i, lower) in overlay.lowerdirs.iter().enumerate() {
        let value = fsconfig_value(lower, false, target, &mut held).map_err(Attempt::Failed)?;
        match syscalls::fsconfig_string(fs.as_fd(), c"lowerdir+", &value) {
            Ok(()) => {}
            Err(Errno::EINVAL) if i == 0 => {
                let log = syscalls::fs_context_log(fs.as_fd());
                if log
                    .as_deref()
                    .is_none_or(|m| m.contains("Unknown parameter"))
                {
                    return Err(Attempt::Unsupported {
                        stage: fsconfig_key(c"lowerdir+"),
                        errno: Errno::EINVAL,
                    });
                }
                return Err(Attempt::Failed(MountError::Syscall {
                    kind: KIND,
                    target: target.to_path_buf(),
                    stage: fsconfig_key(c"lowerdir+"),
                    errno: Errno::EINVAL,
                    kernel_message: log,
                }));
            }
            Err(errno) => return Err(failed(fsconfig_key(c"lowerdir+"), errno)),
        }
    }
    for (key, dir) in [
        (c"upperdir", &overlay.upperdir),
        (c"workdir", &overlay.workdir),
    ] {
        if let Some(dir) = dir {
            let value = fsconfig_value(dir, true, target, &mut held).map_err(Attempt::Failed)?;
            syscalls::fsconfig_string(fs.as_fd(), key, &value)
                .map_err(|errno| failed(fsconfig_key(key), errno))?;
        }
    }
    for (key, value) in DIFFABLE_OPTIONS {
        syscalls::fsconfig_string(fs.as_fd(), key, value)
            .map_err(|errno| failed(fsconfig_key(key), errno))?;
    }
    for (key, on) in [
        (c"userxattr", overlay.userxattr),
        (c"volatile", overlay.volatile),
    ] {
        if on {
            syscalls::fsconfig_flag(fs.as_fd(), key)
                .map_err(|errno| failed(fsconfig_key(key), errno))?;
        }
    }
    syscalls::fsconfig_create(fs.as_fd()).map_err(|errno| failed(MountStage::Create, errno))?;
    drop(held);

    let attrs = if overlay.upperdir.is_none() {
        syscalls::MOUNT_ATTR_RDONLY
    } else {
        0
    };
    let mnt =
        syscalls::fsmount(fs.as_fd(), attrs).map_err(|errno| failed(MountStage::Fsmount, errno))?;
    // If attaching fails, the detached mount is released when `mnt` is closed.
    syscalls::move_mount_to(mnt.as_fd(), &target_c)
        .map_err(|errno| failed(MountStage::MoveMount, errno))
}

/// The `mount(2)` option string with each directory named by `name`.
pub(super) fn options(overlay: &OverlayMount, mut name: impl FnMut(&Path) -> Vec<u8>) -> Vec<u8> {
    let mut opts = b"lowerdir=".to_vec();
    for (i, lower) in overlay.lowerdirs.iter().enumerate() {
        if i > 0 {
            opts.push(b':');
        }
        opts.extend(name(lower));
    }
    if let (Some(upper), Some(work)) = (&overlay.upperdir, &overlay.workdir) {
        opts.extend(b",upperdir=");
        opts.extend(name(upper));
        opts.extend(b",workdir=");
        opts.extend(name(work));
    }
    for (key, value) in DIFFABLE_OPTIONS {
        opts.push(b',');
        opts.extend(key.to_bytes());
        opts.push(b'=');
        opts.extend(value.to_bytes());
    }
    if overlay.userxattr {
        opts.extend(b",userxattr");
    }
    if overlay.volatile {
        opts.extend(b",volatile");
    }
    opts
}

pub(super) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}

fn legacy(overlay: &OverlayMount, target: &Path) -> Result<(), MountError> {
    let page = page_size();
    let flags = if overlay.upperdir.is_none() {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let syscall_error = |stage: MountStage, errno: Errno| MountError::Syscall {
        kind: KIND,
        target: target.to_path_buf(),
        stage,
        errno,
        kernel_message: None,
    };

    let direct = options(overlay, |dir| escape(dir.as_os_str().as_bytes()));
    if direct.len() < page {
        let data = CString::new(direct).expect("validated paths have no NUL");
        let target_c = c_path(KIND, target, target)?;
        return nix::mount::mount(
            Some(c"overlay"),
            target_c.as_c_str(),
            Some(c"overlay"),
            flags,
            Some(data.as_c_str()),
        )
        .map_err(|errno| syscall_error(MountStage::Mount, errno));
    }

    // Too long for a page: name every directory by an O_PATH descriptor, relative to
    // /proc/self/fd, from a child process that can change its working directory freely.
    let all: Vec<&std::path::PathBuf> = overlay
        .lowerdirs
        .iter()
        .chain(overlay.upperdir.iter())
        .chain(overlay.workdir.iter())
        .collect();
    let mut fds = std::collections::HashMap::with_capacity(all.len());
    for dir in all {
        if !fds.contains_key(dir.as_path()) {
            fds.insert(dir.as_path(), open_path(dir, target)?);
        }
    }
    let short = options(overlay, |dir| fds[dir].as_raw_fd().to_string().into_bytes());
    if short.len() >= page {
        return Err(MountError::OptionsTooLong {
            target: target.to_path_buf(),
            len: short.len() + 1,
            max: page,
        });
    }
    let data = CString::new(short).expect("numbers and option names have no NUL");
    let absolute = std::path::absolute(target).map_err(|source| MountError::Path {
        kind: KIND,
        target: target.to_path_buf(),
        path: target.to_path_buf(),
        source,
    })?;
    let target_c = c_path(KIND, target, &absolute)?;
    let result = child::mount_in_fd_dir(&target_c, &data, flags.bits());
    drop(fds);
    result.map_err(|(stage, errno)| syscall_error(stage, errno))
}

/// The forked child that performs a `mount(2)` from `/proc/self/fd`.
mod child {
    use std::ffi::CStr;
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::ForkResult;

    use super::MountStage;

    const STAGE_CHDIR: u32 = 1;
    const STAGE_MOUNT: u32 = 2;

    /// Mount overlay at `target` (absolute) with option string `data`, from a child whose
    /// working directory is `/proc/self/fd`. The child shares this process' mount namespace,
    /// so the mount appears here.
    pub(super) fn mount_in_fd_dir(
        target: &CStr,
        data: &CStr,
        flags: libc::c_ulong,
    ) -> Result<(), (MountStage, Errno)> {
        let (reader, writer) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| (MountStage::Fork, e))?;
        // SAFETY: after fork the child only makes async-signal-safe syscalls (chdir, mount,
        // write, _exit) on memory prepared before the fork: it never allocates or takes a
        // lock, so it is sound even when this process is multi-threaded.
        match unsafe { nix::unistd::fork() } {
            Err(errno) => Err((MountStage::Fork, errno)),
            Ok(ForkResult::Child) => {
                let report = |stage: u32| -> ! {
                    // SAFETY: reading errno and writing a stack buffer to an open pipe, then
                    // leaving without running any destructor or atexit handler.
                    unsafe {
                        let errno = *libc::__errno_location();
                        let mut message = [0u8; 8];
                        message[..4].copy_from_slice(&stage.to_ne_bytes());
                        message[4..].copy_from_slice(&errno.to_ne_bytes());
                        libc::write(writer.as_raw_fd(), message.as_ptr().cast(), message.len());
                        libc::_exit(1)
                    }
                };
                // SAFETY: valid NUL-terminated strings that outlive the calls.
                unsafe {
                    if libc::chdir(c"/proc/self/fd".as_ptr()) != 0 {
                        report(STAGE_CHDIR);
                    }
                    let ret = libc::mount(
                        c"overlay".as_ptr(),
                        target.as_ptr(),
                        c"overlay".as_ptr(),
                        flags,
                        data.as_ptr().cast(),
                    );
                    if ret != 0 {
                        report(STAGE_MOUNT);
                    }
                    libc::_exit(0)
                }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(writer);
                let mut message = [0u8; 8];
                let mut got = 0;
                let mut read_error = None;
                while got < message.len() {
                    match nix::unistd::read(&reader, &mut message[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(Errno::EINTR) => continue,
                        Err(errno) => {
                            read_error = Some(errno);
                            break;
                        }
                    }
                }
                // Always reap the child, whatever the pipe said.
                let status = loop {
                    match waitpid(child, None) {
                        Err(Errno::EINTR) => continue,
                        other => break other,
                    }
                };
                if got == message.len() {
                    let stage = u32::from_ne_bytes(message[..4].try_into().expect("4 bytes"));
                    let errno = i32::from_ne_bytes(message[4..].try_into().expect("4 bytes"));
                    let stage = if stage == STAGE_CHDIR {
                        MountStage::Chdir
                    } else {
                        MountStage::Mount
                    };
                    return Err((stage, Errno::from_raw(errno)));
                }
                if let Some(errno) = read_error {
                    return Err((MountStage::Fork, errno));
                }
                match status {
                    Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                    Ok(_) => Err((MountStage::Fork, Errno::ECHILD)),
                    Err(errno) => Err((MountStage::Fork, errno)),
                }
            }
        }
    }
}
