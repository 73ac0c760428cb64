//! Naive diff: compare a base union view with a new plain tree, in sorted order.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::writer::{LayerWriter, read_xattrs};
use super::{DiffError, DiffOptions, DiffReport};
use crate::view::{Child, DirNode, Node, UnionView};

/// (dev, ino) of a file of the new tree.
type Inode = (u64, u64);

pub(super) fn naive(
    base: &UnionView,
    new: &Path,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let groups = hardlink_groups(new)?;
    let dirty = dirty_groups(base, new, groups)?;
    let mut diff = Naive {
        base,
        new,
        w: LayerWriter::new(out, opts),
        pending: Vec::new(),
        dirty,
    };
    diff.run()?;
    Ok(diff.w.finish()?.1)
}

struct Naive<'a, W: Write> {
    base: &'a UnionView,
    new: &'a Path,
    w: LayerWriter<W>,
    /// Directories entered but not written yet: written as soon as something below them is.
    pending: Vec<(PathBuf, PathBuf, Metadata)>,
    /// Hardlink groups of the new tree with a changed or added member: all their members are
    /// written.
    dirty: HashSet<Inode>,
}

/// A directory of the new tree being compared.
struct Frame {
    rel: PathBuf,
    new_dir: PathBuf,
    /// Its entries in the new tree, sorted by name, not yet visited.
    entries: std::vec::IntoIter<(OsString, Metadata)>,
    /// The base's entries of the same directory, sorted by name.
    base: std::iter::Peekable<std::vec::IntoIter<Child>>,
    /// The length of `pending` before this directory was pushed onto it.
    mark: usize,
}

impl<W: Write> Naive<'_, W> {
    fn flush(&mut self) -> Result<(), DiffError> {
        for (rel, path, meta) in std::mem::take(&mut self.pending) {
            self.w.add(&rel, &path, &meta)?;
        }
        Ok(())
    }

    /// Compare the whole trees, depth first, with an explicit stack (trees may be deep).
    fn run(&mut self) -> Result<(), DiffError> {
        let root = self.base.root();
        let first = self.open_dir(PathBuf::new(), self.new.to_path_buf(), Some(&root), 0)?;
        let mut stack = vec![first];
        while let Some(frame) = stack.last_mut() {
            let Some((name, meta)) = frame.entries.next() else {
                let done = stack.pop().expect("a frame is on the stack");
                // Nothing below it was written: the directory is not written either.
                self.pending.truncate(done.mark);
                continue;
            };
            while frame.base.next_if(|c| c.name < name).is_some() {}
            let base_node = frame.base.next_if(|c| c.name == name).map(|c| c.node);
            let crel = frame.rel.join(&name);
            let cpath = frame.new_dir.join(&name);
            if meta.is_dir() {
                let (changed, sub) = match base_node {
                    Some(Node::Dir(d, bm)) => {
                        let bp = self.base.layer_path(d.layers[0], &d.rel);
                        (differs(&bm, &bp, &meta, &cpath)?, Some(d))
                    }
                    _ => (true, None),
                };
                let mark = self.pending.len();
                self.pending.push((crel.clone(), cpath.clone(), meta));
                if changed {
                    self.flush()?;
                }
                let next = self.open_dir(crel, cpath, sub.as_ref(), mark)?;
                stack.push(next);
            } else {
                let emit = if meta.nlink() > 1 {
                    self.dirty.contains(&(meta.dev(), meta.ino()))
                } else {
                    match base_node {
                        Some(node @ Node::Other { .. }) => {
                            differs(node.metadata(), &self.base.node_path(&node), &meta, &cpath)?
                        }
                        _ => true,
                    }
                };
                if emit {
                    self.flush()?;
                    self.w.add(&crel, &cpath, &meta)?;
                }
            }
        }
        Ok(())
    }

    /// Read a directory of both trees, write its whiteouts (base names the new tree lacks;
    /// they come first), and return the frame of its entries.
    fn open_dir(
        &mut self,
        rel: PathBuf,
        new_dir: PathBuf,
        base_dir: Option<&DirNode>,
        mark: usize,
    ) -> Result<Frame, DiffError> {
        let new_entries = sorted_entries(&new_dir)?;
        let base_children: Vec<Child> = match base_dir {
            Some(d) => self
                .base
                .list(d)
                .map_err(|e| DiffError::io("list the base", &join(Path::new("/"), &rel), e))?,
            None => Vec::new(),
        };
        let mut gone = Vec::new();
        {
            let mut ni = new_entries.iter().peekable();
            for child in &base_children {
                while ni.next_if(|(n, _)| *n < child.name).is_some() {}
                if ni.peek().is_none_or(|(n, _)| *n != child.name) {
                    gone.push(&child.name);
                }
            }
        }
        if !gone.is_empty() {
            self.flush()?;
            for name in gone {
                self.w.add_whiteout(&rel, name)?;
            }
        }
        Ok(Frame {
            rel,
            new_dir,
            entries: new_entries.into_iter(),
            base: base_children.into_iter().peekable(),
            mark,
        })
    }
}

