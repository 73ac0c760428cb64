//! Flattening a view into a plain directory: every entry the view shows, with its mode, owner,
//! times and xattrs (overlay's own left out), files copied or hard-linked to the layer file that
//! provides them, hardlinks within a layer kept.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Child, DirNode, Node, UnionView, ViewError, io_err};

impl UnionView {
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
