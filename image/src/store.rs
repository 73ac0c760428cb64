//! [`Store`]: a content store that is itself an OCI image layout, shared by threads and
//! processes under file locks. See [`crate::layout`] for the files on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_layerfs::Digest;
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType,
};
use serde::Serialize;

use crate::blob::{self, BlobError, BlobInfo, Expected};
use crate::builder::ImageBuilder;
use crate::image::{Image, ImageError};
use crate::layer::{Layer, LayerMediaType};
use crate::layout::{self, Layout};
use crate::lock::{FileLock, LockKind};
use crate::reference::{Reference, ReferenceError};

/// The annotation that carries a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The largest manifest or config molde reads (they are small JSON documents).
pub(crate) const MAX_DOCUMENT: u64 = 8 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Storing a blob failed (digest or size mismatch, read error...).
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A JSON document could not be read or written.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest and config do not make a valid image.
    #[error("image {manifest}: {source}")]
    Image {
        /// The manifest digest.
        manifest: Digest,
        /// What is wrong.
        #[source]
        source: ImageError,
    },
    /// A document names a blob the store does not have.
    #[error("{what} names blob {digest}, which is missing")]
    MissingBlob {
        /// Who names it.
        what: String,
        /// The missing blob.
        digest: Digest,
    },
    /// A document is not of a media type molde handles.
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Which document.
        what: String,
        /// The media type found.
        media_type: String,
    },
    /// A reference is invalid.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Nothing matches the name, tag, id or prefix given.
    #[error("no image {0:?} in the store")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {prefix:?} is ambiguous: {candidates:?}")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// The ids it matches.
        candidates: Vec<Digest>,
    },
    /// The image is held and cannot be removed.
    #[error("image {image} is in use: held by {}", holds.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", "))]
    Held {
        /// The image's manifest digest.
        image: Digest,
        /// Its holds.
        holds: Vec<Hold>,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        /// The layer's digest.
        layer: Digest,
        /// The cause.
        #[source]
        source: molde_layerfs::apply::ApplyError,
    },
    /// Flattening an image's layer stack into one lower directory failed.
    #[error("flattening the layers of {top} into one directory: {source}")]
    Flatten {
        /// The ChainID of the stack.
        top: Digest,
        /// The cause.
        #[source]
        source: molde_layerfs::view::ViewError,
    },
    /// A layer's content does not match the DiffID its image declares.
    #[error("layer {layer}: DiffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The layer's digest.
        layer: Digest,
        /// The DiffID declared.
        expected: Digest,
        /// The DiffID of the content.
        actual: Digest,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A persistent hold (a lease) on an image: while it exists the image cannot be removed or
/// pruned, and nothing it reaches is collected. Holds outlive the process that took them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The hold's name, unique in the store (e.g. a container id).
    pub name: String,
    /// The manifest digest of the held image.
    pub image: Digest,
    /// When it was taken (RFC 3339).
    pub created: String,
}

/// One image in a listing, like a row of `docker images`.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The image.
    pub image: Image,
    /// Its tags, familiar form, sorted.
    pub tags: Vec<String>,
    /// The total size of its layer blobs.
    pub size: u64,
    /// When it was created.
    pub created: Option<String>,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// Only the tag was removed: the image has other tags.
    Untagged(String),
    /// The image (manifest digest) left the index; its blobs go at the next GC.
    Deleted(Digest),
}

/// What [`Store::gc`] freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Unpacked layers deleted (their ChainIDs).
    pub layers: Vec<Digest>,
    /// Bytes reclaimed (blob sizes plus unpacked file sizes).
    pub bytes: u64,
}

/// A layer blob added to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedLayer {
    /// The layer.
    pub layer: Layer,
    /// Whether its blob was already there.
    pub existed: bool,
}

/// A shared hold on the store's content lock, from [`Store::pin`]: while any exists,
/// [`Store::gc`] (in any thread or process) waits, so nothing is collected. Released when
/// dropped.
#[derive(Debug)]
#[must_use = "the content is pinned only while the guard is alive"]
pub struct ContentGuard {
    _lock: FileLock,
}

