//! Unpacked layers: each layer stack prefix is unpacked once, in overlay format, under its
//! ChainID (`molde/layers/<chainid>/`), and shared by every image with that prefix. These
//! directories are the lowerdirs of containers. The only caller of
//! [`molde_layerfs::apply::apply`] in this crate.
//!
//! A deep image (at least [`FLATTEN_MIN_LAYERS`] layers) also gets a *flattened* tree of its
//! whole stack (`molde/flat/<top chainid>/`, made on first use by [`flattened`]): the union
//! of its layers as one directory, whiteouts applied, regular files hard links to the
//! unpacked layers' files (no data copied). A container mounts it as its only lower
//! directory: the kernel's cost of an overlay mount, of each lookup and of the mount's end
//! grows with the number of lower layers (500 layers: ~9 ms to mount, ~3 ms to tear down
//! here, against well under a millisecond for one).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use molde_layerfs::apply::{ApplyOptions, apply};
use molde_layerfs::idmap::IdMaps;
use molde_layerfs::userns;
use molde_layerfs::{Digest, Format, OverlayXattr};

use crate::image::Image;
use crate::lock::{FileLock, LockKind};
use crate::store::trees::{lock_path, remove_tree, tmp_path};
use crate::store::{Store, StoreError, io_err};

mod flatten;
mod streamed;

pub use flatten::{FLATTEN_MIN_LAYERS, flattened};
pub use streamed::{StagedLayer, StreamedLayer, store_and_unpack};

/// One layer of an image, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// The ChainID of the stack up to and including this layer.
    pub chain_id: Digest,
    /// The layer blob's digest.
    pub digest: Digest,
    /// The overlay-format directory (a lowerdir).
    pub path: PathBuf,
    /// Whether it was already unpacked (shared with another image), like docker's
    /// "Already exists".
    pub existed: bool,
}

/// Unpack every layer of `image` not yet unpacked. Returns them bottom first.
pub fn unpack(store: &Store, image: &Image) -> Result<Vec<UnpackedLayer>, StoreError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let layout = store.layout();
    let chain_ids = image.chain_ids();
    // Layers are unpacked bottom first, each renamed into place (and the rename synced)
    // before the next begins, and GC keeps every prefix of a stack it keeps (a ChainID
    // names its whole prefix): when the top layer is unpacked, all are. One stat instead of
    // one per layer (and no per-layer lock) for an image already unpacked.
    if let Some(top) = chain_ids.last()
        && layout.layer(top).is_dir()
    {
        return Ok(image
            .layers()
            .iter()
            .zip(chain_ids)
            .map(|(layer, chain_id)| UnpackedLayer {
                path: layout.layer(&chain_id),
                chain_id,
                digest: layer.digest,
                existed: true,
            })
            .collect());
    }
    image
        .layers()
        .iter()
        .zip(chain_ids)
        .map(|(layer, chain_id)| unpack_layer(store, layer, chain_id))
        .collect()
}

/// Unpack one layer (its blob in the store) as the top of the stack `chain_id` names,
/// unless that is unpacked already. A layer's overlay-format directory does not depend on
/// the layers below it, so layers may be unpacked in any order as their blobs arrive (a
/// pull does), with one rule: the *top* layer of an image last, once every layer below it
/// is in place ([`unpack`] takes a present top as proof that the whole stack is). Hold a
/// [`Store::pin`] guard while the image is not yet in the index, or GC may free it.
pub fn unpack_layer(
    store: &Store,
    layer: &crate::layer::Layer,
    chain_id: Digest,
) -> Result<UnpackedLayer, StoreError> {
    let layout = store.layout();
    let path = layout.layer(&chain_id);
    let mut existed = path.is_dir();
    if !existed {
        let lock_path = lock_path(layout, &chain_id);
        let _lock = FileLock::acquire(&lock_path, LockKind::Exclusive)
            .map_err(io_err("locking", &lock_path))?;
        existed = path.is_dir();
        if !existed {
            unpack_one(store, layer.digest, layer.diff_id, &path)?;
        }
    }
    Ok(UnpackedLayer {
        chain_id,
        digest: layer.digest,
        path,
        existed,
    })
}

fn unpack_one(
    store: &Store,
    digest: Digest,
    diff_id: Digest,
    path: &Path,
) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    if tmp.exists() {
        remove_tree(&tmp).map_err(io_err("removing", &tmp))?;
    }
    let blob = store.open_blob(&digest)?;
    let opts =
        ApplyOptions::for_current_process(Format::Overlay(OverlayXattr::for_current_process()));
    let result = apply(io::BufReader::with_capacity(1 << 20, blob), &tmp, &opts);
    let report = match result {
        Ok(r) => r,
        Err(source) => {
            let _ = remove_tree(&tmp);
            return Err(StoreError::Unpack {
                layer: digest,
                source,
            });
        }
    };
    if report.diff_id != diff_id {
        let _ = remove_tree(&tmp);
        return Err(StoreError::DiffIdMismatch {
            layer: digest,
            expected: diff_id,
            actual: report.diff_id,
        });
    }
    if let Err(e) = restore_owners(&tmp) {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    crate::blob::sync_dir(&store.layout().layers()).map_err(io_err("syncing", path))
}

/// Rootless with subordinate ids: the owners the tar recorded (kept in an xattr where the
/// caller could not set them) made real through the maps containers run with.
pub(crate) fn restore_owners(tree: &Path) -> Result<(), StoreError> {
    match IdMaps::subordinate_for_current_process() {
        Some(maps) => userns::restore_owners(maps, tree)
            .map_err(io_err("giving their recorded owners to the files of", tree)),
        None => Ok(()),
    }
}
