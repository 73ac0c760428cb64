//! One streaming pass over an archive (oci-archive or docker-archive): every blob entry goes
//! straight into the store's ingest (entries under `blobs/sha256/` verified against their
//! name), small JSON documents are kept in memory, links are recorded. The format is worked
//! out afterwards from what was seen; entries may come in any order.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::rc::Rc;

use molde_layerfs::Digest;

use super::{ArchiveError, read_document};
use crate::blob::{self, BlobError, BlobInfo, Expected};
use crate::store::Store;

/// How deep links are followed.
const MAX_LINKS: usize = 16;

/// What one archive entry turned into.
#[derive(Debug)]
pub(crate) enum Item {
    /// A blob, now in the store.
    Blob(BlobInfo),
    /// A small document (JSON, `VERSION`), kept in memory.
    Doc(Vec<u8>),
    /// A symlink or hardlink to another entry (archive-root-relative, normalised).
    Link(String),
}

/// Everything an archive held, by normalised path.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    items: HashMap<String, Item>,
}

impl Scanned {
    /// Whether the archive has an entry at `path`.
    pub(crate) fn has(&self, path: &str) -> bool {
        self.items.contains_key(&normalise(path))
    }

    /// The entry at `path`, links followed; `None` if missing or a link leads nowhere.
    pub(crate) fn get(&self, path: &str) -> Option<&Item> {
        let mut p = normalise(path);
        for _ in 0..MAX_LINKS {
            match self.items.get(&p)? {
                Item::Link(target) => p = target.clone(),
                item => return Some(item),
            }
        }
        None
    }

    /// The blob at `path`, if it is one.
    pub(crate) fn blob(&self, path: &str) -> Option<BlobInfo> {
        match self.get(path)? {
            Item::Blob(b) => Some(*b),
            _ => None,
        }
    }

    /// The blob with this digest, if the archive had it under `blobs/sha256/`.
    pub(crate) fn blob_by_digest(&self, digest: &Digest) -> Option<BlobInfo> {
        self.blob(&format!("blobs/sha256/{}", digest.hex()))
    }
}

/// `./a//b/` -> `a/b`; `..` pops (paths are only keys here: nothing is written by name).
pub(crate) fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Entries kept in memory rather than stored as blobs.
fn is_document(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".json")
        || name == "json"
        || name == "VERSION"
        || name == "oci-layout"
        || name == "repositories"
}

/// The reader under the tar parser: notes when the input ran out, which tells a truncated
/// archive (the input ends before the end-of-archive block) from a complete one.
struct Tracked<R> {
    inner: R,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

/// An entry's data, which must yield exactly `remaining` bytes: running short means the
/// archive is truncated, reported as an `UnexpectedEof` error (not a short, "complete" blob).
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes missing", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Read the whole archive. The caller holds the store's content lock (shared), so nothing
/// ingested here is collected before the import references it.
pub(crate) fn scan(store: &Store, reader: impl Read) -> Result<Scanned, ArchiveError> {
    let eof = Rc::new(Cell::new(false));
    let tracked = Tracked {
        inner: reader,
        eof: eof.clone(),
    };
    let mut archive = tar::Archive::new(tracked);
    let mut scanned = Scanned::default();
    let stream_err = |source: io::Error, eof: &Cell<bool>, entry: Option<&str>| {
        if eof.get() || source.kind() == io::ErrorKind::UnexpectedEof {
            ArchiveError::Truncated {
                entry: entry.map(str::to_owned),
            }
        } else {
            ArchiveError::Stream {
                op: "reading",
                source,
            }
        }
    };
    let entries = archive.entries().map_err(|e| stream_err(e, &eof, None))?;
    for entry in entries {
        let entry = entry.map_err(|e| stream_err(e, &eof, None))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalise(&raw);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let target = if kind.is_symlink() && !target.starts_with('/') {
                normalise(&format!("{}/{target}", parent(&path)))
            } else {
                normalise(&target)
            };
            scanned.items.insert(path, Item::Link(target));
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) || path.is_empty() {
            continue;
        }
        let size = entry.size();
        let data = Exact {
            inner: entry,
            remaining: size,
        };
        let item = if is_document(&path) {
            let bytes = read_document(&path, data).map_err(|e| match e {
                ArchiveError::Stream { source, .. } => stream_err(source, &eof, Some(&path)),
                e => e,
            })?;
            Item::Doc(bytes)
        } else {
            let expected = match path.strip_prefix("blobs/sha256/") {
                Some(hex) => Some(Expected {
                    digest: format!("sha256:{hex}").parse::<Digest>().map_err(|_| {
                        ArchiveError::Format {
                            format: "an OCI image layout",
                            reason: format!("{path:?} is not named by a sha256 digest"),
                        }
                    })?,
                    size: Some(size),
                }),
                None => None,
            };
            // The digest named is checked against the content even when the store already
            // has that blob: the archive must be whole and right, not only what is new in it.
            let info = ingest_checked(store, data, expected).map_err(|e| match e {
                BlobError::Read { source } => stream_err(source, &eof, Some(&path)),
                source => ArchiveError::Blob {
                    what: format!("archive entry {path}"),
                    source,
                },
            })?;
            Item::Blob(info)
        };
        scanned.items.insert(path, item);
    }
    drop(archive);
    if eof.get() {
        return Err(ArchiveError::Truncated { entry: None });
    }
    Ok(scanned)
}

/// Ingest a blob whose digest may be known. When the store already has it the data is still
/// read through and hashed (it is part of the stream anyway), so a wrong entry is refused.
fn ingest_checked(
    store: &Store,
    data: impl Read,
    expected: Option<Expected>,
) -> Result<BlobInfo, BlobError> {
    match expected {
        Some(exp) if store.has_blob(&exp.digest) => {
            let (actual, size) =
                Digest::of_reader(data).map_err(|source| BlobError::Read { source })?;
            if actual != exp.digest {
                return Err(BlobError::DigestMismatch {
                    expected: exp.digest,
                    actual,
                });
            }
            Ok(BlobInfo {
                digest: actual,
                size,
                existed: true,
            })
        }
        _ => blob::ingest(store.layout(), data, expected),
    }
}
