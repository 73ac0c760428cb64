//! The kernel overlayfs backend: a snapshot is an upper and a work directory over the lowers.
//!
//! Layout of a snapshot directory: `upper/` (the writable layer, in overlay format: whiteouts
//! are char 0/0 devices, opaque directories carry the overlay xattr) and `work/` (overlayfs'
//! work directory). A read-only view keeps nothing in its directory unless it has no lowers.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Backend, Snapshot, SnapshotError, create_subdir, open_dir, prepare_dir, remove_dir};
use crate::diff::{self, DiffOptions, DiffReport};
use crate::mount::{MAX_OVERLAY_LAYERS, Mount, OverlayMount};
use crate::view::UnionView;
use crate::whiteout::OverlayXattr;

const NAME: &str = "overlay";
/// The writable layer of a prepared snapshot.
const UPPER: &str = "upper";
/// overlayfs' work directory of a prepared snapshot.
const WORK: &str = "work";
/// The empty directory a view of no lowers shows.
const EMPTY: &str = "empty";

/// Snapshots as kernel overlayfs mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayBackend {
    /// The overlay xattr namespace of the lowers and of the mounts (`User` means `userxattr`).
    xattr: OverlayXattr,
    /// Mount writable snapshots `volatile` (no sync of the upper on unmount).
    volatile: bool,
}

impl Default for OverlayBackend {
    fn default() -> Self {
        OverlayBackend::new()
    }
}

impl OverlayBackend {
    /// A backend for this process: `trusted.overlay.*` xattrs as root in the initial user
    /// namespace, `userxattr` otherwise ([`OverlayXattr::for_current_process`]); not volatile.
    pub fn new() -> OverlayBackend {
        OverlayBackend::with_xattr(OverlayXattr::for_current_process())
    }

    /// A backend whose lowers mark opaque directories with `xattr` (and whose mounts use
    /// `userxattr` when it is [`OverlayXattr::User`]).
    pub fn with_xattr(xattr: OverlayXattr) -> OverlayBackend {
        OverlayBackend {
            xattr,
            volatile: false,
        }
    }

    /// Whether writable snapshots are mounted `volatile`: faster, but their upper is not
    /// synced on unmount and a crash can lose it. For throwaway containers.
    pub fn volatile(self, volatile: bool) -> OverlayBackend {
        OverlayBackend { volatile, ..self }
    }

    /// The xattr namespace this backend reads and writes.
    pub fn xattr(&self) -> OverlayXattr {
        self.xattr
    }

    /// The snapshot in `dir` (resolved: `dir_abs`), whose layout exists.
    fn describe(&self, lowers: &[PathBuf], dir: &Path, dir_abs: &Path, writable: bool) -> Snapshot {
        let upper = dir_abs.join(UPPER);
        let userxattr = self.xattr == OverlayXattr::User;
        let mount = match (writable, lowers.is_empty()) {
            // overlayfs needs a lower: with none, the upper alone is the whole snapshot.
            (true, true) => Mount::Bind {
                source: upper.clone(),
                read_only: false,
            },
            (true, false) => Mount::Overlay(OverlayMount {
                lowerdirs: lowers.to_vec(),
                upperdir: Some(upper.clone()),
                workdir: Some(dir_abs.join(WORK)),
                userxattr,
                volatile: self.volatile,
            }),
            (false, true) => Mount::Bind {
                source: dir_abs.join(EMPTY),
                read_only: true,
            },
            (false, false) => Mount::Overlay(OverlayMount {
                lowerdirs: lowers.to_vec(),
                upperdir: None,
                workdir: None,
                userxattr,
                volatile: false,
            }),
        };
        Snapshot {
            lowers: lowers.to_vec(),
            dir: dir.to_path_buf(),
            mounts: vec![mount],
            writable,
            backend: NAME,
            changes: if writable {
                upper
            } else {
                dir_abs.to_path_buf()
            },
        }
    }

    fn check_layers(&self, lowers: &[PathBuf]) -> Result<(), SnapshotError> {
        if lowers.len() > MAX_OVERLAY_LAYERS {
            return Err(SnapshotError::TooManyLayers {
                backend: NAME,
                count: lowers.len(),
                max: MAX_OVERLAY_LAYERS,
            });
        }
        Ok(())
    }
}

impl Backend for OverlayBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError> {
        self.check_layers(lowers)?;
        let dir_abs = prepare_dir(lowers, dir)?;
        create_subdir(&dir_abs.join(UPPER))?;
        create_subdir(&dir_abs.join(WORK))?;
        Ok(self.describe(lowers, dir, &dir_abs, true))
    }

    fn view(&self, lowers: &[PathBuf], dir: &Path) -> Result<Snapshot, SnapshotError> {
        self.check_layers(lowers)?;
        let dir_abs = prepare_dir(lowers, dir)?;
        if lowers.is_empty() {
            create_subdir(&dir_abs.join(EMPTY))?;
        }
        Ok(self.describe(lowers, dir, &dir_abs, false))
    }

    fn open(
        &self,
        lowers: &[PathBuf],
        dir: &Path,
        writable: bool,
    ) -> Result<Snapshot, SnapshotError> {
        self.check_layers(lowers)?;
        let parts: &[&str] = match (writable, lowers.is_empty()) {
            (true, _) => &[UPPER, WORK],
            (false, true) => &[EMPTY],
            (false, false) => &[],
        };
        let dir_abs = open_dir(lowers, dir, parts)?;
        Ok(self.describe(lowers, dir, &dir_abs, writable))
    }

    fn diff(
        &self,
        snapshot: &Snapshot,
        out: &mut dyn Write,
        opts: &DiffOptions,
    ) -> Result<DiffReport, SnapshotError> {
        check_diffable(snapshot, NAME)?;
        let lowers = UnionView::new(snapshot.lowers.clone(), None, self.xattr);
        let opts = DiffOptions {
            xattr: self.xattr,
            ..*opts
        };
        diff::native(&snapshot.changes, &lowers, out, &opts).map_err(|source| SnapshotError::Diff {
            dir: snapshot.dir.clone(),
            source,
        })
    }

    fn remove(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        // overlayfs leaves `work/work` with mode 0: open it up so the directory can be removed
        // by an owner without CAP_DAC_OVERRIDE too.
        let inner = snapshot.changes.with_file_name(WORK).join("work");
        if snapshot.writable && inner.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
        }
        remove_dir(&snapshot, NAME)
    }
}

/// A snapshot that [`Backend::diff`] can read: writable and made by `backend`.
pub(super) fn check_diffable(
    snapshot: &Snapshot,
    backend: &'static str,
) -> Result<(), SnapshotError> {
    if snapshot.backend != backend {
        return Err(SnapshotError::WrongBackend {
            dir: snapshot.dir.clone(),
            made_by: snapshot.backend,
            backend,
        });
    }
    if !snapshot.writable {
        return Err(SnapshotError::NotWritable(snapshot.dir.clone()));
    }
    Ok(())
}
