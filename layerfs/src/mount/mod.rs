//! Mounts described as data (containerd's style).
//!
//! A [`Mount`] says what to mount; it does not mount anything by being built. Whoever needs the
//! mount performs it with [`Mount::mount_at`]: the host, a test, or a container's launcher
//! inside the container's own mount namespace. The same description serves all three.
//! [`unmount`] detaches it again.
//!
//! Overlay mounts use the new mount API (`fsopen`, one `fsconfig("lowerdir+")` per layer,
//! `fsmount`, `move_mount`) on Linux >= 6.8 and `mount(2)` otherwise; either way up to
//! overlayfs' maximum of [`MAX_OVERLAY_LAYERS`] lowers mount (with `mount(2)`, by naming the
//! layers by file descriptor when their paths do not fit in a page). `userxattr` (for user
//! namespaces), `volatile` and read-only unions (no upper) are supported, and the upper stays
//! readable by [`crate::diff::native`] (no redirect_dir, metacopy or index). A failed mount
//! never leaves a half-made mount behind; [`MountError`] names the target, the failing step
//! and the errno.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use molde_layerfs::mount::{Mount, OverlayMount, unmount};
//!
//! let mount = Mount::Overlay(OverlayMount {
//!     lowerdirs: vec![PathBuf::from("/layers/2"), PathBuf::from("/layers/1")],
//!     upperdir: Some(PathBuf::from("/c1/upper")),
//!     workdir: Some(PathBuf::from("/c1/work")),
//!     userxattr: false,
//!     volatile: false,
//! });
//! mount.mount_at(Path::new("/c1/rootfs"))?;
//! // ... use /c1/rootfs ...
//! unmount(Path::new("/c1/rootfs"))?;
//! # Ok::<(), molde_layerfs::mount::MountError>(())
//! ```

use std::path::PathBuf;

/// One mount to perform at a target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A kernel overlayfs mount.
    Overlay(OverlayMount),
    /// A bind mount of a directory.
    Bind {
        /// The directory to bind.
        source: PathBuf,
        /// Remount read-only after binding.
        read_only: bool,
    },
}

/// A kernel overlayfs mount: lower directories (top first), and for a writable mount an upper
/// and a work directory on the same filesystem.
///
/// A read-only mount (no upper) of a single lower is made over an empty target directory,
/// which serves as the second layer overlayfs needs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// The read-only layers, topmost first (overlayfs' `lowerdir` order).
    pub lowerdirs: Vec<PathBuf>,
    /// The writable layer; `None` for a read-only mount.
    pub upperdir: Option<PathBuf>,
    /// overlayfs' work directory, required with `upperdir`.
    pub workdir: Option<PathBuf>,
    /// Use `user.overlay.*` xattrs (`userxattr`), as inside a user namespace.
    pub userxattr: bool,
    /// Skip syncing the upper on unmount (`volatile`): for a throwaway or later-committed
    /// writable layer.
    pub volatile: bool,
}

mod bind;
mod overlay;
mod prepared;
mod syscalls;

pub use prepared::{PreparedMount, PreparedStep};

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

/// overlayfs' own limit on the number of lower layers of one mount.
pub const MAX_OVERLAY_LAYERS: usize = 500;

/// Which kernel interface performs a mount. Tests use it to exercise both paths; everything
/// else should leave it to [`Mount::mount_at`] (the new API, falling back to `mount(2)`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// The new mount API where the kernel has it, else `mount(2)`.
    Auto,
    /// Only the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`, `open_tree`).
    New,
    /// Only `mount(2)` with an option string.
    Legacy,
}

/// The step of a mount that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MountStage {
    /// `fsopen(2)`: creating the filesystem context.
    Fsopen,
    /// `fsconfig(2)` setting the named parameter.
    Fsconfig {
        /// The parameter, e.g. `lowerdir+` or `upperdir`.
        key: String,
    },
    /// `fsconfig(2)` `FSCONFIG_CMD_CREATE`: creating the superblock.
    Create,
    /// `fsmount(2)`: making a detached mount of the superblock.
    Fsmount,
    /// `move_mount(2)`: attaching the mount at the target.
    MoveMount,
    /// `open_tree(2)`: cloning the source of a bind mount.
    OpenTree,
    /// `mount_setattr(2)`: making a bind mount read-only.
    MountSetattr,
    /// `mount(2)`.
    Mount,
    /// `mount(2)` with `MS_REMOUNT` (making a bind mount read-only).
    Remount,
    /// Creating the pipe or the child process that performs a mount with fd-relative paths.
    Fork,
    /// The child's `chdir(2)` into `/proc/self/fd`.
    Chdir,
}

impl fmt::Display for MountStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountStage::Fsopen => f.write_str("fsopen"),
            MountStage::Fsconfig { key } => write!(f, "fsconfig {key:?}"),
            MountStage::Create => f.write_str("fsconfig FSCONFIG_CMD_CREATE"),
            MountStage::Fsmount => f.write_str("fsmount"),
            MountStage::MoveMount => f.write_str("move_mount"),
            MountStage::OpenTree => f.write_str("open_tree"),
            MountStage::MountSetattr => f.write_str("mount_setattr"),
            MountStage::Mount => f.write_str("mount"),
            MountStage::Remount => f.write_str("mount (remount read-only)"),
            MountStage::Fork => f.write_str("fork"),
            MountStage::Chdir => f.write_str("chdir /proc/self/fd"),
        }
    }
}

