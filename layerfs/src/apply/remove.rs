//! Removing what is in the way: entries a later one replaces, and lower content a whiteout or
//! opaque marker hides.
//!
//! Everything here works on directory descriptors and single names, never follows a symlink
//! (a symlink is removed, not what it points to), and so never leaves the directory it starts in.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::names::join;

/// The paths this layer wrote, with their ancestors: a whiteout never hides them.
#[derive(Debug, Default)]
pub(crate) struct Written {
    set: HashSet<Box<[u8]>>,
}

impl Written {
    /// Record that this layer wrote `path` (normalized); its ancestors count as written too.
    pub fn mark(&mut self, path: &[u8]) {
        let mut p = path;
        while !p.is_empty() {
            if self.set.contains(p) {
                // Its ancestors were recorded with it.
                return;
            }
            self.set.insert(p.into());
            p = match p.iter().rposition(|&b| b == b'/') {
                Some(i) => &p[..i],
                None => &[],
            };
        }
    }

    /// Whether this layer wrote `path`, or something under it.
    pub fn contains(&self, path: &[u8]) -> bool {
        self.set.contains(path)
    }
}

/// Remove `name` in `dir`, whatever it is: a directory goes with everything under it. A name
/// that is not there is fine.
pub(crate) fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => remove_tree(dir, name),
        Err(e) => Err(e.into()),
    }
}

/// One directory being emptied: its stream, the names left to remove, its own name.
struct Level {
    dir: Dir,
    names: Vec<Vec<u8>>,
    name: Vec<u8>,
}

/// Open `name` in `parent` as a directory (never a symlink) and list it.
fn open_level(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<Level> {
    let mut dir = Dir::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names = list(&mut dir)?;
    Ok(Level {
        dir,
        names,
        name: name.to_vec(),
    })
}

/// The names in `dir`, without `.` and `..`.
fn list(dir: &mut Dir) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Remove the directory `name` in `parent` and everything under it, without recursion.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let mut stack = vec![open_level(parent, name)?];
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.names.pop() {
            match nix::unistd::unlinkat(
                top.dir.as_fd(),
                child.as_slice(),
                UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR) => {
                    let level = open_level(top.dir.as_fd(), &child)?;
                    stack.push(level);
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let done = stack.pop();
        let up = stack.last().map_or(parent, |l| l.dir.as_fd());
        if let Some(done) = done {
            match nix::unistd::unlinkat(up, done.name.as_slice(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Remove what `dir/name` holds that this layer did not write: all of it if the layer wrote
/// nothing there, else (for a directory) the children it did not write, recursively.
pub(crate) fn remove_unwritten(
    dir: BorrowedFd<'_>,
    dir_path: &[u8],
    name: &[u8],
    written: &Written,
) -> io::Result<()> {
    let mut path = Vec::with_capacity(dir_path.len() + 1 + name.len());
    join(dir_path, name, &mut path);
    if !written.contains(&path) {
        return remove_any(dir, name);
    }
    let st = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) != SFlag::S_IFDIR {
        return Ok(());
    }
    let mut level = open_level(dir, name)?;
    for child in std::mem::take(&mut level.names) {
        remove_unwritten(level.dir.as_fd(), &path, &child, written)?;
    }
    Ok(())
}

/// Remove every child of the directory `dir` (at `dir_path`) that this layer did not write.
pub(crate) fn clear_unwritten(
    dir: BorrowedFd<'_>,
    dir_path: &[u8],
    written: &Written,
) -> io::Result<()> {
    let mut d = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for child in list(&mut d)? {
        remove_unwritten(d.as_fd(), dir_path, &child, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_trees_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("t/a/b/c")).unwrap();
        fs::write(root.join("t/a/b/c/f"), b"f").unwrap();
        symlink(&outside, root.join("t/a/link")).unwrap();
        let fd = nix::fcntl::open(&root, OFlag::O_PATH, Mode::empty()).unwrap();
        remove_any(fd.as_fd(), b"t").unwrap();
        assert!(!root.join("t").exists());
        assert!(outside.join("keep").exists());
        remove_any(fd.as_fd(), b"missing").unwrap();
    }

    #[test]
    fn keeps_what_was_written() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("d/sub")).unwrap();
        fs::write(root.join("d/old"), b"").unwrap();
        fs::write(root.join("d/new"), b"").unwrap();
        fs::write(root.join("d/sub/old"), b"").unwrap();
        fs::write(root.join("d/sub/new"), b"").unwrap();
        let mut written = Written::default();
        written.mark(b"d/new");
        written.mark(b"d/sub/new");
        assert!(written.contains(b"d") && written.contains(b"d/sub"));
        let fd = nix::fcntl::open(&root.join("d"), OFlag::O_PATH, Mode::empty()).unwrap();
        clear_unwritten(fd.as_fd(), b"d", &written).unwrap();
        assert!(root.join("d/new").exists() && root.join("d/sub/new").exists());
        assert!(!root.join("d/old").exists() && !root.join("d/sub/old").exists());
    }
}
