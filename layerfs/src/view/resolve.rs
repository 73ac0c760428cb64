//! Resolution through the layers (shared with the diff): a name looked up from the topmost layer
//! down, whiteouts and opaque directories hiding what is below, directories merged, symlinks
//! followed inside the view.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::whiteout::{is_opaque_dir, is_overlay_whiteout};

use super::{Child, DirNode, MAX_SYMLINKS, Node, UnionView, components, errno, is_absent};

impl UnionView {
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
