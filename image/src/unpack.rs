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

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use molde_layerfs::apply::{ApplyOptions, apply};
use molde_layerfs::idmap::IdMaps;
use molde_layerfs::userns;
use molde_layerfs::{Digest, Format, OverlayXattr};

use crate::image::Image;
use crate::layout::Layout;
use crate::lock::{FileLock, LockKind};
use crate::store::{Store, StoreError, io_err};

pub use crate::streamed::{StagedLayer, StreamedLayer, store_and_unpack};

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

/// Remove flattened trees whose stack is not in `keep`, and leftovers of interrupted ones.
/// The caller holds the content lock exclusively.
pub(crate) fn collect_flats(layout: &Layout, keep: &BTreeSet<Digest>) -> Result<(), StoreError> {
    let dir = layout.flats();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                op: "reading",
                path: dir,
                source: e,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(io_err("reading", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = name.strip_suffix(".tmp").unwrap_or(&name);
        if name.ends_with(".lock") {
            continue;
        }
        let kept = format!("sha256:{hex}")
            .parse::<Digest>()
            .is_ok_and(|d| keep.contains(&d) && !name.ends_with(".tmp"));
        if !kept {
            remove_tree(&entry.path()).map_err(io_err("removing", &entry.path()))?;
            let _ = fs::remove_file(dir.join(format!("{hex}.lock")));
        }
    }
    Ok(())
}

pub(crate) fn lock_path(layout: &Layout, chain_id: &Digest) -> PathBuf {
    layout.layers().join(format!("{}.lock", chain_id.hex()))
}

pub(crate) fn tmp_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
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

/// Remove half-unpacked layers whose writer is gone.
pub(crate) fn clear_leftovers(layout: &Layout) -> Result<(), StoreError> {
    let dir = layout.layers();
    for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
        let entry = entry.map_err(io_err("reading", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".tmp") else {
            continue;
        };
        let lock = dir.join(format!("{hex}.lock"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_err("opening", &lock))?;
        if FileLock::try_exclusive(file)
            .map_err(io_err("locking", &lock))?
            .is_some()
        {
            remove_tree(&entry.path()).map_err(io_err("removing", &entry.path()))?;
        }
    }
    Ok(())
}

/// The ChainIDs of all unpacked layers.
pub(crate) fn unpacked(layout: &Layout) -> Result<Vec<Digest>, StoreError> {
    let dir = layout.layers();
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
        let entry = entry.map_err(io_err("reading", &dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
        {
            out.push(d);
        }
    }
    Ok(out)
}

/// Remove unpacked layers not in `keep`; returns their ChainIDs and the bytes freed.
/// The caller holds the GC lock exclusively.
pub(crate) fn collect(
    layout: &Layout,
    keep: &BTreeSet<Digest>,
) -> Result<(Vec<Digest>, u64), StoreError> {
    let mut freed = Vec::new();
    let mut bytes = 0;
    for chain in unpacked(layout)? {
        if keep.contains(&chain) {
            continue;
        }
        let path = layout.layer(&chain);
        bytes += tree_size(&path);
        remove_tree(&path).map_err(io_err("removing", &path))?;
        let _ = fs::remove_file(lock_path(layout, &chain));
        freed.push(chain);
    }
    Ok((freed, bytes))
}

fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && meta.nlink() >= 1 {
            total += meta.len();
        }
    }
    total
}

/// Remove a tree, making directories writable first where needed (a layer may hold
/// read-only directories).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            use std::os::unix::fs::PermissionsExt;
            let mut stack = vec![path.to_owned()];
            while let Some(p) = stack.pop() {
                if let Ok(meta) = fs::symlink_metadata(&p)
                    && meta.is_dir()
                {
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                    if let Ok(rd) = fs::read_dir(&p) {
                        stack.extend(rd.flatten().map(|e| e.path()));
                    }
                }
            }
            match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                // Owned by subordinate ids (given their owners by `restore_owners`).
                Err(_) => match IdMaps::subordinate_for_current_process() {
                    Some(maps) => userns::remove_tree(maps, path).map_err(|_| first),
                    None => Err(first),
                },
            }
        }
    }
}
