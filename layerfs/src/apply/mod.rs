//! Apply a layer: stream an OCI layer tar (plain, gzip or zstd) onto a directory.
//!
//! [`apply()`] reads the layer once. A reader thread decompresses it and computes its digest and
//! DiffID while the calling thread parses the tar and writes the entries, so decompression and
//! writing use two cores, and memory stays bounded whatever the layer's size.
//!
//! Every entry is written *inside* the target, whatever its name says: names with `..` are
//! refused, absolute names are taken relative to the target, parent directories are resolved
//! under the target ([`crate::secure::Root`]: a symlinked parent, even one made earlier in the
//! same tar, is followed but clamped to the target), and the final component is never followed
//! (entries are created with `O_EXCL | O_NOFOLLOW` or the `*at` calls on the parent's
//! descriptor, replacing what is there). Hardlink targets are resolved the same way.
//!
//! The private modules, one step each: `stream` (read, decompress, hash), `archive` (parse the
//! tar), `names` (check and normalize entry names), `entry` (write one entry), `remove`
//! (whiteouts, and replacing what is in the way).

mod archive;
mod entry;
mod names;
mod remove;
mod stream;

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use archive::{MAX_EXTENDED, MalformedTar};
pub use names::{MAX_NAME, MAX_PATH};

use crate::compression::Compression;
use crate::digest::Digest;
use crate::secure::Root;
use crate::whiteout::Format;

/// Who owns what an applied layer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// Every entry gets the uid and gid its header names; failing to set them is an error.
    Preserve,
    /// Set the header's uid and gid where this process may (in a user namespace: the ids that
    /// are mapped); where it may not, keep the file and record a [`Skipped`].
    BestEffort,
    /// Leave everything owned by this process.
    Ignore,
}

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceNodes {
    /// Create them (needs `CAP_MKNOD` in the initial user namespace).
    Create,
    /// Do not create them; record each one as [`Skipped`].
    Skip,
}

/// Which extended attributes (PAX `SCHILY.xattr.*`) to set.
///
/// Overlay's own attributes (`trusted.overlay.*`, `user.overlay.*`) are never taken from a
/// layer: they would let a layer forge whiteouts, opaque directories or redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Xattrs {
    /// `user.*`, `security.*` and `trusted.*` (needs root in the initial user namespace).
    All,
    /// `user.*` and `security.capability`; others are recorded as [`Skipped`].
    Unprivileged,
    /// None; each one is recorded as [`Skipped`].
    Ignore,
}

/// How to apply a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApplyOptions {
    /// Flat (whiteouts delete) or overlay (whiteouts kept as char 0/0 and opaque xattrs).
    pub format: Format,
    /// Who owns the written files.
    pub ownership: Ownership,
    /// Whether to create device nodes.
    pub devices: DeviceNodes,
    /// Which extended attributes to set.
    pub xattrs: Xattrs,
}

impl ApplyOptions {
    /// Options right for this process: as root in the initial user namespace, preserve owners,
    /// create device nodes and set all xattrs; otherwise keep owners only where possible, skip
    /// (and report) devices, and set only unprivileged xattrs.
    pub fn for_current_process(format: Format) -> ApplyOptions {
        if crate::privilege::is_privileged() {
            ApplyOptions {
                format,
                ownership: Ownership::Preserve,
                devices: DeviceNodes::Create,
                xattrs: Xattrs::All,
            }
        } else {
            ApplyOptions {
                format,
                ownership: Ownership::BestEffort,
                devices: DeviceNodes::Skip,
                xattrs: Xattrs::Unprivileged,
            }
        }
    }
}

/// How many entries of each kind a layer held.
///
/// Entries are counted as they are met in the tar, including those whose effect was skipped
/// (see [`ApplyReport::skipped`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EntryCounts {
    /// Directories.
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// Named pipes.
    pub fifos: u64,
    /// Character devices.
    pub char_devices: u64,
    /// Block devices.
    pub block_devices: u64,
    /// Whiteouts (`.wh.NAME`).
    pub whiteouts: u64,
    /// Opaque markers (`.wh..wh..opq`).
    pub opaques: u64,
}

