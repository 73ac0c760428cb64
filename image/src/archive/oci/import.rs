//! Import of an OCI image layout: from a directory, or from an oci-archive's tar (scanned once,
//! read in place); each blob checked against its descriptor's size and digest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use crate::archive::layers;
use crate::archive::scan::{self, Item, Scanned};
use crate::archive::{
    ArchiveError, DOCKER_MANIFEST, ImportOptions, ImportReport, ImportedImage, ImportedLayer, Seen,
    descriptor_tag, image_of, io_err, is_index, parse_digest, parse_json, parse_manifest,
    read_document, this_platform,
};
use crate::blob::{self, BlobError, Expected};
use crate::image::Image;
use crate::layer::Layer;
use crate::lock::LockKind;
use crate::reference::Reference;
use crate::store::{Store, StoreError};

use super::check_layout;

/// Where the blobs of an import come from.
trait Source {
    /// A small document (manifest, config, nested index), verified against its digest.
    fn document(&self, what: &str, digest: &Digest, size: u64) -> Result<Vec<u8>, ArchiveError>;
    /// Whether the blob can be had (from the input or the store).
    fn has(&self, digest: &Digest) -> bool;
    /// Put the blob in the store, verified; whether the store had it before this import.
    fn ingest(&self, what: &str, digest: &Digest, size: u64) -> Result<bool, ArchiveError>;
    /// Whether the store lacked the blob before this import (a streamed archive has put it
    /// there since: the import then leaves it unreferenced when it uses another blob).
    fn fresh(&self, digest: &Digest) -> bool;
}

fn check_size(what: &str, digest: &Digest, expected: u64, actual: u64) -> Result<(), ArchiveError> {
    if expected != actual {
        return Err(ArchiveError::Blob {
            what: what.to_owned(),
            source: BlobError::SizeMismatch {
                digest: *digest,
                expected,
                actual,
            },
        });
    }
    Ok(())
}

fn store_document(
    store: &Store,
    what: &str,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let f = store.open_blob(digest).map_err(|e| match e {
        StoreError::MissingBlob { digest, .. } => ArchiveError::MissingBlob {
            what: what.to_owned(),
            digest,
        },
        e => ArchiveError::Store(e),
    })?;
    let bytes = read_document(what, f)?;
    check_size(what, digest, size, bytes.len() as u64)?;
    Ok(bytes)
}

/// An OCI layout directory.
struct Dir<'a> {
    store: &'a Store,
    root: PathBuf,
}

impl Dir<'_> {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }
}

impl Source for Dir<'_> {
    fn document(&self, what: &str, digest: &Digest, size: u64) -> Result<Vec<u8>, ArchiveError> {
        let path = self.blob_path(digest);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return store_document(self.store, what, digest, size);
            }
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let bytes = read_document(what, f)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(ArchiveError::Blob {
                what: path.display().to_string(),
                source: BlobError::DigestMismatch {
                    expected: *digest,
                    actual,
                },
            });
        }
        check_size(
            &path.display().to_string(),
            digest,
            size,
            bytes.len() as u64,
        )?;
        Ok(bytes)
    }

    fn has(&self, digest: &Digest) -> bool {
        self.store.has_blob(digest) || self.blob_path(digest).is_file()
    }

    fn fresh(&self, digest: &Digest) -> bool {
        !self.store.has_blob(digest)
    }

    fn ingest(&self, what: &str, digest: &Digest, size: u64) -> Result<bool, ArchiveError> {
        if self.store.has_blob(digest) {
            return Ok(true);
        }
        let path = self.blob_path(digest);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ArchiveError::MissingBlob {
                    what: what.to_owned(),
                    digest: *digest,
                }
            } else {
                io_err("opening", &path)(e)
            }
        })?;
        let info = blob::ingest(
            self.store.layout(),
            io::BufReader::with_capacity(1 << 20, f),
            Some(Expected {
                digest: *digest,
                size: Some(size),
            }),
        )
        .map_err(|source| ArchiveError::Blob {
            what: path.display().to_string(),
            source,
        })?;
        Ok(info.existed)
    }
}

