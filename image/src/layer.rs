//! [`Layer`]: one stored layer blob, with its DiffID.

use std::fmt;

use molde_layerfs::{Compression, Digest};
use oci_spec::image::MediaType;

/// How a layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerMediaType {
    /// An uncompressed tar (`application/vnd.oci.image.layer.v1.tar`).
    Tar,
    /// A gzip-compressed tar (`...tar+gzip`, or docker's `...rootfs.diff.tar.gzip`).
    Gzip,
    /// A zstd-compressed tar (`...tar+zstd`).
    Zstd,
}

impl LayerMediaType {
    /// The OCI media type string.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerMediaType::Tar => "application/vnd.oci.image.layer.v1.tar",
            LayerMediaType::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerMediaType::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The media type of a layer stored with this compression.
    pub fn from_compression(c: Compression) -> LayerMediaType {
        match c {
            Compression::None => LayerMediaType::Tar,
            Compression::Gzip => LayerMediaType::Gzip,
            Compression::Zstd => LayerMediaType::Zstd,
        }
    }

    /// The compression of a blob of this media type.
    pub fn compression(self) -> Compression {
        match self {
            LayerMediaType::Tar => Compression::None,
            LayerMediaType::Gzip => Compression::Gzip,
            LayerMediaType::Zstd => Compression::Zstd,
        }
    }

    /// Parse an OCI or docker layer media type; `None` for anything else (including
    /// non-distributable layers, which molde does not handle).
    pub fn parse(media_type: &str) -> Option<LayerMediaType> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(LayerMediaType::Tar),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(LayerMediaType::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(LayerMediaType::Zstd),
            _ => None,
        }
    }

    /// As an oci-spec [`MediaType`].
    pub fn to_oci(self) -> MediaType {
        match self {
            LayerMediaType::Tar => MediaType::ImageLayer,
            LayerMediaType::Gzip => MediaType::ImageLayerGzip,
            LayerMediaType::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

impl fmt::Display for LayerMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of an image: a blob in the store and the DiffID of its uncompressed tar.
///
/// Small and `Copy`: it names content, it does not hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layer {
    /// The digest of the blob as stored (maybe compressed).
    pub digest: Digest,
    /// The digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// The size of the blob as stored, in bytes.
    pub size: u64,
    /// How the blob is stored.
    pub media_type: LayerMediaType,
}
