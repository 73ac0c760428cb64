//! Flattened trees of deep images: the union of an image's layers as one directory.

use std::fs;
use std::path::PathBuf;

use molde_layerfs::OverlayXattr;

use super::unpack;
use crate::image::Image;
use crate::lock::{FileLock, LockKind};
use crate::store::trees::{remove_tree, tmp_path};
use crate::store::{Store, StoreError, io_err};

/// The layer count from which an image's containers mount a flattened tree of its stack
/// rather than one lower directory per layer.
pub const FLATTEN_MIN_LAYERS: usize = 16;

/// The flattened tree of `image`'s whole layer stack, made first if need be (its layers are
/// unpacked first), when the image has at least [`FLATTEN_MIN_LAYERS`] layers: the one lower
/// directory a container of it mounts. `None` for a shallower image. Treat it as read-only:
/// its files are the layers' files. Made in a temporary directory and renamed into place, so
/// it is whole or absent; kept as long as the stack's top layer is (GC).
pub fn flattened(store: &Store, image: &Image) -> Result<Option<PathBuf>, StoreError> {
    let chain_ids = image.chain_ids();
    let Some(top) = chain_ids
        .last()
        .filter(|_| chain_ids.len() >= FLATTEN_MIN_LAYERS)
    else {
        return Ok(None);
    };
    let layout = store.layout();
    let path = layout.flat(top);
    // GC waits while this holds the content lock: what is found, or made, stays meanwhile.
    let _content = store.content_lock(LockKind::Shared)?;
    if path.is_dir() {
        return Ok(Some(path));
    }
    let layers = unpack(store, image)?;
    let dir = layout.flats();
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let lock_path = dir.join(format!("{}.lock", top.hex()));
    let _lock = FileLock::acquire(&lock_path, LockKind::Exclusive)
        .map_err(io_err("locking", &lock_path))?;
    if path.is_dir() {
        return Ok(Some(path));
    }
    let tmp = tmp_path(&path);
    remove_tree(&tmp).map_err(io_err("removing", &tmp))?;
    let lowers = layers.into_iter().rev().map(|l| l.path).collect();
    let view =
        molde_layerfs::view::UnionView::new(lowers, None, OverlayXattr::for_current_process());
    if let Err(source) = view.link_to(&tmp) {
        let _ = remove_tree(&tmp);
        return Err(StoreError::Flatten { top: *top, source });
    }
    fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
    crate::blob::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
    Ok(Some(path))
}
