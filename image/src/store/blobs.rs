//! Blobs: stored, opened, and layer blobs added with their DiffIDs.

use std::fs::File;
use std::io::{self, Read};

use molde_layerfs::Digest;

use super::{AddedLayer, MAX_DOCUMENT, Store, StoreError, io_err};
use crate::blob::{self, BlobInfo, Expected};
use crate::layer::{Layer, LayerMediaType};
use crate::lock::LockKind;

impl Store {
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

    pub(super) fn read_document(&self, what: &str, digest: &Digest) -> Result<Vec<u8>, StoreError> {
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
}