/// The content store. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store(Arc<StoreInner>);

#[derive(Debug)]
struct StoreInner {
    layout: Layout,
    _temp: Option<tempfile::TempDir>,
}

impl Store {
    /// Open (creating if needed) the store at `root`, clearing leftovers of interrupted work.
    /// The root is an OCI image layout: skopeo and umoci read its tagged images in place.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// assert!(dir.path().join("oci-layout").is_file());
    /// let image = store.commit(ImageBuilder::new().cmd(["sh"]))?;
    /// store.tag(&image, "shell:1")?;
    /// drop(store);
    ///
    /// // Another open (or another process) sees the same images.
    /// let again = Store::open(dir.path())?;
    /// assert_eq!(again.resolve("shell:1")?.id(), image.id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Self::open_with(Layout::new(root), None)
    }

    /// Open the store at the default root ([`layout::default_root`]).
    pub fn open_default() -> Result<Store, StoreError> {
        Self::open(layout::default_root())
    }

    /// A new store in a temporary directory, deleted when the last clone is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::Store;
    ///
    /// let store = Store::temporary()?;
    /// let root = store.root().to_owned();
    /// let added = store.add_layer(&[0u8; 1024][..])?; // an empty tar: two zero blocks
    /// assert!(!added.existed);
    /// assert!(store.add_layer(&[0u8; 1024][..])?.existed);
    /// drop(store);
    /// assert!(!root.exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn temporary() -> Result<Store, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("molde-store-")
            .tempdir()
            .map_err(io_err("creating temporary store in", &std::env::temp_dir()))?;
        Self::open_with(Layout::new(dir.path()), Some(dir))
    }

    fn open_with(layout: Layout, temp: Option<tempfile::TempDir>) -> Result<Store, StoreError> {
        for dir in [
            layout.blobs(),
            layout.tmp(),
            layout.layers(),
            layout.holds_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let store = Store(Arc::new(StoreInner {
            layout,
            _temp: temp,
        }));
        {
            let l = store.layout();
            let _g = store.index_lock()?;
            if !l.oci_layout().exists() {
                blob::write_atomic(&l.oci_layout(), br#"{"imageLayoutVersion":"1.0.0"}"#)
                    .map_err(io_err("writing", &l.oci_layout()))?;
            }
            if !l.index().exists() {
                store.write_index(&empty_index())?;
            }
            crate::holds::migrate(&l.holds(), &l.holds_dir())
                .map_err(io_err("moving the holds of", &l.holds()))?;
            blob::clear_leftovers(&l.tmp()).map_err(io_err("clearing", &l.tmp()))?;
            crate::unpack::clear_leftovers(l)?;
        }
        Ok(store)
    }

    /// The store root (an OCI image layout directory).
    pub fn root(&self) -> &Path {
        self.0.layout.root()
    }

    /// The paths of this store.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub(crate) fn index_lock(&self) -> Result<FileLock, StoreError> {
        let p = self.layout().index_lock();
        FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", &p))
    }

    /// Held shared by anything adding content, exclusively by GC.
    pub(crate) fn content_lock(&self, kind: LockKind) -> Result<FileLock, StoreError> {
        let p = self.layout().gc_lock();
        FileLock::acquire(&p, kind).map_err(io_err("locking", &p))
    }

    /// Keep [`Store::gc`] away until the guard is dropped.
    ///
    /// Each store call that adds content holds the content lock only while it runs, and GC
    /// frees every blob no image in the index reaches. Work done in several calls (add layer
    /// blobs with [`Store::add_layer`] or [`Store::ingest_blob`], then [`Store::commit`] or
    /// [`Store::register`] the image naming them) must therefore hold a guard from before the
    /// first call until the image is in the index; otherwise a GC in between frees the fresh
    /// blobs and the commit fails with [`StoreError::MissingBlob`]. Guards are shared: many
    /// writers hold one at once. Do not call [`Store::gc`] while holding one (it would wait
    /// for itself).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let store = Store::temporary()?;
    /// let image = {
    ///     let _pin = store.pin()?;
    ///     let layer = store.add_layer(&[0u8; 1024][..])?.layer; // an empty tar
    ///     store.commit(ImageBuilder::new().layer(layer, "empty"))?
    /// }; // GC may run again from here; the image is in the index and keeps its layer.
    /// store.gc()?;
    /// assert!(store.has_blob(&image.layers()[0].digest));
    /// # Ok(())
    /// # }
    /// ```
    pub fn pin(&self) -> Result<ContentGuard, StoreError> {
        Ok(ContentGuard {
            _lock: self.content_lock(LockKind::Shared)?,
        })
    }

    // ---- blobs ----

    /// Stream `reader` into the store as a blob, verifying it against `expected` if given.
    pub fn ingest_blob(
        &self,
        reader: impl Read,
        expected: Option<Expected>,
    ) -> Result<BlobInfo, StoreError> {
        let _g = self.content_lock(LockKind::Shared)?;
        Ok(blob::ingest(self.layout(), reader, expected)?)
    }

    /// Whether the store has this blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.layout().blob(digest).exists()
    }

    /// Open a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.layout().blob(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    what: "a read".into(),
                    digest: *digest,
                }
            } else {
                StoreError::Io {
                    op: "opening",
                    path: p.clone(),
                    source: e,
                }
            }
        })
    }

    fn read_document(&self, what: &str, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(digest).map_err(|e| match e {
            StoreError::MissingBlob { digest, .. } => StoreError::MissingBlob {
                what: what.to_owned(),
                digest,
            },
            e => e,
        })?;
        let mut buf = Vec::new();
        f.take(MAX_DOCUMENT)
            .read_to_end(&mut buf)
            .map_err(io_err("reading", &self.layout().blob(digest)))?;
        Ok(buf)
    }

    /// Add a layer blob (a tar, gzip or zstd; compression found from its magic bytes). The
    /// DiffID is computed by decompressing the stored blob; memory does not grow with its size.
    pub fn add_layer(&self, reader: impl Read) -> Result<AddedLayer, StoreError> {
        let _g = self.content_lock(LockKind::Shared)?;
        let info = blob::ingest(self.layout(), reader, None)?;
        let path = self.layout().blob(&info.digest);
        let f = File::open(&path).map_err(io_err("opening", &path))?;
        let (compression, plain) =
            molde_layerfs::compression::decompress(f).map_err(io_err("decompressing", &path))?;
        let (diff_id, _) = Digest::of_reader(plain).map_err(io_err("decompressing", &path))?;
        Ok(AddedLayer {
            layer: Layer {
                digest: info.digest,
                diff_id,
                size: info.size,
                media_type: LayerMediaType::from_compression(compression),
            },
            existed: info.existed,
        })
    }

    // ---- images ----

    /// Write the image a builder describes (its layer blobs must be in the store) and add it
    /// to the index, untagged. Returns the new image.
    pub fn commit(&self, builder: ImageBuilder) -> Result<Image, StoreError> {
        let _g = self.content_lock(LockKind::Shared)?;
        let image = self.write_image(builder)?;
        self.add_to_index(&image, None)?;
        Ok(image)
    }

    /// Write the config and manifest blobs of the image a builder describes, without adding
    /// it to the index. The caller holds the content lock (shared).
    pub(crate) fn write_image(&self, builder: ImageBuilder) -> Result<Image, StoreError> {
        let docker = builder.docker_fields().clone();
        let (config, layers) = builder.into_config();
        for l in &layers {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::MissingBlob {
                    what: "the image being committed".into(),
                    digest: l.digest,
                });
            }
        }
        let config_bytes = if docker.is_empty() {
            canonical_json("image config", &config)?
        } else {
            let err = |source| StoreError::Json {
                what: "image config".into(),
                source,
            };
            let mut doc = serde_json::to_value(&config).map_err(err)?;
            if let Some(run) = doc.get_mut("config").and_then(|c| c.as_object_mut()) {
                run.extend(docker);
            }
            canonical_json("image config", &doc)?
        };
        let cfg = blob::ingest_bytes(self.layout(), &config_bytes)?;
        let (manifest, manifest_bytes) = manifest_for(cfg.digest, cfg.size, &layers)?;
        let m = blob::ingest_bytes(self.layout(), &manifest_bytes)?;
        Image::from_documents(m.digest, m.size, manifest, cfg.digest, config)
            .map(|i| i.with_docker_fields(&config_bytes))
            .map_err(|source| StoreError::Image {
                manifest: m.digest,
                source,
            })
    }

    /// Add several images (each with an optional tag) to the index in one atomic update: all
    /// of them appear, or none does. Their blobs must already be in the store.
    pub(crate) fn add_images(
        &self,
        images: &[(Image, Option<Reference>)],
    ) -> Result<(), StoreError> {
        for (image, _) in images {
            let md = image.manifest_digest();
            for d in [md, image.id()]
                .into_iter()
                .chain(image.layers().iter().map(|l| l.digest))
            {
                if !self.has_blob(&d) {
                    return Err(StoreError::MissingBlob {
                        what: format!("manifest {md}"),
                        digest: d,
                    });
                }
            }
        }
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        for (image, tag) in images {
            index_add(&mut index, image, tag.as_ref());
        }
        self.write_index(&index)
    }

    /// Add a stored manifest to the index (optionally with a tag) and return its image. The
    /// manifest, its config and all its layer blobs must already be in the store.
    pub fn register(&self, manifest: Digest, tag: Option<&Reference>) -> Result<Image, StoreError> {
        // GC must not free the blobs between the check below and the index update.
        let _g = self.content_lock(LockKind::Shared)?;
        let image = self.load(manifest)?;
        for l in image.layers() {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::MissingBlob {
                    what: format!("manifest {manifest}"),
                    digest: l.digest,
                });
            }
        }
        self.add_to_index(&image, tag)?;
        Ok(image)
    }

    fn add_to_index(&self, image: &Image, tag: Option<&Reference>) -> Result<(), StoreError> {
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        let before = index.clone();
        index_add(&mut index, image, tag);
        if index == before {
            // Already there (a rebuilt image, a tag set again): nothing to write or sync.
            return Ok(());
        }
        self.write_index(&index)
    }

    /// Load the image with this manifest digest from its blobs.
    pub fn load(&self, manifest_digest: Digest) -> Result<Image, StoreError> {
        let what = format!("manifest {manifest_digest}");
        let bytes = self.read_document("the index", &manifest_digest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: what.clone(),
                source,
            })?;
        if let Some(mt) = manifest.media_type()
            && !matches!(mt, MediaType::ImageManifest)
            && mt.to_string() != "application/vnd.docker.distribution.manifest.v2+json"
        {
            return Err(StoreError::UnsupportedMediaType {
                what,
                media_type: mt.to_string(),
            });
        }
        let cmt = manifest.config().media_type().to_string();
        if cmt != MediaType::ImageConfig.to_string()
            && cmt != "application/vnd.docker.container.image.v1+json"
        {
            return Err(StoreError::UnsupportedMediaType {
                what: format!("config of {what}"),
                media_type: cmt,
            });
        }
        let config_digest: Digest =
            manifest
                .config()
                .digest()
                .as_ref()
                .parse()
                .map_err(|source| StoreError::Image {
                    manifest: manifest_digest,
                    source: ImageError::BadDigest {
                        what: "config digest".into(),
                        source,
                    },
                })?;
        let cbytes = self.read_document(&what, &config_digest)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&cbytes).map_err(|source| StoreError::Json {
                what: format!("config {config_digest}"),
                source,
            })?;
        Image::from_documents(
            manifest_digest,
            bytes.len() as u64,
            manifest,
            config_digest,
            config,
        )
        .map(|i| i.with_docker_fields(&cbytes))
        .map_err(|source| StoreError::Image {
            manifest: manifest_digest,
            source,
        })
    }

    // ---- index ----

    pub(crate) fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let p = self.layout().index();
        let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: p.display().to_string(),
            source,
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let p = self.layout().index();
        let bytes = canonical_json("index.json", index)?;
        blob::write_atomic(&p, &bytes).map_err(io_err("writing", &p))
    }

    /// Every image in the index with its tags (manifest digest -> tags).
    fn entries(&self) -> Result<BTreeMap<Digest, Vec<String>>, StoreError> {
        let index = self.read_index()?;
        let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for d in index.manifests() {
            if let Some(md) = desc_digest(d) {
                let tags = out.entry(md).or_default();
                if let Some(t) = ref_name(d) {
                    tags.push(t.to_owned());
                }
            }
        }
        for tags in out.values_mut() {
            tags.sort();
        }
        Ok(out)
    }

    // ---- tags ----

    /// Tag `image` as `reference` (moving the tag if another image had it).
    pub fn tag(&self, image: &Image, reference: &str) -> Result<Reference, StoreError> {
        let r = Reference::parse(reference)?;
        if r.tag().is_none() {
            return Err(StoreError::NotFound(format!(
                "{reference} (a tag needs name:tag, not a digest)"
            )));
        }
        let tag_ref = Reference::parse(&format!(
            "{}:{}",
            r.familiar_name(),
            r.tag().unwrap_or("latest")
        ))?;
        self.add_to_index(image, Some(&tag_ref))?;
        Ok(tag_ref)
    }

    /// Remove a tag; the image stays (untagged if it was its last tag).
    pub fn untag(&self, reference: &str) -> Result<Image, StoreError> {
        let r = Reference::parse(reference)?;
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        let name = r.to_string();
        let md = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name.as_str()))
            .and_then(desc_digest)
            .ok_or_else(|| StoreError::NotFound(reference.to_owned()))?;
        remove_tag(&mut index, &name);
        if !index.manifests().iter().any(|d| desc_digest(d) == Some(md)) {
            let image = self.load(md)?;
            push_manifest(&mut index, index_entry(&image, None));
        }
        self.write_index(&index)?;
        self.load(md)
    }

    /// Find an image by tag (`name:tag`), digest reference (`name@sha256:...`), id or
    /// manifest digest (`sha256:...`), or a unique prefix of an id or manifest digest (at
    /// least 4 hex digits, or any length after `sha256:`).
    pub fn resolve(&self, what: &str) -> Result<Image, StoreError> {
        let entries = self.entries()?;
        if let Ok(d) = what.parse::<Digest>() {
            if entries.contains_key(&d) {
                return self.load(d);
            }
            return self.by_id_prefix(&entries, &d.hex(), what);
        }
        // A bare prefix needs 4 hex digits (shorter ones read as names); with `sha256:` any
        // length will do.
        let (hex, min) = match what.strip_prefix("sha256:") {
            Some(h) => (h, 1),
            None => (what, 4),
        };
        let is_hex = hex.len() >= min && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let as_ref = Reference::parse(what);
        if let Ok(r) = &as_ref {
            if let Some(d) = r.digest() {
                return if entries.contains_key(&d) {
                    self.load(d)
                } else {
                    Err(StoreError::NotFound(what.to_owned()))
                };
            }
            let name = r.to_string();
            if let Some((md, _)) = entries.iter().find(|(_, tags)| tags.contains(&name)) {
                return self.load(*md);
            }
        }
        if is_hex {
            return self.by_id_prefix(&entries, hex, what);
        }
        match as_ref {
            Ok(_) => Err(StoreError::NotFound(what.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    fn by_id_prefix(
        &self,
        entries: &BTreeMap<Digest, Vec<String>>,
        hex: &str,
        what: &str,
    ) -> Result<Image, StoreError> {
        let mut found: BTreeMap<Digest, Image> = BTreeMap::new();
        for md in entries.keys() {
            let image = self.load(*md)?;
            if image.id().hex().starts_with(hex) || md.hex().starts_with(hex) {
                found.insert(image.id(), image);
            }
        }
        match found.len() {
            0 => Err(StoreError::NotFound(what.to_owned())),
            1 => Ok(found.into_values().next().unwrap_or_else(|| unreachable!())),
            _ => Err(StoreError::Ambiguous {
                prefix: what.to_owned(),
                candidates: found.into_keys().collect(),
            }),
        }
    }

    /// Every image with its tags, size and creation time, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut out = Vec::new();
        for (md, tags) in self.entries()? {
            let image = self.load(md)?;
            out.push(ImageSummary {
                size: image.size(),
                created: image.created().map(str::to_owned),
                tags,
                image,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// The tags of an image.
    pub fn tags_of(&self, image: &Image) -> Result<Vec<String>, StoreError> {
        Ok(self
            .entries()?
            .remove(&image.manifest_digest())
            .unwrap_or_default())
    }

    // ---- holds ----

    /// Take a persistent hold named `name` on `image` (taking it again is a no-op).
    pub fn hold(&self, image: &Image, name: &str) -> Result<Hold, StoreError> {
        let _g = self.index_lock()?;
        let md = image.manifest_digest();
        if !self.entries()?.contains_key(&md) {
            return Err(StoreError::NotFound(md.to_string()));
        }
        let dir = self.layout().holds_dir();
        let taken =
            crate::holds::take(&dir, name, &md).map_err(io_err("writing a hold in", &dir))?;
        Ok(Hold {
            name: name.to_owned(),
            image: md,
            created: crate::builder::rfc3339(taken),
        })
    }

    /// Release the hold named `name`; `false` if there was none.
    pub fn release(&self, name: &str) -> Result<bool, StoreError> {
        let _g = self.index_lock()?;
        let dir = self.layout().holds_dir();
        crate::holds::release(&dir, name).map_err(io_err("releasing a hold in", &dir))
    }

    /// Every hold in the store, oldest first.
    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        let dir = self.layout().holds_dir();
        Ok(crate::holds::list(&dir)
            .map_err(io_err("reading", &dir))?
            .into_iter()
            .map(|h| Hold {
                name: h.name,
                image: h.image,
                created: crate::builder::rfc3339(h.taken),
            })
            .collect())
    }

    fn holds_on(&self, md: Digest) -> Result<Vec<Hold>, StoreError> {
        Ok(self
            .holds()?
            .into_iter()
            .filter(|h| h.image == md)
            .collect())
    }

    // ---- remove, prune ----

    /// Remove an image named by tag, id or prefix (see [`Store::resolve`]). A tag of an image
    /// with other tags is only untagged. Fails with [`StoreError::Held`] if the image is held.
    /// Blobs are freed by the next [`Store::gc`].
    pub fn remove(&self, what: &str) -> Result<Removed, StoreError> {
        // Resolve under the lock: a tag moved between resolving and removing would
        // otherwise remove the image it was on before.
        let _g = self.index_lock()?;
        let image = self.resolve(what)?;
        let md = image.manifest_digest();
        let holds = self.holds_on(md)?;
        if !holds.is_empty() {
            return Err(StoreError::Held { image: md, holds });
        }
        let mut index = self.read_index()?;
        let tags: Vec<String> = index
            .manifests()
            .iter()
            .filter(|d| desc_digest(d) == Some(md))
            .filter_map(|d| ref_name(d).map(str::to_owned))
            .collect();
        if let Ok(r) = Reference::parse(what)
            && r.digest().is_none()
            && tags.contains(&r.to_string())
            && tags.len() > 1
        {
            remove_tag(&mut index, &r.to_string());
            self.write_index(&index)?;
            return Ok(Removed::Untagged(r.to_string()));
        }
        retain_manifests(&mut index, |d| desc_digest(d) != Some(md));
        self.write_index(&index)?;
        Ok(Removed::Deleted(md))
    }

    /// Remove dangling images (untagged and unheld). Returns their manifest digests.
    pub fn prune(&self) -> Result<Vec<Digest>, StoreError> {
        self.prune_where(|tags| tags.is_empty())
    }

    /// Remove every unheld image, tagged or not. Returns their manifest digests.
    pub fn prune_all(&self) -> Result<Vec<Digest>, StoreError> {
        self.prune_where(|_| true)
    }

    fn prune_where(&self, pick: impl Fn(&[String]) -> bool) -> Result<Vec<Digest>, StoreError> {
        let _g = self.index_lock()?;
        let held: BTreeSet<Digest> = self.holds()?.into_iter().map(|h| h.image).collect();
        let gone: BTreeSet<Digest> = self
            .entries()?
            .into_iter()
            .filter(|(md, tags)| !held.contains(md) && pick(tags))
            .map(|(md, _)| md)
            .collect();
        if !gone.is_empty() {
            let mut index = self.read_index()?;
            retain_manifests(&mut index, |d| {
                desc_digest(d).is_none_or(|md| !gone.contains(&md))
            });
            self.write_index(&index)?;
        }
        Ok(gone.into_iter().collect())
    }

    // ---- GC ----

    /// Blobs and unpacked layers reachable from the index.
    fn reachable(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>), StoreError> {
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        for md in self.entries()?.into_keys() {
            blobs.insert(md);
            match self.load(md) {
                Ok(image) => {
                    blobs.insert(image.id());
                    blobs.extend(image.layers().iter().map(|l| l.digest));
                    chains.extend(image.chain_ids());
                }
                // A failure to read (I/O, too many open files...) says nothing about what
                // the image reaches: collecting now could free what it uses. Stop.
                Err(e @ (StoreError::Io { .. } | StoreError::Blob(_))) => return Err(e),
                // A definite defect of the documents (not JSON, not an image, a missing
                // blob): keep every blob the manifest names, whatever it is.
                Err(_) => blobs.extend(self.named_by_manifest(md)?),
            }
        }
        Ok((blobs, chains))
    }

    /// Every digest a stored manifest names in its `config` and `layers` descriptors, read
    /// as plain JSON so that a manifest molde cannot load still pins what it names. A
    /// missing manifest names nothing; one that is not JSON names nothing either.
    fn named_by_manifest(&self, md: Digest) -> Result<Vec<Digest>, StoreError> {
        let bytes = match self.read_document("the index", &md) {
            Ok(b) => b,
            Err(StoreError::MissingBlob { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Vec::new());
        };
        let descriptors = std::iter::once(&doc["config"]).chain(
            doc["layers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        );
        Ok(descriptors
            .filter_map(|d| d["digest"].as_str()?.parse().ok())
            .collect())
    }

    /// Free every blob and unpacked layer that no image in the index reaches, and leftovers
    /// of interrupted work. Waits for concurrent imports to finish first.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _content = self.content_lock(LockKind::Exclusive)?;
        let _g = self.index_lock()?;
        let (blobs, chains) = self.reachable()?;
        let mut report = GcReport::default();
        let dir = self.layout().blobs();
        for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let name = entry.file_name();
            let digest = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            if digest.is_some_and(|d| blobs.contains(&d)) {
                continue;
            }
            let len = entry.metadata().map_or(0, |m| m.len());
            fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            report.bytes += len;
            if let Some(d) = digest {
                report.blobs.push(d);
            }
        }
        let (layers, bytes) = crate::unpack::collect(self.layout(), &chains)?;
        report.layers = layers;
        report.bytes += bytes;
        crate::unpack::collect_flats(self.layout(), &chains)?;
        blob::clear_leftovers(&self.layout().tmp())
            .map_err(io_err("clearing", &self.layout().tmp()))?;
        Ok(report)
    }

    /// Sizes of everything in the store, for tests and reports: (blob count, unpacked count).
    pub fn counts(&self) -> Result<(usize, usize), StoreError> {
        let b = fs::read_dir(self.layout().blobs())
            .map_err(io_err("reading", &self.layout().blobs()))?
            .count();
        let l = crate::unpack::unpacked(self.layout())?.len();
        Ok((b, l))
    }

    /// The images that use a given layer blob (for reports).
    pub fn images_using(&self, layer: &Digest) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for md in self.entries()?.into_keys() {
            let image = self.load(md)?;
            if image.layers().iter().any(|l| l.digest == *layer) {
                out.push(image);
            }
        }
        Ok(out)
    }
}

/// Add `image` (with an optional tag) to `index`. Moving a tag away never drops the image it
/// was on: it stays, untagged.
fn index_add(index: &mut ImageIndex, image: &Image, tag: Option<&Reference>) {
    let md = image.manifest_digest();
    if let Some(tag) = tag {
        let name = tag.to_string();
        let previous = index
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name.as_str()))
            .cloned();
        remove_tag(index, &name);
        // Moving a tag away never drops the image it was on: it stays, untagged.
        if let Some(mut prev) = previous
            && !index
                .manifests()
                .iter()
                .any(|d| desc_digest(d) == desc_digest(&prev))
        {
            prev.set_annotations(None);
            push_manifest(index, prev);
        }
    }
    let present = index
        .manifests()
        .iter()
        .any(|d| desc_digest(d) == Some(md) && (tag.is_none() || ref_name(d).is_none()));
    // Replace an untagged entry by the tagged one; never duplicate an untagged entry.
    if let Some(tag) = tag {
        retain_manifests(index, |d| {
            !(desc_digest(d) == Some(md) && ref_name(d).is_none())
        });
        push_manifest(index, index_entry(image, Some(&tag.to_string())));
    } else if !present {
        push_manifest(index, index_entry(image, None));
    }
}

/// The manifest (and its canonical bytes) of an image with this config and these layers.
pub(crate) fn manifest_for(
    config_digest: Digest,
    config_size: u64,
    layers: &[Layer],
) -> Result<(ImageManifest, Vec<u8>), StoreError> {
    let layer_descs = layers
        .iter()
        .map(|l| Descriptor::new(l.media_type.to_oci(), l.size, oci_digest(&l.digest)))
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            oci_digest(&config_digest),
        ))
        .layers(layer_descs)
        .build()
        .map_err(|e| StoreError::Json {
            what: format!("building manifest: {e}"),
            source: serde_json::Error::io(io::Error::other(e.to_string())),
        })?;
    let bytes = canonical_json("image manifest", &manifest)?;
    Ok((manifest, bytes))
}

/// Serialise a document with sorted keys (deterministic bytes, hence digests).
pub(crate) fn canonical_json<T: Serialize>(what: &str, doc: &T) -> Result<Vec<u8>, StoreError> {
    let err = |source| StoreError::Json {
        what: what.to_owned(),
        source,
    };
    let value = serde_json::to_value(doc).map_err(err)?;
    serde_json::to_vec(&value).map_err(err)
}

/// A molde digest as an oci-spec digest.
pub(crate) fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string()
        .parse()
        .expect("a sha256 Digest always formats as a valid OCI digest")
}

pub(crate) fn desc_digest(d: &Descriptor) -> Option<Digest> {
    d.digest().as_ref().parse().ok()
}

pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn remove_tag(index: &mut ImageIndex, tag: &str) {
    retain_manifests(index, |d| ref_name(d) != Some(tag));
}

fn index_entry(image: &Image, tag: Option<&str>) -> Descriptor {
    let mut d = Descriptor::new(
        MediaType::ImageManifest,
        image.manifest_size(),
        oci_digest(&image.manifest_digest()),
    );
    if let Some(t) = tag {
        d.set_annotations(Some(HashMap::from([(REF_NAME.to_owned(), t.to_owned())])));
    }
    d
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .unwrap_or_default()
}

fn retain_manifests(index: &mut ImageIndex, keep: impl Fn(&Descriptor) -> bool) {
    let mut m = index.manifests().clone();
    m.retain(|d| keep(d));
    index.set_manifests(m);
}

fn push_manifest(index: &mut ImageIndex, d: Descriptor) {
    let mut m = index.manifests().clone();
    m.push(d);
    index.set_manifests(m);
}
