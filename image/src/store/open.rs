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
//! directories) and holds stay valid. An older molde that opens the store afterwards makes a
//! layout in the root again; what it holds is merged into `oci/` at the next open.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use oci_spec::image::ImageIndex;

use super::index::empty_index;
use super::{
    REF_NAME, Store, StoreError, StoreInner, canonical_json, desc_digest, io_err, ref_name,
};
use crate::blob;
use crate::layout::Layout;

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
            super::trees::clear_leftovers(l)?;
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
            // An older molde opened (or wrote to) the store after the move and made a layout
            // in the root again: what it holds joins the one in oci/.
            merge_into(&old, &new)?;
            continue;
        }
        fs::rename(&old, &new).map_err(io_err("moving into the store's oci/", &old))?;
        // The move is durable before the next entry's.
        blob::sync_dir(&oci).map_err(io_err("syncing", &oci))?;
        blob::sync_dir(layout.root()).map_err(io_err("syncing", layout.root()))?;
    }
    Ok(())
}

/// Merge a layout entry an older molde made in the root again into its counterpart in
/// `oci/`, then remove it: blobs move over (content-addressed: one already there is the same),
/// the index's images are added to the other's (a tag the other has stays as it is there; the
/// image it names here is added untagged), the `oci-layout` marker goes. Each step can be
/// repeated, so a kill midway leaves work the next open finishes.
fn merge_into(old: &Path, new: &Path) -> Result<(), StoreError> {
    match old.file_name().and_then(|n| n.to_str()) {
        Some("blobs") => {
            let (from, to) = (old.join("sha256"), new.join("sha256"));
            if exists(&from) {
                for entry in fs::read_dir(&from).map_err(io_err("reading", &from))? {
                    let entry = entry.map_err(io_err("reading", &from))?;
                    let target = to.join(entry.file_name());
                    if exists(&target) {
                        fs::remove_file(entry.path())
                    } else {
                        fs::rename(entry.path(), &target)
                    }
                    .map_err(io_err("moving into the store's oci/", &entry.path()))?;
                }
                blob::sync_dir(&to).map_err(io_err("syncing", &to))?;
                fs::remove_dir(&from).map_err(io_err("removing", &from))?;
            }
            fs::remove_dir(old).map_err(io_err("removing", old))
        }
        Some("index.json") => {
            let read = |p: &Path| -> Option<ImageIndex> {
                serde_json::from_slice(&fs::read(p).ok()?).ok()
            };
            let (Some(theirs), Some(mut ours)) = (read(old), read(new)) else {
                return Err(StoreError::LayoutConflict {
                    old: old.to_owned(),
                    new: new.to_owned(),
                });
            };
            let mut manifests = ours.manifests().clone();
            for mut d in theirs.manifests().iter().cloned() {
                if let Some(tag) = ref_name(&d)
                    && manifests.iter().any(|m| ref_name(m) == Some(tag))
                {
                    if let Some(a) = d.annotations().clone() {
                        let untagged: HashMap<_, _> =
                            a.into_iter().filter(|(k, _)| k != REF_NAME).collect();
                        d.set_annotations((!untagged.is_empty()).then_some(untagged));
                    }
                }
                let known = manifests
                    .iter()
                    .any(|m| desc_digest(m) == desc_digest(&d) && ref_name(m) == ref_name(&d));
                if !known {
                    manifests.push(d);
                }
            }
            ours.set_manifests(manifests);
            let bytes = canonical_json("index.json", &ours)?;
            blob::write_atomic(new, &bytes).map_err(io_err("writing", new))?;
            fs::remove_file(old).map_err(io_err("removing", old))
        }
        _ => fs::remove_file(old).map_err(io_err("removing", old)),
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
