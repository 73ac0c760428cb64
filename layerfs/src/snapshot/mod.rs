//! Snapshot backends: containerd's snapshotter vocabulary over a stack of layer directories.
//!
//! - **prepare**: a writable snapshot over read-only lowers; returns the mounts that show it.
//! - **view**: a read-only snapshot over lowers.
//! - **diff**: the changes written into a snapshot, as a layer.
//! - **remove**: delete a snapshot's own state (never the lowers).
//! - **open**: the snapshot an earlier prepare or view left in its directory (after a restart).
//! - **mounts**: what to mount to see the snapshot ([`Snapshot::mounts`]), as data.
//!
//! Lowers are layer directories in overlay format ([`crate::Format::Overlay`]), topmost first.
//! Backends: kernel overlayfs ([`OverlayBackend`]), and a copy-based fallback where overlay is
//! not available ([`CopyBackend`]); [`default_backend`] picks one. Every backend passes the
//! same conformance suite (`layerfs/tests/snapshot_conformance.rs`).
//!
//! A backend never mounts anything itself: whoever needs to see a snapshot performs its
//! [`Snapshot::mounts`] (on the host, or in a container's mount namespace) and unmounts them
//! before [`Backend::remove`].
//!
//! The parts: `dirs` (a snapshot's directory: checked against its lowers, made, found again),
//! `mountinfo` (which mounts of this host use a snapshot, so that remove refuses while one
//! does), and one file per backend.
//!
//! ```no_run
//! use std::path::{Component, Path, PathBuf};
//! use molde_layerfs::snapshot::{default_backend, Backend};
//!
//! let backend = default_backend();
//! let lowers = vec![PathBuf::from("/layers/2"), PathBuf::from("/layers/1")];
//! let snapshot = backend.prepare(&lowers, Path::new("/snapshots/c1"))?;
//! let rootfs = Path::new("/run/c1/rootfs");
//! for mount in &snapshot.mounts {
//!     mount.mount_at(rootfs)?;
//! }
//! // ... run something in rootfs, then:
//! molde_layerfs::mount::unmount(rootfs)?;
//! backend.remove(snapshot)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod copy;
mod dirs;
mod mountinfo;
mod overlay;

pub use copy::CopyBackend;
pub use overlay::OverlayBackend;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::diff::{DiffOptions, DiffReport};
use crate::mount::Mount;
use dirs::{canonical, create_subdir, open_dir, prepare_dir};
use mountinfo::mount_using;

/// A snapshot backend: prepares writable and read-only snapshots over a stack of lower layer
/// directories, describes the mounts that show them, diffs their changes into a layer, and
/// removes them.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The backend's name (`overlay`, `copy`).
    fn name(&self) -> &'static str;

    /// A writable snapshot over `lowers` (layer directories in overlay format, topmost first),
    /// kept in `dir`: the snapshot's own directory, created if missing, and empty.
    fn prepare(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError>;

    /// A read-only snapshot over `lowers`, kept in `dir` (as for [`Backend::prepare`]). Its
    /// mounts refuse writes with `EROFS`.
    fn view(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError>;

    /// The snapshot an earlier [`Backend::prepare`] (`writable`) or [`Backend::view`] (not
    /// `writable`) of the same `lowers` left in `dir`, e.g. to mount a stopped container's
    /// snapshot again after a restart. Nothing is created or changed; a missing part of the
    /// snapshot's layout is an error.
    ///
    /// (overlayfs refuses to mount again an upper that was mounted `volatile`: such a snapshot
    /// opens, but its mount fails.)
    fn open(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        writable: bool,
    ) -> Result<Snapshot, SnapshotError>;

    /// Write the changes made in the writable `snapshot` to `out` as a deterministic layer tar
    /// (uncompressed). The snapshot's mounts may still be mounted, but nothing should be
    /// writing through them.
    fn diff(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        opts: &DiffOptions,
    ) -> Result<DiffReport, SnapshotError>;

    /// Delete the snapshot's directory and everything in it; never the lowers. Its mounts must
    /// be unmounted first: a mount found inside the directory or on its upper layer is refused
    /// with [`SnapshotError::Busy`].
    fn remove(&self, snapshot: Snapshot) -> Result<(), SnapshotError>;
}

/// A snapshot made by a [`Backend`]: its lowers, its own directory, and the mounts that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The lower layer directories, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The snapshot's own directory (its writable layer, work directory, or copy).
    pub dir: PathBuf,
    /// What to mount, in order, at one target to see the snapshot.
    pub mounts: Vec<Mount>,
    /// Whether the mounts are writable (made by [`Backend::prepare`]).
    pub writable: bool,
    /// The backend that made it.
    backend: &'static str,
    /// Where the snapshot's writes land: the overlay upper, or the copy.
    changes: PathBuf,
}

