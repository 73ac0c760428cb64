//! The build cache: a filesystem step's key is the sha256 of its parent state (the ChainID of
//! the layers so far and the config so far, which holds the environment), its normalized
//! instruction and, for `COPY`/`ADD`, the digest of its content manifest (path, type, mode,
//! owner, content digest, link target of every entry; never mtimes). Entries live in the store,
//! `<store>/molde/build-cache/<key>`, one small JSON file each, naming the layer (or none, for
//! a `WORKDIR` that found its directory) and the history entry. A hit whose layer blob is gone
//! (collected) is a miss, and [`prune`] removes such entries.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use molde_image::{Layer, LayerMediaType, Store};
use molde_layerfs::Digest;
use serde::{Deserialize, Serialize};

/// What a cached step made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheEntry {
    /// The layer, if the step made one.
    pub layer: Option<Layer>,
    /// The history's `created_by`.
    pub created_by: String,
    /// The history's `created` (RFC 3339).
    pub created: String,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    layer: Option<LayerOnDisk>,
    created_by: String,
    created: String,
}

#[derive(Serialize, Deserialize)]
struct LayerOnDisk {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
}

/// The cache directory of `store`.
pub(crate) fn dir(store: &Store) -> PathBuf {
    store.layout().state().join("build-cache")
}

/// The key of a step: parent state, instruction, content manifest.
pub(crate) fn key(parent: &Digest, instruction: &str, manifest: Option<&Digest>) -> Digest {
    let mut text = format!("molde-build-cache-v1\nparent {parent}\ninstruction {instruction}\n");
    if let Some(m) = manifest {
        text += &format!("content {m}\n");
    }
    Digest::of(text.as_bytes())
}

/// The entry under `key`, if there is one and its layer blob is still in the store.
pub(crate) fn lookup(store: &Store, key: &Digest) -> Option<CacheEntry> {
    let bytes = fs::read(dir(store).join(key.hex())).ok()?;
    let d: OnDisk = serde_json::from_slice(&bytes).ok()?;
    let layer = match d.layer {
        None => None,
        Some(l) => {
            let layer = Layer {
                digest: l.digest.parse().ok()?,
                diff_id: l.diff_id.parse().ok()?,
                size: l.size,
                media_type: LayerMediaType::parse(&l.media_type)?,
            };
            if !store.has_blob(&layer.digest) {
                return None;
            }
            Some(layer)
        }
    };
    Some(CacheEntry {
        layer,
        created_by: d.created_by,
        created: d.created,
    })
}

/// Record `entry` under `key` (atomically: a reader sees the old entry or the new one).
pub(crate) fn store_entry(store: &Store, key: &Digest, entry: &CacheEntry) -> io::Result<()> {
    let d = OnDisk {
        layer: entry.layer.map(|l| LayerOnDisk {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.as_str().to_owned(),
        }),
        created_by: entry.created_by.clone(),
        created: entry.created.clone(),
    };
    let dir = dir(store);
    fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(&serde_json::to_vec(&d).map_err(io::Error::other)?)?;
    tmp.persist(dir.join(key.hex())).map_err(|e| e.error)?;
    Ok(())
}

/// The image a whole stage made, recorded under `key` (the stage's final state): a rebuild
/// whose every step hit the cache finds it and commits nothing.
pub(crate) fn lookup_image(store: &Store, key: &Digest) -> Option<Digest> {
    let e = lookup(store, key)?;
    let d: Digest = e.created_by.strip_prefix("image ")?.parse().ok()?;
    store.has_blob(&d).then_some(d)
}

/// Record that the stage whose final state is `key` made the image `manifest`.
pub(crate) fn store_image(store: &Store, key: &Digest, manifest: &Digest) -> io::Result<()> {
    store_entry(
        store,
        key,
        &CacheEntry {
            layer: None,
            created_by: format!("image {manifest}"),
            created: String::new(),
        },
    )
}

/// Remove the entries that can never hit again: those whose layer blob is gone from the store
/// (GC collected it once no image used it) and those that cannot be read as an entry. Files
/// being written (`NamedTempFile`s, `.tmp*`) are left alone. Returns how many went.
pub(crate) fn prune(store: &Store) -> io::Result<usize> {
    let dir = dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let is_key = name
            .to_str()
            .is_some_and(|n| format!("sha256:{n}").parse::<Digest>().is_ok());
        if !is_key {
            continue;
        }
        let dead = match fs::read(entry.path()) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                // Decided on what was read: a blob that is gone (or a layer that names none).
                Ok(d) => {
                    let gone = |s: &str| s.parse::<Digest>().map_or(true, |d| !store.has_blob(&d));
                    match (&d.layer, d.created_by.strip_prefix("image ")) {
                        (Some(l), _) => gone(&l.digest),
                        (None, Some(manifest)) => gone(manifest),
                        (None, None) => false,
                    }
                }
                Err(_) => true,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if dead {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
