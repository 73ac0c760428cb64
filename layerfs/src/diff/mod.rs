//! Diff: turn the changes made to a tree back into a deterministic OCI layer tar.
//!
//! - [`native()`]: from an overlay upper directory over its lower stack. Only the upper directory
//!   is walked (plus one lookup into the lowers per whiteout and per directory), so the cost is
//!   proportional to what changed, not to the rootfs.
//! - [`naive()`]: between a base (any [`UnionView`], e.g. one plain directory) and a new plain
//!   tree. Every file is compared: type, mode, owner, size, link target, device numbers,
//!   xattrs, and the contents when the sizes are equal, so an edit that keeps size and mtime is
//!   still caught.
//! - [`changes`]: the `docker diff` style list of an upper dir's changes.
//!
//! # The layers written
//!
//! Both diffs write with [`LayerWriter`] (see there for the header format) and in one canonical
//! order, depth first from the root (which itself is never written): in each directory first
//! its opaque marker `.wh..wh..opq` (if any), then its whiteouts `.wh.NAME` sorted by `NAME`
//! (the image-spec asks for whiteouts before sibling entries), then its entries sorted by name,
//! each directory followed by its contents. Parent directories always precede their contents:
//! the native diff writes every directory of the upper as it is there; the naive diff writes a
//! directory when its own attributes changed or when something below it is written.
//!
//! A deleted directory is one whiteout, not one per child. A path whose type changed (a file
//! replacing a directory or the other way) is written as its new self, without a whiteout: the
//! image-spec's apply replaces what is there. A whiteout is only written for a name the lower
//! layers (the base) have.
//!
//! # Hardlinks
//!
//! Within one layer, a file with more than one link is written once and its other names as
//! hardlink entries to it. Following the image-spec's layer.md, links to files outside the
//! changeset are not recorded: such a file is written as a regular file. A copy-up (or a naive
//! diff that only sees one changed name) breaks hardlink groups; so the naive diff re-emits,
//! for every hardlink group of the new tree that has a changed or added member, its unchanged
//! members too, as hardlinks to the first member written: applying the layer keeps the group.
//! The native diff sees the merged view overlayfs showed: without the overlay `index` feature
//! (which molde does not enable), a copy-up really breaks the link in the merged view, and
//! writing the copied-up file alone reproduces exactly that view.
//!
//! # Determinism
//!
//! The same tree gives the same bytes: entry order is fixed as above, the header format does
//! not depend on the machine (no user names, no atime/ctime, PAX records sorted), and with
//! [`DiffOptions::mtime_clamp`] the mtimes later than the given epoch become the epoch.

mod naive;
mod native;
pub mod writer;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::view::UnionView;
use crate::whiteout::OverlayXattr;

pub use writer::{EntryAttrs, LayerWriter};

/// How a diff writes its layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Clamp every mtime to at most this epoch (seconds since 1970), as `SOURCE_DATE_EPOCH`
    /// builds do; `None` keeps mtimes as they are.
    pub mtime_clamp: Option<u64>,
    /// The xattr namespace of opaque directories in the upper and lower directories.
    pub xattr: OverlayXattr,
    /// Record owners as the container saw them: host ids through these maps (an unmapped id
    /// becomes the overflow id 65534), and an owner kept in
    /// [`ROOTLESS_XATTR`](crate::idmap::ROOTLESS_XATTR) before that. `None` writes the ids
    /// as stored. A rootless commit passes the maps its containers run with
    /// ([`IdMaps::for_current_process`](crate::idmap::IdMaps::for_current_process)).
    pub owners: Option<&'static crate::idmap::IdMaps>,
}

/// What a diff wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffReport {
    /// The DiffID: sha256 of the (uncompressed) tar stream written.
    pub diff_id: Digest,
    /// The number of bytes written.
    pub size: u64,
    /// The entries written, by kind.
    pub counts: DiffCounts,
}

/// Entries written into a layer, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffCounts {
    /// Regular files (with contents).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hardlink entries (second and later names of a file).
    pub hardlinks: u64,
    /// Character and block devices.
    pub devices: u64,
    /// Fifos.
    pub fifos: u64,
    /// `.wh.NAME` whiteouts.
    pub whiteouts: u64,
    /// `.wh..wh..opq` opaque markers.
    pub opaques: u64,
    /// Sockets met and left out (a tar cannot hold them).
    pub skipped_sockets: u64,
}

/// One change of a tree, `docker diff` style. Paths are absolute in the tree (`/etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// The path did not exist in the lower layers.
    Added(PathBuf),
    /// The path existed in the lower layers and was changed (contents, attributes, type, or
    /// something inside it for a directory).
    Modified(PathBuf),
    /// The path existed in the lower layers and was deleted.
    Deleted(PathBuf),
}

