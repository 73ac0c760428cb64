//! Mounts described as data (containerd's style).
//!
//! A [`Mount`] says what to mount; it does not mount anything by being built. Whoever needs the
//! mount performs it with [`Mount::mount_at`]: the host, a test, or a container's launcher
//! inside the container's own mount namespace. The same description serves all three.

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
