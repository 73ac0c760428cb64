//! [`Store`]: a content store that is itself an OCI image layout, shared by threads and
//! processes under file locks. See [`crate::layout`] for the files on disk.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_layerfs::Digest;
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Serialize;

use crate::blob::{self, BlobError, BlobInfo, Expected};
use crate::builder::ImageBuilder;
use crate::image::{Image, ImageError};
use crate::layer::{Layer, LayerMediaType};
use crate::layout::{self, Layout};
use crate::lock::{FileLock, LockKind};
use crate::reference::{Reference, ReferenceError};

mod gc;
mod holds;
mod index;
mod names;
mod open;
mod remove;

use index::index_add;
pub(crate) use index::{desc_digest, ref_name};

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
    /// Opening a store of an older molde found a layout entry both in the root (where that
    /// molde kept it) and in `oci/` (where it now lives): an older molde wrote the store again
    /// after a newer one had moved it.
    #[error(
        "{old} and {new} both exist: an older molde wrote this store after its layout moved into \
         oci/; keep one of them (move or remove the other, after stopping the older molde) and \
         open the store again"
    )]
    LayoutConflict {
        /// The entry where an older molde keeps it.
        old: PathBuf,
        /// The entry where the store keeps it now.
        new: PathBuf,
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
    /// Its OCI image layout is `<root>/oci` ([`Store::oci_dir`]): skopeo and umoci read its
    /// tagged images in place. A store of an older molde, whose layout was the root itself, is
    /// moved forward (its `blobs/`, `index.json` and `oci-layout` into `oci/`; crash-safe).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// assert!(dir.path().join("oci/oci-layout").is_file());
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

    /// The store root: the OCI image layout directory ([`Store::oci_dir`]) and molde's own
    /// state beside it.
    pub fn root(&self) -> &Path {
        self.0.layout.root()
    }

    /// The store's OCI image layout directory (`<root>/oci`): skopeo, umoci and
    /// `oci-image-tool validate` read its tagged images in place. It holds the layout only.
    pub fn oci_dir(&self) -> PathBuf {
        self.0.layout.oci_dir()
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
        for (image, _) in images {
            self.note_layers(image)?;
        }
        let _g = self.index_lock()?;
        let mut index = self.read_index()?;
        for (image, tag) in images {
            index_add(&mut index, image, tag.as_ref());
        }
        self.write_index(&index)
    }

    /// Note every layer of `image` by its DiffID (see [`Store::layer_by_diff_id`]).
    fn note_layers(&self, image: &Image) -> Result<(), StoreError> {
        let dir = self.layout().diffids();
        for l in image.layers() {
            crate::diffids::record(self.layout(), l).map_err(io_err("writing a link in", &dir))?;
        }
        Ok(())
    }

    /// A stored layer blob whose uncompressed tar has this DiffID, whatever its compression:
    /// how a layer is found already present by *content*. Every image's layers are noted
    /// when the image enters the index, so a base imported as plain tars is found again
    /// when the same image comes gzip-compressed from a registry; importers and pulls then
    /// name the stored blob instead of storing (or fetching) the other compression.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use molde_image::{ImageBuilder, Store};
    ///
    /// let store = Store::temporary()?;
    /// let layer = store.add_layer(&[0u8; 1024][..])?.layer; // an empty tar
    /// assert!(store.layer_by_diff_id(&layer.diff_id).is_none()); // in no image yet
    /// store.commit(ImageBuilder::new().layer(layer, "empty"))?;
    /// assert_eq!(store.layer_by_diff_id(&layer.diff_id), Some(layer));
    /// # Ok(())
    /// # }
    /// ```
    pub fn layer_by_diff_id(&self, diff_id: &Digest) -> Option<Layer> {
        crate::diffids::lookup(self.layout(), diff_id)
    }

    /// Write a manifest naming the stored config `config` (its digest and size) and these
    /// stored layers, without adding it to the index; returns its image. This is how an
    /// image whose layers were found under another compression (see
    /// [`Store::layer_by_diff_id`]) is stored: same config, hence same id and DiffIDs, but a
    /// manifest naming the blobs the store has. Hold a [`Store::pin`] guard until the image
    /// is registered.
    pub fn write_manifest(
        &self,
        config: Digest,
        config_size: u64,
        layers: &[Layer],
    ) -> Result<Image, StoreError> {
        let _g = self.content_lock(LockKind::Shared)?;
        for l in layers {
            if !self.has_blob(&l.digest) {
                return Err(StoreError::MissingBlob {
                    what: format!("a manifest of config {config}"),
                    digest: l.digest,
                });
            }
        }
        let (_, bytes) = manifest_for(config, config_size, layers)?;
        let m = blob::ingest_bytes(self.layout(), &bytes)?;
        self.load(m.digest)
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
        self.note_layers(image)?;
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
