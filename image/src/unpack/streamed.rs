//! A layer streamed in (as a pull receives it): its bytes stored as a blob and unpacked in
//! the same pass, so a layer is ready when its last byte arrives, not after a second read
//! of the stored blob.
//!
//! The stream is teed below everything else: each byte read is hashed (the blob's digest,
//! the only hash of the stored bytes) and written to the blob's locked temp file, and goes
//! on to [`molde_layerfs::apply::apply_hashed_by_caller`], which decompresses it, hashes the
//! uncompressed bytes (the DiffID; for an uncompressed layer the digest serves) and writes
//! the tree into the layer's staging directory (`<chainid>.tmp`, under the layer's lock).
//! Once the stream ends, the digest and size are checked, then the DiffID; only then is the
//! blob renamed into place, and the tree waits in its staging directory as a
//! [`StagedLayer`] until [`StagedLayer::commit`] renames it into place (a pull commits an
//! image's top layer last, see [`super::unpack_layer`]). On any failure the temp
//! blob and the staging directory are removed: nothing is half visible.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use molde_layerfs::apply::{ApplyOptions, apply_hashed_by_caller};
use molde_layerfs::digest::HashingReader;
use molde_layerfs::{Digest, Format, OverlayXattr};

use super::UnpackedLayer;
use crate::blob::{self, BlobError, BlobInfo, Expected, PendingBlob};
use crate::layer::Layer;
use crate::lock::{FileLock, LockKind};
use crate::store::trees::{lock_path, remove_tree, tmp_path};
use crate::store::{Store, StoreError, io_err};

/// A layer unpacked into its staging directory, its blob stored and verified: the tree
/// enters the store ([`StagedLayer::commit`]) or, when dropped uncommitted, is removed.
/// Holds the layer's unpack lock until then.
#[derive(Debug)]
#[must_use = "a staged layer is removed unless committed"]
pub struct StagedLayer {
    chain_id: Digest,
    digest: Digest,
    path: PathBuf,
    tmp: PathBuf,
    layers_dir: PathBuf,
    committed: bool,
    _lock: FileLock,
}

impl StagedLayer {
    /// The ChainID the layer is unpacked under.
    pub fn chain_id(&self) -> Digest {
        self.chain_id
    }

    /// Rename the tree into place (`molde/layers/<chainid>/`), durably.
    pub fn commit(mut self) -> Result<UnpackedLayer, StoreError> {
        fs::rename(&self.tmp, &self.path).map_err(io_err("renaming into place", &self.path))?;
        self.committed = true;
        blob::sync_dir(&self.layers_dir).map_err(io_err("syncing", &self.layers_dir))?;
        Ok(UnpackedLayer {
            chain_id: self.chain_id,
            digest: self.digest,
            path: self.path.clone(),
            existed: false,
        })
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.tmp);
        }
    }
}

/// What [`store_and_unpack`] did.
#[derive(Debug)]
pub struct StreamedLayer {
    /// The blob, now in the store.
    pub blob: BlobInfo,
    /// The unpacked tree, waiting to be committed; `None` when the stack `chain_id` names
    /// was unpacked already (then the stream was only stored).
    pub staged: Option<StagedLayer>,
}