impl EntryCounts {
    /// All entries counted.
    pub fn total(&self) -> u64 {
        self.dirs
            + self.files
            + self.symlinks
            + self.hardlinks
            + self.fifos
            + self.char_devices
            + self.block_devices
            + self.whiteouts
            + self.opaques
    }
}

/// Something a layer asked for that was not done, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's path as the layer names it.
    pub path: PathBuf,
    /// What was not done.
    pub reason: SkipReason,
}

/// What was not done for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A device node was not created ([`DeviceNodes::Skip`]).
    DeviceNode {
        /// `true` for a block device, `false` for a character device.
        block: bool,
        /// Its major number.
        major: u64,
        /// Its minor number.
        minor: u64,
    },
    /// The owner could not be set ([`Ownership::BestEffort`]).
    Owner {
        /// The uid the layer asked for.
        uid: u64,
        /// The gid the layer asked for.
        gid: u64,
        /// Why the kernel refused.
        errno: nix::errno::Errno,
    },
    /// An extended attribute was not set.
    Xattr {
        /// Its name.
        name: String,
        /// The kernel's refusal, or `None` when the options do not allow its namespace.
        errno: Option<nix::errno::Errno>,
    },
    /// An aufs metadata entry (`.wh..wh.*` other than the opaque marker), which means nothing
    /// outside aufs.
    AufsMetadata,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.reason {
            SkipReason::DeviceNode {
                block,
                major,
                minor,
            } => write!(
                f,
                "{} device {major}:{minor} not created",
                if *block { "block" } else { "character" }
            ),
            SkipReason::Owner { uid, gid, errno } => {
                write!(f, "owner {uid}:{gid} not set ({errno})")
            }
            SkipReason::Xattr { name, errno: None } => {
                write!(f, "xattr {name} not allowed by the options")
            }
            SkipReason::Xattr {
                name,
                errno: Some(e),
            } => write!(f, "xattr {name} not set ({e})"),
            SkipReason::AufsMetadata => write!(f, "aufs metadata ignored"),
        }
    }
}

/// At most this many [`Skipped`] are listed in a report; [`ApplyReport::skipped_total`] counts
/// them all.
pub const MAX_SKIPPED_LISTED: usize = 1000;

/// What applying a layer did and measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The sha256 of the uncompressed stream, to its very end (padding after the end-of-archive
    /// blocks included).
    pub diff_id: Digest,
    /// The sha256 of the stream as given (compressed or not).
    pub digest: Digest,
    /// Bytes of the stream as given.
    pub compressed_size: u64,
    /// Bytes of the uncompressed stream.
    pub uncompressed_size: u64,
    /// The compression found from the magic bytes.
    pub compression: Compression,
    /// Entries by kind.
    pub counts: EntryCounts,
    /// What was not applied, and why; at most [`MAX_SKIPPED_LISTED`] of them.
    pub skipped: Vec<Skipped>,
    /// How many things were skipped in all.
    pub skipped_total: u64,
}

