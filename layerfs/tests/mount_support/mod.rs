//! Helpers for the tests that mount: guards that unmount on drop, mountinfo queries, builders
//! of layer directories in overlay format, and a recursive fingerprint of a tree.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use molde_layerfs::OverlayXattr;
use molde_layerfs::mount::unmount;

/// Unmounts its target when dropped (best effort), so a failing test leaks no mount.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    armed: bool,
}

impl MountGuard {
    /// Guard the mount at `target`.
    pub fn new(target: &Path) -> MountGuard {
        MountGuard {
            target: target.to_path_buf(),
            armed: true,
        }
    }

    /// Unmount now, reporting failure.
    pub fn unmount(mut self) {
        self.armed = false;
        unmount(&self.target).expect("unmount");
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = unmount(&self.target);
        }
    }
}

/// Decode mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| b.is_ascii_digit())
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Every mount point of this process' mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape_mountinfo))
        .collect()
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_points().contains(&path)
}

/// The mount points at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mount_points()
        .into_iter()
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Builds a layer directory in overlay format.
#[derive(Debug, Clone)]
pub struct LayerDir {
    /// The layer's root.
    pub root: PathBuf,
    /// The opaque xattr namespace.
    pub xattr: OverlayXattr,
}

impl LayerDir {
    /// A new, empty layer at `root` (created).
    pub fn new(root: impl Into<PathBuf>, xattr: OverlayXattr) -> LayerDir {
        let root = root.into();
        fs::create_dir_all(&root).expect("create layer dir");
        LayerDir { root, xattr }
    }

    fn parent(&self, rel: &str) -> PathBuf {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        path
    }

    /// A regular file with `contents` and `mode`.
    pub fn file(&self, rel: &str, contents: &[u8], mode: u32) -> &Self {
        let path = self.parent(rel);
        fs::write(&path, contents).expect("write file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// A directory.
    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.root.join(rel)).expect("mkdir");
        self
    }

    /// A symlink to `to`.
    pub fn symlink(&self, rel: &str, to: &str) -> &Self {
        let path = self.parent(rel);
        symlink(to, path).expect("symlink");
        self
    }

    /// An overlay whiteout (char device 0/0) hiding `rel` of lower layers.
    pub fn whiteout(&self, rel: &str) -> &Self {
        let path = self.parent(rel);
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .expect("mknod whiteout");
        self
    }

    /// An opaque directory (hides every lower entry of `rel`).
    pub fn opaque(&self, rel: &str) -> &Self {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).expect("mkdir opaque");
        xattr::set(&path, self.xattr.opaque(), b"y").expect("set opaque xattr");
        self
    }
}

/// One entry of a [`fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Print {
    /// `f`, `d`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u64,
    /// File contents, symlink target.
    pub data: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Modification time (seconds, nanoseconds) of non-directories.
    pub mtime: (i64, i64),
}

/// Everything about the tree under `root`: every entry's type, mode, owner, contents, target,
/// xattrs and (for non-directories) mtime, by relative path.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, Print> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Print>) {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path).expect("lstat");
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_file() {
        'f'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let data = match kind {
        'f' => {
            let mut buf = Vec::new();
            fs::File::open(&path)
                .expect("open")
                .read_to_end(&mut buf)
                .expect("read");
            buf
        }
        'l' => fs::read_link(&path)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec(),
        _ => Vec::new(),
    };
    let mut xattrs = BTreeMap::new();
    if kind != 'l' {
        for name in xattr::list(&path).expect("listxattr") {
            let value = xattr::get(&path, &name)
                .expect("getxattr")
                .unwrap_or_default();
            xattrs.insert(name, value);
        }
    }
    out.insert(
        rel.to_path_buf(),
        Print {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev(),
            data,
            xattrs,
            mtime: if kind == 'd' {
                (0, 0)
            } else {
                (meta.mtime(), meta.mtime_nsec())
            },
        },
    );
    if kind == 'd' {
        let mut names: Vec<_> = fs::read_dir(&path)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            walk(root, &rel.join(name), out);
        }
    }
}

/// The sorted names in directory `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