/// Why a mount or unmount failed. Every variant names the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A mount syscall failed.
    #[error("{kind} mount at {target}: {stage} failed: {errno}{}{}",
        kernel_message.as_deref().map(|m| format!(" (kernel: {m})")).unwrap_or_default(),
        hint(*errno, stage))]
    Syscall {
        /// `overlay` or `bind`.
        kind: &'static str,
        /// Where the mount was to be attached.
        target: PathBuf,
        /// The step that failed.
        stage: MountStage,
        /// The error number.
        #[source]
        errno: Errno,
        /// What the kernel logged into the filesystem context, if anything.
        kernel_message: Option<String>,
    },
    /// `umount2(2)` failed.
    #[error("unmounting {target}: {errno}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error number.
        #[source]
        errno: Errno,
    },
    /// The overlay description cannot be mounted as it stands.
    #[error("overlay mount at {target}: {reason}")]
    InvalidOverlay {
        /// Where the mount was to be attached.
        target: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A directory the mount needs is missing or unusable.
    #[error("{kind} mount at {target}: {path}: {source}")]
    Path {
        /// `overlay` or `bind`.
        kind: &'static str,
        /// Where the mount was to be attached.
        target: PathBuf,
        /// The directory (a lower, upper, work or bind source directory).
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// The `mount(2)` option string does not fit in a page even with fd-relative paths.
    #[error(
        "overlay mount at {target}: the mount options need {len} bytes, more than the {max} \
         mount(2) accepts even with fd-relative paths"
    )]
    OptionsTooLong {
        /// Where the mount was to be attached.
        target: PathBuf,
        /// The length of the option string, with its NUL.
        len: usize,
        /// The page size.
        max: usize,
    },
}

/// Advice for the errors a caller can do something about.
fn hint(errno: Errno, stage: &MountStage) -> &'static str {
    match (errno, stage) {
        (Errno::ENODEV, MountStage::Fsopen | MountStage::Mount) => {
            "; the kernel has no overlay filesystem: load it (`modprobe overlay`) or use the \
             copy backend (snapshot::CopyBackend)"
        }
        (Errno::EPERM, _) => {
            "; mounting needs CAP_SYS_ADMIN over the mount namespace: run as root, or inside a \
             user namespace with its own mount namespace (e.g. `unshare -Urm`) using userxattr"
        }
        (Errno::EMFILE, _) => "; too many open files: raise RLIMIT_NOFILE",
        (Errno::EBUSY, MountStage::Fsconfig { .. } | MountStage::Create) => {
            "; the upper or work directory is in use by another overlay mount"
        }
        _ => "",
    }
}

impl MountError {
    /// The error number behind the failure, if a syscall failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MountError::Syscall { errno, .. } | MountError::Unmount { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl Mount {
    /// Perform this mount at `target` (an existing directory), with the new mount API where the
    /// kernel has it and `mount(2)` otherwise.
    ///
    /// Either the whole mount is attached at `target`, or nothing is: a failure never leaves a
    /// half-made mount behind.
    pub fn mount_at(&self, target: &Path) -> Result<(), MountError> {
        self.mount_at_using(target, MountApi::Auto)
    }

    /// [`Mount::mount_at`] through a chosen kernel interface (for tests of both paths).
    #[doc(hidden)]
    pub fn mount_at_using(&self, target: &Path, api: MountApi) -> Result<(), MountError> {
        match self {
            Mount::Overlay(overlay) => overlay::mount(overlay, target, api),
            Mount::Bind { source, read_only } => bind::mount(source, *read_only, target, api),
        }
    }
}

/// Detach the mount at `target` (`umount2(MNT_DETACH)`): it disappears from the namespace at
/// once and is released when nothing uses it any more.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|errno| {
        MountError::Unmount {
            target: target.to_path_buf(),
            errno,
        }
    })
}

/// A new, empty tmpfs of at most `size` (a tmpfs size option: `4k`, `64m`...) as a detached
/// mount (`fsopen`, `fsconfig`, `fsmount`): a close-on-exec descriptor of its root, to
/// attach with `move_mount(2)` or to use as a directory. Mounted `nodev,nosuid,noexec`; with
/// `read_only`, read-only as a filesystem (not only as this mount: a mount of it made
/// writable again still cannot write). Linux 5.2 (the new mount API); needs `CAP_SYS_ADMIN`
/// over the current mount namespace.
pub fn detached_tmpfs(
    size: &std::ffi::CStr,
    read_only: bool,
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::AsFd;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    let fs = syscalls::fsopen(c"tmpfs")?;
    syscalls::fsconfig_string(fs.as_fd(), c"mode", c"0755")?;
    syscalls::fsconfig_string(fs.as_fd(), c"size", size)?;
    if read_only {
        syscalls::fsconfig_flag(fs.as_fd(), c"ro")?;
    }
    syscalls::fsconfig_create(fs.as_fd())?;
    syscalls::fsmount(
        fs.as_fd(),
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
}

/// Whether this process can mount kernel overlayfs: the kernel has it and a filesystem
/// context can be created (which needs CAP_SYS_ADMIN over the current mount namespace). On
/// kernels without the new mount API, whether `/proc/filesystems` lists overlay.
///
/// Probed once per process: releasing an overlay filesystem context costs the kernel an
/// expedited RCU grace period (`kern_unmount_array`), which a probe per container would pay
/// each time. A process that gives up its privileges later gets a typed mount error instead.
pub fn overlay_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(probe_overlay)
}

fn probe_overlay() -> bool {
    match syscalls::fsopen(c"overlay") {
        Ok(_context) => true,
        Err(Errno::ENOSYS) => std::fs::read_to_string("/proc/filesystems").is_ok_and(|list| {
            list.lines()
                .any(|line| line.split_whitespace().last() == Some("overlay"))
        }),
        Err(_) => false,
    }
}

/// `path` as a C string, or the error naming it.
fn c_path(kind: &'static str, target: &Path, path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::Path {
        kind,
        target: target.to_path_buf(),
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}
