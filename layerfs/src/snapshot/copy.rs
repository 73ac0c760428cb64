//! The copy backend, for where overlayfs is not available: a snapshot is a full copy of the
//! union of its lowers, bind-mounted.
//!
//! Layout of a snapshot directory: `rootfs/`, the flattened copy ([`UnionView::copy_to`]).
//! Its diff compares the copy with the union of the lowers ([`diff::naive`]), which catches an
//! edit that keeps a file's size and mtime. Preparing costs a copy of the whole stack, and
//! there is no limit on the number of lowers.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::overlay::check_diffable;
use super::{Backend, Snapshot, SnapshotError, open_dir, prepare_dir, remove_dir};
use crate::diff::{self, DiffOptions, DiffReport};
use crate::mount::Mount;
use crate::view::UnionView;
use crate::whiteout::OverlayXattr;

const NAME: &str = "copy";
/// The flattened copy in a snapshot directory.
const ROOTFS: &str = "rootfs";

/// Snapshots as copies of the union of their lowers, shown by bind mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyBackend {
    /// The overlay xattr namespace that marks opaque directories in the lowers.
    xattr: OverlayXattr,
}

impl Default for CopyBackend {
    fn default() -> Self {
        CopyBackend::new()
    }
}

impl CopyBackend {
    /// A backend for lowers made by this process ([`OverlayXattr::for_current_process`]).
    pub fn new() -> CopyBackend {
        CopyBackend::with_xattr(OverlayXattr::for_current_process())
    }

    /// A backend for lowers whose opaque directories carry `xattr`.
    pub fn with_xattr(xattr: OverlayXattr) -> CopyBackend {
        CopyBackend { xattr }
    }

    fn copy(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        writable: bool,
    ) -> Result<Snapshot, SnapshotError> {
        let dir_abs = prepare_dir(lowers, dir)?;
        let rootfs = dir_abs.join(ROOTFS);
        let view = UnionView::new(lowers.to_vec(), None, self.xattr);
        if let Err(source) = view.copy_to(&rootfs) {
            // Leave the snapshot directory as it was given: empty.
            let _ = std::fs::remove_dir_all(&rootfs);
            return Err(SnapshotError::Copy {
                dir: rootfs,
                source,
            });
        }
        Ok(describe(lowers, dir, &dir_abs, writable))
    }
}

/// The snapshot in `dir` (resolved: `dir_abs`), whose copy exists.
fn describe(lowers: &[PathBuf], dir: &Path, dir_abs: &Path, writable: bool) -> Snapshot {
    let rootfs = dir_abs.join(ROOTFS);
    Snapshot {
        lowers: lowers.to_vec(),
        dir: dir.to_path_buf(),
        mounts: vec![Mount::Bind {
            source: rootfs.clone(),
            read_only: !writable,
        }],
        writable,
        backend: NAME,
        changes: rootfs,
    }
}

impl Backend for CopyBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError> {
        self.copy(lowers, dir, true)
    }

    fn view(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError> {
        self.copy(lowers, dir, false)
    }

    fn open(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        writable: bool,
    ) -> Result<Snapshot, SnapshotError> {
        let dir_abs = open_dir(lowers, dir, &[ROOTFS])?;
        Ok(describe(lowers, dir, &dir_abs, writable))
    }

    fn diff(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        opts: &DiffOptions,
    ) -> Result<DiffReport, SnapshotError> {
        check_diffable(snapshot, NAME)?;
        let base = UnionView::new(snapshot.lowers.clone(), None, self.xattr);
        let opts = DiffOptions {
            xattr: self.xattr,
            ..*opts
        };
        diff::naive(&base, &snapshot.changes, out, &opts).map_err(|source| SnapshotError::Diff {
            dir: snapshot.dir.clone(),
            source,
        })
    }

    fn remove(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        remove_dir(&snapshot, NAME)
    }
}
