//! Union view: an in-process, read-only look at a stack of layer directories.
//!
//! A [`UnionView`] answers `metadata`, `read`, `read_dir` and `read_link` over layer directories
//! in overlay format ([`crate::Format::Overlay`]) the way a kernel overlay mount of the same
//! stack would, without privileges or mounts:
//!
//! - a **whiteout** (a char device 0/0) at layer *k* hides the name in every layer below *k*, and
//!   is never shown itself;
//! - an **opaque** directory (the [`OverlayXattr`]'s `overlay.opaque` xattr set to `y`) at layer
//!   *k* hides the entries of that directory in the layers below *k*;
//! - a non-directory at layer *k* hides anything of that name below *k* (a directory too);
//! - a directory at layer *k* merges with directories of that name below it, down to the first
//!   layer where the name is something else (a file, a whiteout) or an opaque directory.
//!
//! Like overlayfs, the opaque xattr of a layer's root directory is not honoured.
//!
//! Paths given to the view are relative to the view's root (a leading `/` is allowed). Symlinks
//! met on the way are followed *inside the view*: an absolute target starts again at the view's
//! root, and `..` never climbs above it. Nothing outside the layer directories is ever touched.
//!
//! The module's parts: `resolve` (lookup through the layers, the merge rules above, symlinks
//! followed inside the view; shared with the diff) and `materialize` (flattening the view into a
//! plain directory, copying or hard-linking its files).
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use molde_layerfs::{OverlayXattr, view::UnionView};
//!
//! // Two layers, topmost first, no upper.
//! let view = UnionView::new(
//!     vec![PathBuf::from("/layers/2"), PathBuf::from("/layers/1")],
//!     None,
//!     OverlayXattr::Trusted,
//! );
//! for entry in view.read_dir(Path::new("/etc"))? {
//!     println!("{:?} {:?}", entry.name, entry.file_type());
//! }
//! let passwd = view.read(Path::new("/etc/passwd"))?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::whiteout::OverlayXattr;

mod materialize;
mod resolve;

pub(crate) use materialize::is_overlay_xattr;

/// How many symlinks one lookup may follow before it fails with `ELOOP` (as Linux does).
const MAX_SYMLINKS: usize = 40;

/// A read-only union of layer directories in overlay format, topmost first, plus an optional
/// upper directory (an overlay upper dir, same encoding) on top of everything.
///
/// Cloning is cheap (the layer list is shared). See the [module docs](self) for the semantics.
#[derive(Debug, Clone)]
pub struct UnionView {
    /// Every layer directory, topmost first (the upper, if any, is index 0).
    layers: Arc<[PathBuf]>,
    /// Whether `layers[0]` is an upper directory.
    has_upper: bool,
    /// The xattr namespace that marks opaque directories.
    xattr: OverlayXattr,
}

/// One entry of a directory of the view, as [`UnionView::read_dir`] returns it.
#[derive(Debug, Clone)]
pub struct ViewEntry {
    /// The entry's file name.
    pub name: OsString,
    /// The `lstat` metadata of the layer file that provides the entry (for a directory merged
    /// from several layers: of the topmost one).
    pub metadata: Metadata,
    /// The index in [`UnionView::layers`] of the layer that provides the entry.
    pub layer: usize,
}

impl ViewEntry {
    /// The entry's file type (not following symlinks).
    pub fn file_type(&self) -> FileType {
        self.metadata.file_type()
    }
}

/// Why [`UnionView::copy_to`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"read directory"`, `"create"`, ...).
        op: &'static str,
        /// The path it was done to (a layer file or a destination path).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The destination of a copy already has entries.
    #[error("copy destination {} is not empty", .0.display())]
    DestinationNotEmpty(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ViewError + 'a {
    move |source| ViewError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A directory of the view: its path and the layers it is merged from.
#[derive(Debug, Clone)]
pub(crate) struct DirNode {
    /// The directory's path relative to the view root (empty for the root).
    pub(crate) rel: PathBuf,
    /// The layers (indices) that have `rel` as a directory and take part in the merge, topmost
    /// first: the list stops at an opaque directory or where a lower layer has something else.
    pub(crate) layers: Vec<usize>,
}

/// A resolved entry of the view.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A (maybe merged) directory and the metadata of its topmost layer's directory.
    Dir(DirNode, Metadata),
    /// Anything else, provided by one layer.
    Other {
        /// The entry's path relative to the view root.
        rel: PathBuf,
        /// The layer that provides it.
        layer: usize,
        /// Its `lstat` metadata.
        meta: Metadata,
    },
}

impl Node {
    pub(crate) fn metadata(&self) -> &Metadata {
        match self {
            Node::Dir(_, m) => m,
            Node::Other { meta, .. } => meta,
        }
    }

    fn layer(&self) -> usize {
        match self {
            Node::Dir(d, _) => d.layers[0],
            Node::Other { layer, .. } => *layer,
        }
    }
}

