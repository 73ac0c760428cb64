//! Images: written from a builder, registered, loaded from their manifest and config.

use molde_layerfs::Digest;
use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};

use super::documents::{canonical_json, manifest_for};
use super::index::index_add;
use super::{Store, StoreError, io_err};
use crate::blob;
use crate::builder::ImageBuilder;
use crate::image::{Image, ImageError};
use crate::layer::Layer;
use crate::lock::LockKind;
use crate::reference::Reference;

impl Store {
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

    pub(super) fn add_to_index(
        &self,
        image: &Image,
        tag: Option<&Reference>,
    ) -> Result<(), StoreError> {
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
}