/// Why an entry was refused or could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The name has a `..` component.
    #[error("the name has a `..` component")]
    ParentDir,
    /// The name or link target contains a NUL byte.
    #[error("the name or link target contains a NUL byte")]
    NulInName,
    /// A name component or the whole path is too long.
    #[error("name of {len} bytes is longer than the limit of {max}")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit ([`MAX_NAME`] for a component, [`MAX_PATH`] for a path).
        max: usize,
    },
    /// A hardlink's target would leave the target directory (it has a `..` component).
    #[error("hardlink target {target:?} escapes the target directory")]
    LinkEscapes {
        /// The link target as the layer gives it.
        target: PathBuf,
    },
    /// A hardlink has no target, or names the target directory itself.
    #[error("hardlink target {target:?} does not name a file")]
    InvalidLinkTarget {
        /// The link target as the layer gives it.
        target: PathBuf,
    },
    /// A whiteout name that does not name one entry: `.wh.`, `.wh..`, `.wh...`, or a whiteout
    /// used as a directory.
    #[error("invalid whiteout name")]
    InvalidWhiteout,
    /// An entry other than a directory names the target directory itself.
    #[error("only a directory entry may name the target directory itself")]
    ReplacesRoot,
    /// A type flag molde does not apply (tape volume headers, multi-volume continuations,
    /// unknown types).
    #[error("unsupported entry type {:?}", *.kind as char)]
    UnsupportedType {
        /// The type flag.
        kind: u8,
    },
    /// A sparse file (GNU type `S` or PAX `GNU.sparse.*`), which molde does not apply.
    #[error("sparse files are not supported")]
    Sparse,
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a layer could not be applied.
///
/// Entries applied before the error stay in the target: apply into a fresh directory and
/// discard it on error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The target directory could not be created or opened.
    #[error("cannot open the target directory {path}")]
    Target {
        /// The target.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Reading or decompressing the layer stream failed.
    #[error("reading the layer stream failed")]
    Read(#[source] io::Error),
    /// The uncompressed stream is not a valid tar.
    #[error("malformed tar at offset {offset} of the uncompressed stream")]
    Malformed {
        /// Where the bad header or the truncation is.
        offset: u64,
        /// What is wrong.
        #[source]
        reason: MalformedTar,
    },
    /// An entry was refused, or writing it failed.
    #[error("entry {path:?}")]
    Entry {
        /// The entry's path as the layer names it.
        path: PathBuf,
        /// Why.
        #[source]
        reason: EntryError,
    },
    /// The reader thread could not be started or died.
    #[error("the layer reader thread failed")]
    Thread(#[source] io::Error),
}

impl ApplyError {
    /// The entry error, if this is one.
    pub fn entry_error(&self) -> Option<&EntryError> {
        match self {
            ApplyError::Entry { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn entry(path: &[u8], reason: EntryError) -> ApplyError {
        ApplyError::Entry {
            path: PathBuf::from(crate::secure::os(path)),
            reason,
        }
    }
}

/// Apply the layer `layer` (a plain, gzip or zstd tar stream, found from its magic bytes) onto
/// the directory `target` (created if missing).
///
/// # Example
///
/// ```
/// use molde_layerfs::apply::{apply, ApplyOptions};
/// use molde_layerfs::Format;
///
/// let mut tar = tar::Builder::new(Vec::new());
/// let mut header = tar::Header::new_gnu();
/// header.set_size(5);
/// header.set_mode(0o644);
/// tar.append_data(&mut header, "etc/motd", &b"hello"[..])?;
/// let layer = tar.into_inner()?;
///
/// let target = tempfile::tempdir()?;
/// let report = apply(&layer[..], target.path(), &ApplyOptions::for_current_process(Format::Flat))?;
/// assert_eq!(std::fs::read(target.path().join("etc/motd"))?, b"hello");
/// assert_eq!(report.counts.files, 1);
/// assert_eq!(report.diff_id, molde_layerfs::Digest::of(&layer));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply(
    layer: impl Read + Send,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let target_err = |source| ApplyError::Target {
        path: target.to_owned(),
        source,
    };
    std::fs::create_dir_all(target).map_err(target_err)?;
    let root = Root::open(target).map_err(target_err)?;
    apply_in(layer, &root, opts)
}

/// [`apply()`] onto a directory already opened as a [`Root`].
pub fn apply_in(
    layer: impl Read + Send,
    root: &Root,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    apply_with(layer, root, opts, None)
}

/// [`apply()`] of a stream whose bytes the caller hashes itself, as a store's verifying
/// writer does when the layer's bytes are teed into a blob and into this apply at once
/// (a pull unpacking while it downloads). The stream as given is not hashed here: the
/// report's `digest` is `digest`, and an uncompressed stream's `diff_id` is `digest` too
/// (its stored bytes are its uncompressed bytes). A compressed stream's DiffID is computed
/// as always. The report is true only once the caller has checked that the bytes it read
/// have `digest`: it must discard the target otherwise.
pub fn apply_hashed_by_caller(
    layer: impl Read + Send,
    target: &Path,
    opts: &ApplyOptions,
    digest: Digest,
) -> Result<ApplyReport, ApplyError> {
    let target_err = |source| ApplyError::Target {
        path: target.to_owned(),
        source,
    };
    std::fs::create_dir_all(target).map_err(target_err)?;
    let root = Root::open(target).map_err(target_err)?;
    apply_with(layer, &root, opts, Some(digest))
}

fn apply_with(
    layer: impl Read + Send,
    root: &Root,
    opts: &ApplyOptions,
    known: Option<Digest>,
) -> Result<ApplyReport, ApplyError> {
    let mut applier = entry::Applier::new(root, opts).map_err(|source| ApplyError::Target {
        path: PathBuf::from("."),
        source,
    })?;
    let (tx, recycle, feed) = stream::channels();
    let (parsed, produced) = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("molde-layer-read".into())
            .spawn_scoped(s, move || stream::produce(layer, tx, recycle, known));
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => return (Err(ApplyError::Thread(e)), None),
        };
        let mut archive = archive::Archive::new(feed);
        let parsed = run(&mut archive, &mut applier);
        // Dropping the feed tells the reader to stop if the parser stopped early. Read to its
        // end (when parsed), it has hashed a compressed layer's whole uncompressed stream.
        let feed_diff_id = archive.into_input().diff_id();
        (parsed.map(|()| feed_diff_id), Some(reader.join()))
    });
    let totals = match produced {
        None => {
            return Err(parsed
                .err()
                .unwrap_or(ApplyError::Thread(io::Error::other("no reader thread"))));
        }
        Some(Err(_panic)) => {
            return Err(ApplyError::Thread(io::Error::other(
                "the layer reader thread panicked",
            )));
        }
        // A failed read explains whatever the parser then saw.
        Some(Ok(Err(e))) => return Err(ApplyError::Read(e)),
        // The reader stopped because the parser did: the parser's error says why.
        Some(Ok(Ok(None))) => {
            parsed?;
            return Err(ApplyError::Thread(io::Error::other(
                "the layer reader stopped early",
            )));
        }
        Some(Ok(Ok(Some(totals)))) => totals,
    };
    let feed_diff_id = parsed?;
    let Some(diff_id) = totals.diff_id.or(feed_diff_id) else {
        return Err(ApplyError::Thread(io::Error::other(
            "the layer's DiffID was not computed",
        )));
    };
    let (counts, skipped, skipped_total) = applier.into_report();
    Ok(ApplyReport {
        diff_id,
        digest: totals.digest,
        compressed_size: totals.compressed_size,
        uncompressed_size: totals.uncompressed_size,
        compression: totals.compression,
        counts,
        skipped,
        skipped_total,
    })
}

/// Parse every entry and apply it, then finish the directories and read to the stream's end.
fn run(
    archive: &mut archive::Archive<stream::Feed>,
    applier: &mut entry::Applier<'_>,
) -> Result<(), ApplyError> {
    while let Some(header) = archive.next_entry().map_err(stream_error)? {
        applier.entry(&header, &archive.names, &mut archive.body)?;
    }
    applier.finish()?;
    archive.body.drain().map_err(stream_error)
}

fn stream_error(e: archive::StreamError) -> ApplyError {
    match e {
        archive::StreamError::Read(e) => ApplyError::Read(e),
        archive::StreamError::Malformed(offset, reason) => ApplyError::Malformed { offset, reason },
    }
}