/// An archive already streamed into the store by [`scan::scan`].
struct Archived<'a> {
    store: &'a Store,
    scanned: &'a Scanned,
}

impl Source for Archived<'_> {
    fn document(&self, what: &str, digest: &Digest, size: u64) -> Result<Vec<u8>, ArchiveError> {
        // Blobs of the archive were verified against their names on the way in.
        store_document(self.store, what, digest, size)
    }

    fn has(&self, digest: &Digest) -> bool {
        self.scanned.blob_by_digest(digest).is_some() || self.store.has_blob(digest)
    }

    fn fresh(&self, digest: &Digest) -> bool {
        match self.scanned.blob_by_digest(digest) {
            Some(info) => !info.existed,
            None => !self.store.has_blob(digest),
        }
    }

    fn ingest(&self, what: &str, digest: &Digest, size: u64) -> Result<bool, ArchiveError> {
        if let Some(info) = self.scanned.blob_by_digest(digest) {
            check_size(what, digest, size, info.size)?;
            return Ok(info.existed);
        }
        if let Ok(meta) = fs::metadata(self.store.layout().blob(digest)) {
            check_size(what, digest, size, meta.len())?;
            return Ok(true);
        }
        Err(ArchiveError::MissingBlob {
            what: what.to_owned(),
            digest: *digest,
        })
    }
}

/// One image to import: checked, not yet stored.
struct Planned {
    image: Image,
    tag: Option<Reference>,
    /// Its manifest named foreign layers: it is written anew, with ordinary media types.
    rewrite: bool,
}

/// Pick the manifest of a nested index for this platform.
fn pick_platform(what: &str, index: &ImageIndex) -> Result<Descriptor, ArchiveError> {
    let (os, arch) = this_platform();
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| !is_index(d.media_type()))
        .collect();
    let matching = candidates.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
    });
    match (matching, candidates.as_slice()) {
        (Some(d), _) => Ok((*d).clone()),
        (None, [only]) if only.platform().is_none() => Ok((*only).clone()),
        _ => Err(ArchiveError::NoPlatform {
            what: what.to_owned(),
            os,
            arch,
        }),
    }
}