/// A visible child of a directory of the view.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) name: OsString,
    pub(crate) node: Node,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The components of a path given to the view: names and `..`; `/` and `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

impl UnionView {
    /// A view of `lowers` (layer directories in overlay format, topmost first) with an optional
    /// `upper` directory on top. `xattr` names the namespace of the opaque-directory xattr.
    pub fn new(lowers: Vec<PathBuf>, upper: Option<PathBuf>, xattr: OverlayXattr) -> UnionView {
        let has_upper = upper.is_some();
        let layers: Vec<PathBuf> = upper.into_iter().chain(lowers).collect();
        UnionView {
            layers: layers.into(),
            has_upper,
            xattr,
        }
    }

    /// Every layer directory of the view, topmost first: the upper (if any) first, then the
    /// lowers. [`ViewEntry::layer`] indexes this list.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// Whether the view has an upper directory (then it is `layers()[0]`).
    pub fn has_upper(&self) -> bool {
        self.has_upper
    }

    /// The xattr namespace that marks opaque directories in this view's layers.
    pub fn xattr(&self) -> OverlayXattr {
        self.xattr
    }

    /// The metadata of `path`, not following a final symlink (like `lstat`). Parents are
    /// resolved through the union, symlinks among them followed inside the view.
    ///
    /// Fails with `ENOENT` for a path that no layer has or that is whited out, `ENOTDIR` when a
    /// parent is not a directory, `ELOOP` after too many symlinks.
    pub fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(self.resolve(path, false)?.metadata().clone())
    }

    /// Open the file at `path` for reading, following symlinks inside the view.
    ///
    /// Only regular files and directories are opened: a device node, fifo or socket of a layer
    /// is refused with `InvalidInput` (opening it would reach the host's device or block).
    pub fn open(&self, path: &Path) -> io::Result<File> {
        let node = self.resolve(path, true)?;
        let meta = node.metadata();
        if !(meta.is_file() || meta.is_dir()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a regular file or directory in the view",
                    path.display()
                ),
            ));
        }
        let real = self.node_path(&node);
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&real)?;
        // The layer may have changed between the lookup and the open: check what was opened.
        let opened = file.metadata()?;
        if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
            return Err(io::Error::other(format!(
                "{}: layer file {} changed while being opened",
                path.display(),
                real.display()
            )));
        }
        Ok(file)
    }

    /// The whole contents of the regular file at `path` (following symlinks inside the view).
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut file = self.open(path)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// The entries of the directory at `path` (following symlinks inside the view): merged from
    /// every layer that takes part, sorted by name, without whiteouts and without what they or
    /// opaque directories hide.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<ViewEntry>> {
        if self.layers.is_empty() && components(path).iter().all(|c| c == "..") {
            // A view of no layers is an empty root directory.
            return Ok(Vec::new());
        }
        let dir = match self.resolve(path, true)? {
            Node::Dir(d, _) => d,
            Node::Other { .. } => return Err(errno(libc::ENOTDIR)),
        };
        Ok(self
            .list(&dir)?
            .into_iter()
            .map(|c| ViewEntry {
                layer: c.node.layer(),
                metadata: c.node.metadata().clone(),
                name: c.name,
            })
            .collect())
    }

    /// The target of the symlink at `path` (the final component is not followed). Fails with
    /// `EINVAL` when it is not a symlink.
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let node = self.resolve(path, false)?;
        if !node.metadata().file_type().is_symlink() {
            return Err(errno(libc::EINVAL));
        }
        fs::read_link(self.node_path(&node))
    }

    /// The host path of the layer file that provides `path` (for a merged directory: the
    /// topmost layer's directory). The final component is not followed.
    pub fn real_path(&self, path: &Path) -> io::Result<PathBuf> {
        let node = self.resolve(path, false)?;
        Ok(self.node_path(&node))
    }

    /// Visit every entry of the view, depth first, each directory's entries sorted by name, a
    /// directory before its contents. `f` gets the entry's path relative to the view root
    /// (`a/b`) and the entry. The root itself is not visited.
    pub fn walk<F>(&self, mut f: F) -> io::Result<()>
    where
        F: FnMut(&Path, &ViewEntry) -> io::Result<()>,
    {
        // An explicit stack, not recursion: trees may be thousands of levels deep.
        let mut stack = vec![self.list(&self.root())?.into_iter()];
        while let Some(children) = stack.last_mut() {
            let Some(child) = children.next() else {
                stack.pop();
                continue;
            };
            let entry = ViewEntry {
                layer: child.node.layer(),
                metadata: child.node.metadata().clone(),
                name: child.name,
            };
            match &child.node {
                Node::Dir(sub, _) => {
                    f(&sub.rel, &entry)?;
                    stack.push(self.list(sub)?.into_iter());
                }
                Node::Other { rel, .. } => f(rel, &entry)?,
            }
        }
        Ok(())
    }
}
