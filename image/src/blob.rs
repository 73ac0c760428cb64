//! Content-addressed blobs: streamed into a locked temp file while hashing, verified (size and
//! digest), fsynced, made read-only and renamed into `blobs/sha256/`.
//!
//! A blob is visible under its digest only once complete. Two writers of the same blob (threads
//! or processes) each write their own temp file; the first rename wins and the other finds the
//! blob present, so the store ends with one copy and neither fails.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use molde_layerfs::Digest;
use molde_layerfs::digest::HashingWriter;

use crate::layout::Layout;
use crate::lock::FileLock;

/// What a blob is expected to be, when the caller knows (from a manifest or descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The digest it must have.
    pub digest: Digest,
    /// Its size in bytes, if known.
    pub size: Option<u64>,
}

/// A blob now in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the store already had it (nothing was written).
    pub existed: bool,
}

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The content's digest is not the one expected.
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest that was expected.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The content's size is not the one expected.
    #[error("blob {digest} size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The expected digest.
        digest: Digest,
        /// The size that was expected.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },
    /// Reading the content failed (a truncated or broken source).
    #[error("reading blob content: {source}")]
    Read {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file operation in the store failed.
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
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A reader that keeps its source's error (with its whole source chain) apart, so a read
/// error is told from a write error after `io::copy` fails.
struct SourceErr<R>(R, Option<io::Error>);

impl<R: Read> Read for SourceErr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // `io::copy` retries these itself.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // Keep the original; `io::copy` only needs to see that reading failed.
                let kind = e.kind();
                self.1 = Some(e);
                Err(io::Error::from(kind))
            }
            ok => ok,
        }
    }
}

/// Store everything `reader` yields as a blob, checking it against `expected` if given.
///
/// When `expected` names a blob already present, `reader` is not read at all.
pub(crate) fn ingest(
    layout: &Layout,
    reader: impl Read,
    expected: Option<Expected>,
) -> Result<BlobInfo, BlobError> {
    if let Some(exp) = expected {
        let path = layout.blob(&exp.digest);
        if let Ok(meta) = fs::metadata(&path) {
            return Ok(BlobInfo {
                digest: exp.digest,
                size: meta.len(),
                existed: true,
            });
        }
    }
    let pending = PendingBlob::create(layout)?;
    let mut source = SourceErr(reader, None);
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, pending.file()));
    if let Err(e) = io::copy(&mut source, &mut writer) {
        return Err(match source.1.take() {
            Some(source) => BlobError::Read { source },
            None => BlobError::Io {
                op: "writing",
                path: pending.path().to_owned(),
                source: e,
            },
        });
    }
    let (buf, (digest, size)) = writer.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_err("writing", pending.path()))?;
    pending.persist(layout, digest, size, expected)
}

/// A blob being written: a temp file in the store's `tmp/`, locked so that a store opening
/// elsewhere does not clear it as a leftover, removed when dropped unless persisted.
pub(crate) struct PendingBlob {
    tmp: tempfile::NamedTempFile,
    _lock: FileLock,
}

impl PendingBlob {
    pub(crate) fn create(layout: &Layout) -> Result<PendingBlob, BlobError> {
        let tmp_dir = layout.tmp();
        let tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&tmp_dir)
            .map_err(io_err("creating temp file in", &tmp_dir))?;
        let lock_handle = tmp
            .as_file()
            .try_clone()
            .map_err(io_err("duplicating", tmp.path()))?;
        let lock = FileLock::on(lock_handle, crate::lock::LockKind::Exclusive)
            .map_err(io_err("locking", tmp.path()))?;
        Ok(PendingBlob { tmp, _lock: lock })
    }

    /// The file to write the blob's bytes to.
    pub(crate) fn file(&self) -> &File {
        self.tmp.as_file()
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Make the written bytes (whose `digest` and `size` the writer measured) the blob
    /// `digest`, once checked against `expected`: synced, read-only, renamed into place.
    pub(crate) fn persist(
        self,
        layout: &Layout,
        digest: Digest,
        size: u64,
        expected: Option<Expected>,
    ) -> Result<BlobInfo, BlobError> {
        if let Some(exp) = expected {
            verify(exp, digest, size)?;
        }
        let final_path = layout.blob(&digest);
        if final_path.exists() {
            return Ok(BlobInfo {
                digest,
                size,
                existed: true,
            });
        }
        let tmp = self.tmp;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("syncing", tmp.path()))?;
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o444))
            .map_err(io_err("making read-only", tmp.path()))?;
        match tmp.persist_noclobber(&final_path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(BlobInfo {
                    digest,
                    size,
                    existed: true,
                });
            }
            Err(e) => {
                return Err(BlobError::Io {
                    op: "renaming into",
                    path: final_path,
                    source: e.error,
                });
            }
        }
        sync_dir(&layout.blobs()).map_err(io_err("syncing", &layout.blobs()))?;
        Ok(BlobInfo {
            digest,
            size,
            existed: false,
        })
    }
}

/// Check what was received (its `digest` and `size`) against what was expected.
pub(crate) fn verify(expected: Expected, digest: Digest, size: u64) -> Result<(), BlobError> {
    if expected.digest != digest {
        return Err(BlobError::DigestMismatch {
            expected: expected.digest,
            actual: digest,
        });
    }
    match expected.size {
        Some(e) if e != size => Err(BlobError::SizeMismatch {
            digest,
            expected: e,
            actual: size,
        }),
        _ => Ok(()),
    }
}

/// Store a small document held in memory. Its digest is known before writing, so a document
/// already in the store (a rebuilt image's config and manifest) costs one `stat`, not a
/// temp file and an fsync.
pub(crate) fn ingest_bytes(layout: &Layout, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
    let expected = Expected {
        digest: Digest::of(bytes),
        size: Some(bytes.len() as u64),
    };
    ingest(layout, bytes, Some(expected))
}

/// fsync a directory, making a rename in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to `path` atomically: temp file beside it, fsync, rename, fsync the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(tmp.path(), Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Remove leftover temp files in `dir` that no live writer holds locked. Returns how many.
pub(crate) fn clear_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if FileLock::try_exclusive(file)?.is_some() {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}