impl Change {
    /// The changed path.
    pub fn path(&self) -> &Path {
        match self {
            Change::Added(p) | Change::Modified(p) | Change::Deleted(p) => p,
        }
    }
}

impl fmt::Display for Change {
    /// `A /path`, `C /path` or `D /path`, as `docker diff` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Change::Added(_) => 'A',
            Change::Modified(_) => 'C',
            Change::Deleted(_) => 'D',
        };
        // Components, not the bytes as given: a directory is `/app` whether its name came
        // with a trailing slash (a tar directory entry) or not.
        let path: PathBuf = self.path().components().collect();
        write!(f, "{kind} {}", path.display())
    }
}

/// Why a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A filesystem operation on one of the trees failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"read directory"`, `"open"`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the layer stream failed.
    #[error("writing the layer stream: {0}")]
    Output(#[source] io::Error),
    /// A file changed size while it was being written into the layer.
    #[error("{}: changed while being read (expected {expected} bytes)", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The size its metadata gave.
        expected: u64,
    },
    /// A file's name starts with `.wh.`, which layers reserve for whiteouts: written as it is,
    /// it would delete something when the layer is applied.
    #[error(
        "{}: names starting with \".wh.\" are reserved for whiteouts and cannot be put in a layer",
        path.display()
    )]
    ReservedName {
        /// The file.
        path: PathBuf,
    },
    /// The upper directory uses an overlayfs feature the native diff cannot read.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The entry that uses it.
        path: PathBuf,
        /// Which feature, and what to do instead.
        reason: &'static str,
    },
}

impl DiffError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> DiffError {
        DiffError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Native diff: the overlay upper directory `upper` over the lower stack `lowers`, written as a
/// layer tar into `out`. Walks only the upper directory: the cost is proportional to the
/// changes, not to the rootfs.
///
/// A char device 0/0 in `upper` becomes `.wh.NAME`; an opaque directory becomes the directory
/// entry plus `.wh..wh..opq` when a lower layer has that directory (the directory alone
/// otherwise); everything else of the upper is written as it is, parents first.
///
/// ```no_run
/// use std::path::{Path, PathBuf};
/// use molde_layerfs::diff::{DiffOptions, native};
/// use molde_layerfs::view::UnionView;
/// use molde_layerfs::OverlayXattr;
///
/// let lowers = UnionView::new(vec![PathBuf::from("/layers/1")], None, OverlayXattr::Trusted);
/// let out = std::fs::File::create("/tmp/layer.tar")?;
/// let report = native(Path::new("/containers/c1/upper"), &lowers, out, &DiffOptions::default())?;
/// println!("{} ({} bytes)", report.diff_id, report.size);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn native(
    upper: &Path,
    lowers: &UnionView,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    native::native(upper, lowers, out, opts)
}

/// Naive diff between `base` (any union view, e.g. one plain directory) and the plain tree
/// `new`, written as a layer tar into `out`. Compares every file (contents too, streamed, when
/// sizes are equal); a directory gone entirely is one whiteout.
///
/// ```no_run
/// use std::path::{Path, PathBuf};
/// use molde_layerfs::diff::{DiffOptions, naive};
/// use molde_layerfs::view::UnionView;
/// use molde_layerfs::OverlayXattr;
///
/// let base = UnionView::new(vec![PathBuf::from("/trees/before")], None, OverlayXattr::User);
/// let opts = DiffOptions { mtime_clamp: Some(0), ..DiffOptions::default() };
/// let report = naive(&base, Path::new("/trees/after"), std::io::sink(), &opts)?;
/// println!("{}", report.diff_id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn naive(
    base: &UnionView,
    new: &Path,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    naive::naive(base, new, out, opts)
}

/// The changes of the overlay upper directory `upper` over `lowers`, sorted by path, for
/// `docker diff`: every entry of the upper is `Added` (no lower has the path) or `Modified`
/// (directories holding changes included); whiteouts, and the lower entries hidden by an
/// opaque directory, are `Deleted`.
pub fn changes(
    upper: &Path,
    lowers: &UnionView,
    xattr: OverlayXattr,
) -> Result<Vec<Change>, DiffError> {
    native::changes(upper, lowers, xattr)
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn change_displays_without_trailing_slash() {
        assert_eq!(Change::Modified("/app/".into()).to_string(), "C /app");
        assert_eq!(Change::Added("/app/sub//".into()).to_string(), "A /app/sub");
        assert_eq!(Change::Deleted("/etc/x".into()).to_string(), "D /etc/x");
        assert_eq!(Change::Modified("/".into()).to_string(), "C /");
    }
}