impl Snapshot {
    /// The name of the backend that made the snapshot.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The directory where writes through the snapshot's mounts land (overlay: the upper
    /// directory, with whiteouts; copy: the whole copied tree).
    pub fn changes_dir(&self) -> &Path {
        &self.changes
    }
}

/// Why a snapshot operation failed. Every variant names the directory or layer involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The snapshot directory cannot be created or read.
    #[error("snapshot directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The snapshot directory already has entries.
    #[error("snapshot directory {0} is not empty")]
    DirNotEmpty(PathBuf),
    /// A lower layer directory is missing or not a directory.
    #[error("lower layer {path}: {source}")]
    Lower {
        /// The layer directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lower layer and the snapshot directory contain one another: removing the snapshot
    /// or writing to it would touch the layer.
    #[error("lower layer {lower} and snapshot directory {dir} overlap")]
    Overlap {
        /// The layer directory.
        lower: PathBuf,
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// More lower layers than the backend can stack.
    #[error("{backend} backend: {count} lower layers, more than its maximum of {max}")]
    TooManyLayers {
        /// The backend.
        backend: &'static str,
        /// How many were given.
        count: usize,
        /// The most it takes.
        max: usize,
    },
    /// Flattening the lowers into a copy failed.
    #[error("copying the lower layers into {dir}: {source}")]
    Copy {
        /// The copy's directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::view::ViewError,
    },
    /// Diffing the snapshot failed.
    #[error("diff of snapshot {dir}: {source}")]
    Diff {
        /// The snapshot directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: crate::diff::DiffError,
    },
    /// A read-only snapshot has no changes to diff.
    #[error("snapshot {0} is a read-only view: it has no changes to diff")]
    NotWritable(PathBuf),
    /// The snapshot was made by another backend.
    #[error("snapshot {dir} was made by the {made_by} backend, not {backend}")]
    WrongBackend {
        /// The snapshot directory.
        dir: PathBuf,
        /// The backend that made it.
        made_by: &'static str,
        /// The backend asked to handle it.
        backend: &'static str,
    },
    /// Something is still mounted inside the snapshot or uses its upper directory.
    #[error("snapshot {dir} is still in use by the mount at {mount_point}: unmount it first")]
    Busy {
        /// The snapshot directory.
        dir: PathBuf,
        /// The mount point.
        mount_point: PathBuf,
    },
    /// Deleting the snapshot directory failed.
    #[error("removing snapshot directory {dir}: {source}")]
    Remove {
        /// The snapshot directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The best backend for this process: kernel overlayfs where it can be mounted, the copy
/// backend otherwise.
pub fn default_backend() -> Box<dyn Backend> {
    if crate::mount::overlay_supported() {
        Box::new(OverlayBackend::new())
    } else {
        Box::new(CopyBackend::new())
    }
}

/// Delete the snapshot directory after checking nothing uses it.
fn remove_dir(snapshot: &Snapshot, backend: &'static str) -> Result<(), SnapshotError> {
    if snapshot.backend != backend {
        return Err(SnapshotError::WrongBackend {
            dir: snapshot.dir.clone(),
            made_by: snapshot.backend,
            backend,
        });
    }
    let dir = match canonical(&snapshot.dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SnapshotError::Remove {
                dir: snapshot.dir.clone(),
                source,
            });
        }
    };
    let upper = (backend == "overlay").then_some(snapshot.changes.as_path());
    if let Some(mount_point) = mount_using(&dir, upper) {
        return Err(SnapshotError::Busy {
            dir: snapshot.dir.clone(),
            mount_point,
        });
    }
    remove_tree(&dir).map_err(|source| SnapshotError::Remove {
        dir: snapshot.dir.clone(),
        source,
    })
}

/// Remove a snapshot's directory tree, including the mode-000 directories overlayfs leaves in
/// its work directory (`work/work`, and `work/work/incompat/volatile` after a `volatile`
/// mount), which an unprivileged owner cannot enter until it gives itself the permission back.
///
/// A rootless container with subordinate ids leaves files and directories of those ids in its
/// writable layer, which the caller cannot remove itself: those trees are removed as root of
/// a user namespace with the same maps ([`crate::userns::remove_tree`]).
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let result = match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            open_up(dir).and_then(|()| fs::remove_dir_all(dir))
        }
        other => other,
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match crate::idmap::IdMaps::subordinate_for_current_process() {
                Some(maps) => crate::userns::remove_tree(maps, dir).map_err(|_| e),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// Give the owner rwx on every directory under `dir` (not following symlinks).
fn open_up(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d)?;
        if !meta.is_dir() {
            continue;
        }
        if meta.permissions().mode() & 0o700 != 0o700 {
            fs::set_permissions(
                &d,
                fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
            )?;
        }
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}
