//! Opening a store: its directories made, an older store's layout moved forward, leftovers of
//! interrupted work cleared.
//!
//! An older molde kept the OCI layout (`oci-layout`, `index.json`, `blobs/`) in the store root
//! itself, with its unpacked layers, holds and containers under `molde/` inside it: tools that
//! walk a layout whole (`oci-image-tool validate` opens every file) stopped at the device nodes
//! of unpacked layers. Now the layout has a directory of its own, `oci/`, beside `molde/`.
//! Opening an older store moves its three layout entries into `oci/`, each with one `rename`
//! (atomic), the `oci-layout` marker last, under the index lock: a kill between two renames
//! leaves every entry in exactly one place, and the next open moves what is left. Nothing
//! under `molde/` moves, so unpacked layers, containers (whose records name their lower
//! directories) and holds stay valid.

use std::fs;
use std::path::Path;

use super::index::empty_index;
use super::{Store, StoreError, StoreInner, io_err};
use crate::blob;
use crate::layout::Layout;
use std::sync::Arc;

impl Store {
    pub(super) fn open_with(
        layout: Layout,
        temp: Option<tempfile::TempDir>,
    ) -> Result<Store, StoreError> {
        for dir in [layout.tmp(), layout.layers(), layout.holds_dir()] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let store = Store(Arc::new(StoreInner {
            layout,
            _temp: temp,
        }));
        {
            let l = store.layout();
            let _g = store.index_lock()?;
            move_layout_forward(l)?;
            fs::create_dir_all(l.blobs()).map_err(io_err("creating", &l.blobs()))?;
            if !l.index().exists() {
                store.write_index(&empty_index())?;
            }
            if !l.oci_layout().exists() {
                blob::write_atomic(&l.oci_layout(), br#"{"imageLayoutVersion":"1.0.0"}"#)
                    .map_err(io_err("writing", &l.oci_layout()))?;
            }
            crate::holds::migrate(&l.holds(), &l.holds_dir())
                .map_err(io_err("moving the holds of", &l.holds()))?;
            blob::clear_leftovers(&l.tmp()).map_err(io_err("clearing", &l.tmp()))?;
            crate::unpack::clear_leftovers(l)?;
        }
        Ok(store)
    }
}

/// Move the layout an older molde kept in the root into [`Layout::oci_dir`]. The caller holds
/// the index lock. Each entry moves by one `rename`, so whatever a kill interrupts, every entry
/// is whole in one place; the next open finishes the move.
fn move_layout_forward(layout: &Layout) -> Result<(), StoreError> {
    let legacy = layout.legacy_layout_entries();
    if !legacy.iter().any(|p| exists(p)) {
        return Ok(());
    }
    let oci = layout.oci_dir();
    fs::create_dir_all(&oci).map_err(io_err("creating", &oci))?;
    for old in legacy {
        if !exists(&old) {
            continue;
        }
        let name = old.file_name().expect("legacy entries have names");
        let new = oci.join(name);
        if exists(&new) {
            // An older molde that only opened the store after the move made a fresh, empty
            // layout in the root again: nothing to keep.
            if !holds_nothing(&old) {
                return Err(StoreError::LayoutConflict { old, new });
            }
            remove_leftover(&old).map_err(io_err("removing", &old))?;
            continue;
        }
        fs::rename(&old, &new).map_err(io_err("moving into the store's oci/", &old))?;
        // The move is durable before the next entry's.
        blob::sync_dir(&oci).map_err(io_err("syncing", &oci))?;
        blob::sync_dir(layout.root()).map_err(io_err("syncing", layout.root()))?;
    }
    Ok(())
}

/// Whether a layout entry in the root is what an older molde writes when it opens a store
/// with no layout there: the `oci-layout` marker, an index without images, an empty
/// `blobs/sha256/`.
fn holds_nothing(entry: &Path) -> bool {
    match entry.file_name().and_then(|n| n.to_str()) {
        Some("oci-layout") => true,
        Some("index.json") => fs::read(entry)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("manifests")
                    .and_then(|m| m.as_array())
                    .map(Vec::is_empty)
            })
            .unwrap_or(false),
        Some("blobs") => fs::read_dir(entry).is_ok_and(|entries| {
            entries.flatten().all(|e| {
                e.file_name() == "sha256"
                    && fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none())
            })
        }),
        _ => false,
    }
}

/// Remove an entry [`holds_nothing`] found empty.
fn remove_leftover(entry: &Path) -> std::io::Result<()> {
    if fs::symlink_metadata(entry)?.is_dir() {
        let sha = entry.join("sha256");
        if exists(&sha) {
            fs::remove_dir(&sha)?;
        }
        fs::remove_dir(entry)
    } else {
        fs::remove_file(entry)
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