fn join(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The entries of a plain directory with their `lstat` metadata, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<(OsString, Metadata)>, DiffError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| DiffError::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| DiffError::io("read directory", dir, e))?;
        let meta = ent
            .metadata()
            .map_err(|e| DiffError::io("stat", &ent.path(), e))?;
        out.push((ent.file_name(), meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every non-directory of the new tree with more than one link, grouped by inode.
fn hardlink_groups(root: &Path) -> Result<HashMap<Inode, Vec<PathBuf>>, DiffError> {
    let mut groups: HashMap<Inode, Vec<PathBuf>> = HashMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        for (name, meta) in sorted_entries(&join(root, &rel))? {
            let crel = rel.join(&name);
            if meta.is_dir() {
                dirs.push(crel);
            } else if meta.nlink() > 1 {
                groups
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(crel);
            }
        }
    }
    Ok(groups)
}

/// The groups with a member that the base lacks or that differs from the base's.
fn dirty_groups(
    base: &UnionView,
    new: &Path,
    groups: HashMap<Inode, Vec<PathBuf>>,
) -> Result<HashSet<Inode>, DiffError> {
    let mut dirty = HashSet::new();
    for (inode, members) in groups {
        for rel in members {
            let path = new.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|e| DiffError::io("stat", &path, e))?;
            let changed = match base
                .lookup_physical(&rel)
                .map_err(|e| DiffError::io("look up in the base", &rel, e))?
            {
                Some(node @ Node::Other { .. }) => {
                    differs(node.metadata(), &base.node_path(&node), &meta, &path)?
                }
                _ => true,
            };
            if changed {
                dirty.insert(inode);
                break;
            }
        }
    }
    Ok(dirty)
}

/// Whether the new entry differs from the base's: type, mode, owner, size, link target, device
/// numbers, xattrs, or (same size) contents. mtimes are not compared.
fn differs(bm: &Metadata, bp: &Path, nm: &Metadata, np: &Path) -> Result<bool, DiffError> {
    let (bt, nt) = (bm.file_type(), nm.file_type());
    if bt != nt
        || bm.mode() & 0o7777 != nm.mode() & 0o7777
        || bm.uid() != nm.uid()
        || bm.gid() != nm.gid()
    {
        return Ok(true);
    }
    if nt.is_file() && bm.len() != nm.len() {
        return Ok(true);
    }
    if (nt.is_char_device() || nt.is_block_device()) && bm.rdev() != nm.rdev() {
        return Ok(true);
    }
    if nt.is_symlink() {
        let bl = fs::read_link(bp).map_err(|e| DiffError::io("read link", bp, e))?;
        let nl = fs::read_link(np).map_err(|e| DiffError::io("read link", np, e))?;
        if bl != nl {
            return Ok(true);
        }
    }
    if read_xattrs(bp)? != read_xattrs(np)? {
        return Ok(true);
    }
    if nt.is_file() {
        return Ok(!same_contents(bp, np)?);
    }
    Ok(false)
}

fn open_file(path: &Path) -> Result<File, DiffError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| DiffError::io("open", path, e))
}

/// Fill `buf` from `r` as far as it goes; the number of bytes read (less only at the end).
fn read_full(r: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether two files have the same bytes, streamed in blocks (never a whole file in memory).
fn same_contents(a: &Path, b: &Path) -> Result<bool, DiffError> {
    const CHUNK: usize = 128 * 1024;
    let (mut fa, mut fb) = (open_file(a)?, open_file(b)?);
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| DiffError::io("read", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| DiffError::io("read", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < CHUNK {
            return Ok(true);
        }
    }
}