/// Check every image `index` names (tags, media types, manifests, configs, the invariant, that
/// every layer is at hand), then store their blobs, then add them all to the store's index.
fn import_index(
    store: &Store,
    source: &dyn Source,
    index: &ImageIndex,
    options: &ImportOptions,
) -> Result<ImportReport, ArchiveError> {
    let mut plan = Vec::new();
    for (i, d) in index.manifests().iter().enumerate() {
        let tag = descriptor_tag(d, options)?;
        let what = format!("index.json entry {i}");
        let d = if is_index(d.media_type()) {
            let digest = parse_digest(&what, d.digest().as_ref())?;
            let bytes = source.document(&what, &digest, d.size())?;
            let nested: ImageIndex = parse_json(&format!("index {digest}"), &bytes)?;
            pick_platform(&format!("index {digest}"), &nested)?
        } else {
            d.clone()
        };
        let mt = d.media_type();
        if !matches!(mt, MediaType::ImageManifest) && mt.to_string() != DOCKER_MANIFEST {
            return Err(ArchiveError::UnsupportedMediaType {
                what,
                media_type: mt.to_string(),
            });
        }
        let md = parse_digest(&what, d.digest().as_ref())?;
        let mwhat = format!("manifest {md}");
        let bytes = source.document(&what, &md, d.size())?;
        let (manifest, foreign) = parse_manifest(&mwhat, &bytes)?;
        let cd = manifest.config();
        let config_digest = parse_digest(&mwhat, cd.digest().as_ref())?;
        let config = source.document(&mwhat, &config_digest, cd.size())?;
        let image = image_of(&mwhat, md, d.size(), manifest, config_digest, &config)?;
        for l in image.layers() {
            if !source.has(&l.digest) {
                return Err(layers::missing(&mwhat, l.digest, &foreign));
            }
        }
        plan.push(Planned {
            image,
            tag,
            rewrite: !foreign.is_empty(),
        });
    }

    let mut seen = Seen::default();
    let mut report = ImportReport::default();
    let mut by_manifest: HashMap<Digest, usize> = HashMap::new();
    let mut entries: Vec<(Image, Option<Reference>)> = Vec::new();
    for p in &plan {
        let md = p.image.manifest_digest();
        if let Some(&at) = by_manifest.get(&md) {
            report.images[at].tags.extend(p.tag.clone());
            entries.push((report.images[at].image.clone(), p.tag.clone()));
            continue;
        }
        let what = format!("manifest {md}");
        let mut layers = Vec::new();
        for l in p.image.layers() {
            // The same tar under another compression: use the stored blob (by content).
            if source.fresh(&l.digest)
                && let Some(stored) = store.layer_by_diff_id(&l.diff_id)
            {
                layers.push(ImportedLayer {
                    layer: stored,
                    existed: true,
                });
                continue;
            }
            let existed = source.ingest(&what, &l.digest, l.size)?;
            layers::verify_diff_id(store, &what, l)?;
            layers.push(ImportedLayer {
                layer: *l,
                existed: seen.note(l.digest, existed),
            });
        }
        let config_size = p.image.manifest().config().size();
        source.ingest(&what, &p.image.id(), config_size)?;
        let image = if !p.rewrite
            && layers
                .iter()
                .zip(p.image.layers())
                .all(|(a, b)| a.layer == *b)
        {
            source.ingest("index.json", &md, p.image.manifest_size())?;
            p.image.clone()
        } else {
            let stored: Vec<Layer> = layers.iter().map(|l| l.layer).collect();
            store.write_manifest(p.image.id(), config_size, &stored)?
        };
        by_manifest.insert(md, report.images.len());
        entries.push((image.clone(), p.tag.clone()));
        report.images.push(ImportedImage {
            image,
            tags: p.tag.iter().cloned().collect(),
            layers,
        });
    }
    store.add_images(&entries)?;
    Ok(report)
}

/// Import every image of the OCI image layout at `dir` (with its tags). Each blob is checked
/// against its digest and size as it streams into the store; the images are added to the index
/// only once all their blobs are in. Manifests, configs and tags are checked before any layer
/// is read, so most bad input stores nothing at all.
pub fn import_dir(
    store: &Store,
    dir: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ArchiveError> {
    let what = dir.display().to_string();
    let layout = fs::read(dir.join("oci-layout")).ok();
    check_layout(&what, layout.as_deref())?;
    let index_path = dir.join("index.json");
    let f = File::open(&index_path).map_err(io_err("opening", &index_path))?;
    let index: ImageIndex =
        parse_json(&index_path.display().to_string(), &read_document(&what, f)?)?;
    let _content = store.content_lock(LockKind::Shared)?;
    let source = Dir {
        store,
        root: dir.to_owned(),
    };
    import_index(store, &source, &index, options)
}

/// Import every image of an oci-archive (a tar of an OCI image layout), streamed from
/// `reader`: no layer is held in memory.
pub fn import_archive(
    store: &Store,
    reader: impl Read,
    options: &ImportOptions,
) -> Result<ImportReport, ArchiveError> {
    let _content = store.content_lock(LockKind::Shared)?;
    let scanned = scan::scan(store, reader)?;
    import_scanned(store, &scanned, options)
}

pub(in crate::archive) fn import_scanned(
    store: &Store,
    scanned: &Scanned,
    options: &ImportOptions,
) -> Result<ImportReport, ArchiveError> {
    let doc = |p: &str| match scanned.get(p) {
        Some(Item::Doc(b)) => Some(b.as_slice()),
        _ => None,
    };
    check_layout("the archive", doc("oci-layout"))?;
    let index: ImageIndex = parse_json(
        "index.json",
        doc("index.json").ok_or_else(|| ArchiveError::Format {
            format: "an OCI image layout",
            reason: "the archive has no index.json".into(),
        })?,
    )?;
    import_index(store, &Archived { store, scanned }, &index, options)
}
