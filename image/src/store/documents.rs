//! The documents molde writes: manifests, and JSON with sorted keys.

use std::io;

use molde_layerfs::Digest;
use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use serde::Serialize;

use super::StoreError;
use crate::layer::Layer;

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
