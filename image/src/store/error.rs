//! [`StoreError`]: why a store operation failed.

use std::io;
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;

use super::Hold;
use crate::blob::BlobError;
use crate::image::ImageError;
use crate::reference::ReferenceError;

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
    /// Opening a store of an older molde found an index both in the root (where that molde
    /// kept it) and in `oci/` (where it now lives), and one of them is not a readable index, so
    /// the two cannot be merged.
    #[error(
        "{old} and {new} both exist and one is not a readable image index: an older molde wrote \
         this store after its layout moved into oci/; keep one of them (move or remove the \
         other, after stopping the older molde) and open the store again"
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
