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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::whiteout::{OverlayXattr, is_opaque_dir, is_overlay_whiteout};

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

    /// Flatten the union into the plain directory `dest` (created if missing; it must be
    /// empty): every entry with its mode (setuid, setgid and sticky included), owner (when this
    /// process may set it), mtime and xattrs (not the `overlay.*` ones); hardlinks within a layer
    /// stay hardlinks; whiteouts and what they hide are left out. `dest`'s own attributes are
    /// set from the view's root.
    ///
    /// Where this process may not create device nodes or set an owner or a privileged xattr
    /// (rootless), those are skipped with a warning (`tracing`); as root every failure is an
    /// error.
    pub fn copy_to(&self, dest: &Path) -> Result<(), ViewError> {
        self.materialize(dest, false)
    }

    /// Flatten the union into `dest` as [`copy_to`](Self::copy_to) does, except that regular
    /// files are hard links to the layer file that provides them: no data is copied, and the
    /// files keep their layer's inode (mode, owner, times, xattrs). The layers and `dest` must
    /// be on one filesystem, and the result must be treated as read-only (a write through a
    /// link would change the layer): it is meant as the single lower directory of an overlay,
    /// which copies a file up before changing it.
    pub fn link_to(&self, dest: &Path) -> Result<(), ViewError> {
        self.materialize(dest, true)
    }

    fn materialize(&self, dest: &Path, link_files: bool) -> Result<(), ViewError> {
        fs::create_dir_all(dest).map_err(io_err("create directory", dest))?;
        let mut entries = fs::read_dir(dest).map_err(io_err("read directory", dest))?;
        if entries.next().is_some() {
            return Err(ViewError::DestinationNotEmpty(dest.to_path_buf()));
        }
        let mut ctx = CopyCtx {
            privileged: crate::privilege::is_privileged(),
            links: HashMap::new(),
        };
        let root = self.root();
        let root_meta = match root.layers.first() {
            Some(&top) => {
                let src = &self.layers[top];
                Some(fs::symlink_metadata(src).map_err(io_err("stat", src))?)
            }
            None => None,
        };
        /// A directory being copied: its remaining children, then its attributes.
        struct Frame {
            children: std::vec::IntoIter<Child>,
            dest: PathBuf,
            src: Option<(PathBuf, Metadata)>,
        }
        let mut stack = vec![Frame {
            children: self.list_for_copy(&root)?.into_iter(),
            dest: dest.to_path_buf(),
            src: root_meta.map(|m| (self.layer_path(root.layers[0], &root.rel), m)),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.next() else {
                let done = stack.pop().expect("a frame is on the stack");
                if let Some((src, meta)) = done.src {
                    // Directories get their attributes last: after their contents.
                    self.copy_attrs(&src, &done.dest, &meta, &ctx)?;
                }
                continue;
            };
            let dst = frame.dest.join(&child.name);
            let src = self.node_path(&child.node);
            match child.node {
                Node::Dir(sub, meta) => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dst)
                        .map_err(io_err("create directory", &dst))?;
                    stack.push(Frame {
                        children: self.list_for_copy(&sub)?.into_iter(),
                        dest: dst,
                        src: Some((src, meta)),
                    });
                }
                Node::Other { meta, .. } if link_files && meta.file_type().is_file() => {
                    fs::hard_link(&src, &dst).map_err(io_err("hardlink", &dst))?;
                }
                Node::Other { layer, meta, .. } => {
                    let key = (layer, meta.dev(), meta.ino());
                    if meta.nlink() > 1 {
                        if let Some(first) = ctx.links.get(&key) {
                            fs::hard_link(first, &dst).map_err(io_err("hardlink", &dst))?;
                            continue;
                        }
                    }
                    if self.copy_node(&src, &dst, &meta, &ctx)? {
                        self.copy_attrs(&src, &dst, &meta, &ctx)?;
                        if meta.nlink() > 1 {
                            ctx.links.insert(key, dst);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn list_for_copy(&self, dir: &DirNode) -> Result<Vec<Child>, ViewError> {
        self.list(dir).map_err(|source| ViewError::Io {
            op: "read directory",
            path: dir
                .layers
                .first()
                .map_or_else(|| dir.rel.clone(), |&l| self.layer_path(l, &dir.rel)),
            source,
        })
    }

    /// Create `dst` as a copy of the non-directory `src`. `false` when it was skipped (a device
    /// node this process may not create).
    fn copy_node(
        &self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        ctx: &CopyCtx,
    ) -> Result<bool, ViewError> {
        let ft = meta.file_type();
        if ft.is_file() {
            let mut from = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(src)
                .map_err(io_err("open", src))?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dst)
                .map_err(io_err("create", dst))?;
            io::copy(&mut from, &mut to).map_err(io_err("copy into", dst))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err("read link", src))?;
            std::os::unix::fs::symlink(&target, dst).map_err(io_err("create symlink", dst))?;
        } else {
            use nix::sys::stat::{Mode, SFlag, mknod};
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            let res = mknod(dst, kind, Mode::from_bits_truncate(0o600), meta.rdev() as _);
            match res {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM)
                    if !ctx.privileged && (ft.is_char_device() || ft.is_block_device()) =>
                {
                    tracing::warn!(
                        path = %dst.display(),
                        "skipping a device node: this process may not create one"
                    );
                    return Ok(false);
                }
                Err(e) => {
                    return Err(ViewError::Io {
                        op: "create node",
                        path: dst.to_path_buf(),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(true)
    }

    /// Owner, mode, xattrs and times of `src` onto `dst`, in the order that keeps them all
    /// (chown clears setuid bits and capabilities, so it goes first; times last).
    fn copy_attrs(
        &self,
        src: &Path,
        dst: &Path,
        meta: &Metadata,
        ctx: &CopyCtx,
    ) -> Result<(), ViewError> {
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        let is_link = meta.file_type().is_symlink();
        match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
            Ok(()) => {}
            Err(e)
                if !ctx.privileged
                    && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EINVAL)) =>
            {
                tracing::debug!(path = %dst.display(), "owner not kept: {e}");
            }
            Err(e) => return Err(io_err("chown", dst)(e)),
        }
        if !is_link {
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("chmod", dst))?;
        }
        let names = xattr::list(src).map_err(io_err("list xattrs of", src))?;
        for name in names {
            if is_overlay_xattr(&name) {
                continue;
            }
            let Some(value) = xattr::get(src, &name).map_err(io_err("read xattr of", src))? else {
                continue;
            };
            match xattr::set(dst, &name, &value) {
                Ok(()) => {}
                Err(e)
                    if !ctx.privileged
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOTSUP)
                        ) =>
                {
                    tracing::warn!(
                        path = %dst.display(),
                        xattr = %name.to_string_lossy(),
                        "xattr not kept: {e}"
                    );
                }
                Err(e) => return Err(io_err("set xattr on", dst)(e)),
            }
        }
        let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
        let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
        utimensat(
            nix::fcntl::AT_FDCWD,
            dst,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err("set times of", dst)(e.into()))?;
        Ok(())
    }

    // ----- resolution (shared with diff) -----

    /// The root directory of the view: every layer takes part.
    pub(crate) fn root(&self) -> DirNode {
        DirNode {
            rel: PathBuf::new(),
            layers: (0..self.layers.len()).collect(),
        }
    }

    /// The host path of a layer's copy of `rel`.
    pub(crate) fn layer_path(&self, layer: usize, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.layers[layer].clone()
        } else {
            self.layers[layer].join(rel)
        }
    }

    /// The host path of the layer file that provides `node`.
    pub(crate) fn node_path(&self, node: &Node) -> PathBuf {
        match node {
            Node::Dir(d, _) => self.layer_path(d.layers[0], &d.rel),
            Node::Other { rel, layer, .. } => self.layer_path(*layer, rel),
        }
    }

    /// The directory node's metadata (of its topmost layer).
    fn dir_metadata(&self, dir: &DirNode) -> io::Result<Metadata> {
        match dir.layers.first() {
            Some(&l) => fs::symlink_metadata(self.layer_path(l, &dir.rel)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// Look `name` up in the directory `dir`: `None` when no layer has it or it is whited out.
    pub(crate) fn lookup(&self, dir: &DirNode, name: &OsStr) -> io::Result<Option<Node>> {
        let rel = dir.rel.join(name);
        let mut dirs: Vec<usize> = Vec::new();
        let mut top_meta: Option<Metadata> = None;
        for &l in &dir.layers {
            let p = self.layer_path(l, &rel);
            let meta = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            if dirs.is_empty() {
                if is_overlay_whiteout(&meta) {
                    return Ok(None);
                }
                if !meta.is_dir() {
                    return Ok(Some(Node::Other {
                        rel,
                        layer: l,
                        meta,
                    }));
                }
                top_meta = Some(meta);
            } else if !meta.is_dir() {
                // A whiteout or a non-directory below a directory ends the merge.
                break;
            }
            dirs.push(l);
            if is_opaque_dir(&p, self.xattr) {
                break;
            }
        }
        Ok(top_meta.map(|m| Node::Dir(DirNode { rel, layers: dirs }, m)))
    }

    /// Look up a path without following any symlink (a symlinked parent means "not found").
    pub(crate) fn lookup_physical(&self, rel: &Path) -> io::Result<Option<Node>> {
        let mut cur = self.root();
        let mut comps = components(rel);
        while let Some(c) = comps.pop_front() {
            if c == ".." {
                return Err(errno(libc::EINVAL));
            }
            match self.lookup(&cur, &c)? {
                None => return Ok(None),
                Some(Node::Dir(d, m)) => {
                    if comps.is_empty() {
                        return Ok(Some(Node::Dir(d, m)));
                    }
                    cur = d;
                }
                Some(other) => {
                    return Ok(if comps.is_empty() { Some(other) } else { None });
                }
            }
        }
        let m = self.dir_metadata(&cur)?;
        Ok(Some(Node::Dir(cur, m)))
    }

    /// Resolve `path` through the union, following symlinks in parents inside the view (and
    /// the final one when `follow_final`).
    pub(crate) fn resolve(&self, path: &Path, follow_final: bool) -> io::Result<Node> {
        // As in POSIX, a trailing `/` (or `/.`) asks for a directory, following a final symlink.
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() > 1 && (bytes.ends_with(b"/") || bytes.ends_with(b"/.")) {
            return match self.resolve_inner(path, true)? {
                node @ Node::Dir(..) => Ok(node),
                Node::Other { .. } => Err(errno(libc::ENOTDIR)),
            };
        }
        self.resolve_inner(path, follow_final)
    }

    fn resolve_inner(&self, path: &Path, follow_final: bool) -> io::Result<Node> {
        let mut queue = components(path);
        let mut stack: Vec<DirNode> = vec![self.root()];
        let mut followed = 0usize;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let last = queue.is_empty();
            let cur = stack.last().expect("the root is never popped");
            match self.lookup(cur, &c)? {
                None => return Err(errno(libc::ENOENT)),
                Some(Node::Dir(d, m)) => {
                    if last {
                        return Ok(Node::Dir(d, m));
                    }
                    stack.push(d);
                }
                Some(Node::Other { rel, layer, meta }) => {
                    if meta.file_type().is_symlink() && (!last || follow_final) {
                        followed += 1;
                        if followed > MAX_SYMLINKS {
                            return Err(errno(libc::ELOOP));
                        }
                        let target = fs::read_link(self.layer_path(layer, &rel))?;
                        if target.as_os_str().is_empty() {
                            return Err(errno(libc::ENOENT));
                        }
                        if target.as_os_str().as_bytes().first() == Some(&b'/') {
                            stack.truncate(1);
                        }
                        for comp in components(&target).into_iter().rev() {
                            queue.push_front(comp);
                        }
                        continue;
                    }
                    if last {
                        return Ok(Node::Other { rel, layer, meta });
                    }
                    return Err(errno(libc::ENOTDIR));
                }
            }
        }
        let dir = stack.pop().expect("the root is never popped");
        let meta = self.dir_metadata(&dir)?;
        Ok(Node::Dir(dir, meta))
    }

    /// The visible children of `dir`, sorted by name.
    pub(crate) fn list(&self, dir: &DirNode) -> io::Result<Vec<Child>> {
        #[derive(Default)]
        struct Acc {
            /// The topmost layer with the name, unless it is a whiteout.
            top: Option<usize>,
            /// Whether the topmost occurrence is a whiteout.
            whiteout: bool,
            /// Whether lower layers no longer take part.
            closed: bool,
            /// The layers where the name is a directory taking part in the merge.
            dirs: Vec<usize>,
        }
        let mut names: BTreeMap<OsString, Acc> = BTreeMap::new();
        for &l in &dir.layers {
            let base = self.layer_path(l, &dir.rel);
            let rd = match fs::read_dir(&base) {
                Ok(rd) => rd,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            for ent in rd {
                let ent = ent?;
                let ft = ent.file_type()?;
                let acc = names.entry(ent.file_name()).or_default();
                if acc.closed {
                    continue;
                }
                if acc.top.is_none() {
                    if ft.is_char_device() && is_overlay_whiteout(&ent.metadata()?) {
                        acc.whiteout = true;
                        acc.closed = true;
                        continue;
                    }
                    acc.top = Some(l);
                    if ft.is_dir() {
                        acc.dirs.push(l);
                    } else {
                        acc.closed = true;
                    }
                } else if !ft.is_dir() {
                    acc.closed = true;
                } else {
                    let prev = *acc.dirs.last().expect("a directory was seen above");
                    let prev_path = self.layer_path(prev, &dir.rel.join(ent.file_name()));
                    if is_opaque_dir(&prev_path, self.xattr) {
                        acc.closed = true;
                    } else {
                        acc.dirs.push(l);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for (name, acc) in names {
            let Some(top) = acc.top else { continue };
            if acc.whiteout {
                continue;
            }
            let rel = dir.rel.join(&name);
            let meta = fs::symlink_metadata(self.layer_path(top, &rel))?;
            let node = if meta.is_dir() {
                Node::Dir(
                    DirNode {
                        rel,
                        layers: acc.dirs,
                    },
                    meta,
                )
            } else {
                Node::Other {
                    rel,
                    layer: top,
                    meta,
                }
            };
            out.push(Child { name, node });
        }
        Ok(out)
    }
}

/// State of one [`UnionView::copy_to`].
struct CopyCtx {
    privileged: bool,
    /// First destination path of each hardlinked layer file: (layer, dev, ino).
    links: HashMap<(usize, u64, u64), PathBuf>,
}

/// Whether an xattr is overlayfs' own (`trusted.overlay.*` or `user.overlay.*`), never copied
/// into a plain tree or a layer.
pub(crate) fn is_overlay_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"trusted.overlay.") || b.starts_with(b"user.overlay.")
}