/// Store `reader`'s bytes as `layer`'s blob and unpack them, in one pass, as the top of the
/// stack `chain_id` names (see the module's documentation). The blob is checked against
/// `layer.digest` and `layer.size`, the unpacked content against `layer.diff_id`. Hold a
/// [`Store::pin`] guard until the image is registered, as for any blob.
///
/// Errors: [`BlobError::DigestMismatch`] (or `SizeMismatch`, or `Read` when `reader` failed)
/// whenever the bytes are not the blob's, even where unpacking failed first on them;
/// [`StoreError::Unpack`] for a blob with the right digest that cannot be applied;
/// [`StoreError::DiffIdMismatch`].
pub fn store_and_unpack(
    store: &Store,
    reader: impl Read + Send,
    layer: &Layer,
    chain_id: Digest,
) -> Result<StreamedLayer, StoreError> {
    let expected = Expected {
        digest: layer.digest,
        size: Some(layer.size),
    };
    let _content = store.content_lock(LockKind::Shared)?;
    let layout = store.layout();
    let path = layout.layer(&chain_id);
    let stored_only = |reader| -> Result<StreamedLayer, StoreError> {
        Ok(StreamedLayer {
            blob: blob::ingest(layout, reader, Some(expected))?,
            staged: None,
        })
    };
    if path.is_dir() {
        return stored_only(reader);
    }
    let lock_path = lock_path(layout, &chain_id);
    let lock = FileLock::acquire(&lock_path, LockKind::Exclusive)
        .map_err(io_err("locking", &lock_path))?;
    if path.is_dir() {
        return stored_only(reader);
    }
    let tmp = tmp_path(&path);
    remove_tree(&tmp).map_err(io_err("removing", &tmp))?;
    let staged = StagedLayer {
        chain_id,
        digest: layer.digest,
        path,
        tmp,
        layers_dir: layout.layers(),
        committed: false,
        _lock: lock,
    };
    let pending = PendingBlob::create(layout)?;
    let mut tee = Tee::new(reader, pending.file(), layer.size);
    let opts =
        ApplyOptions::for_current_process(Format::Overlay(OverlayXattr::for_current_process()));
    let applied = apply_hashed_by_caller(&mut tee, &staged.tmp, &opts, layer.digest);
    if applied.is_err() {
        // Whether the bytes were the blob's decides which error this is: read the rest.
        let _ = io::copy(&mut tee, &mut io::sink());
    }
    let (digest, size) = tee.finish(pending.path())?;
    blob::verify(expected, digest, size)?;
    let report = applied.map_err(|source| StoreError::Unpack {
        layer: layer.digest,
        source,
    })?;
    if report.diff_id != layer.diff_id {
        return Err(StoreError::DiffIdMismatch {
            layer: layer.digest,
            expected: layer.diff_id,
            actual: report.diff_id,
        });
    }
    super::restore_owners(&staged.tmp)?;
    let blob = pending.persist(layout, digest, size, None)?;
    Ok(StreamedLayer {
        blob,
        staged: Some(staged),
    })
}

/// The stream's bytes, hashed and written to the blob's temp file as they are read. Errors
/// are kept apart (reading the source, writing the blob, more bytes than the blob has) so
/// the caller reports the cause, whatever the apply made of it.
struct Tee<'a, R> {
    inner: HashingReader<R>,
    out: BufWriter<&'a fs::File>,
    limit: u64,
    read_err: Option<io::Error>,
    write_err: Option<io::Error>,
}

impl<'a, R: Read> Tee<'a, R> {
    fn new(inner: R, file: &'a fs::File, limit: u64) -> Self {
        Tee {
            inner: HashingReader::new(inner),
            out: BufWriter::with_capacity(1 << 20, file),
            limit,
            read_err: None,
            write_err: None,
        }
    }

    /// The digest and size of everything read, once the blob's bytes are all written.
    fn finish(mut self, path: &Path) -> Result<(Digest, u64), BlobError> {
        let flushed = match self.write_err.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        };
        flushed.map_err(|source| BlobError::Io {
            op: "writing",
            path: path.to_owned(),
            source,
        })?;
        if let Some(source) = self.read_err.take() {
            return Err(BlobError::Read { source });
        }
        let (_, digest, size) = self.inner.finish();
        Ok((digest, size))
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.write_err.is_some() || self.read_err.is_some() || self.inner.count() > self.limit {
            return Err(io::Error::other("the layer's blob could not be stored"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let kind = e.kind();
                self.read_err = Some(e);
                return Err(io::Error::from(kind));
            }
        };
        if let Err(e) = self.out.write_all(&buf[..n]) {
            self.write_err = Some(e);
            return Err(io::Error::other("writing the layer's blob failed"));
        }
        if self.inner.count() > self.limit {
            // Longer than the descriptor says: no need to read (or store) the rest.
            return Err(io::Error::other("the layer's blob is longer than its size"));
        }
        Ok(n)
    }
}
