//! Paths joined securely under a root directory.
//!
//! A [`Root`] holds an `O_PATH` descriptor of a directory and resolves relative paths *inside*
//! it, the way a process whose `/` is that directory would: symlinks are followed, but `..`,
//! absolute paths and absolute symlink targets are clamped to the root, so no path handed to a
//! [`Root`] reaches anything outside it.
//!
//! On Linux 5.6 and later this is one `openat2(2)` call with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`. Where `openat2` is missing, a component walk does the same in user
//! space: each component is opened with `O_PATH | O_NOFOLLOW` relative to the previous one, and a
//! symlink met on the way is read and its target spliced into the remaining path (absolute
//! targets restart at the root, `..` never climbs above it).
//!
//! Nothing here follows the *final* component of a path that is about to be created or
//! replaced: callers get a descriptor of the parent directory and use the `*at` calls on it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

/// How many symlinks one resolution may follow before it fails with `ELOOP` (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// Whether `openat2` works here: not probed yet, yes, or no.
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);
const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;

/// A directory that paths are resolved inside of, never outside.
///
/// # Example
///
/// ```
/// use molde_layerfs::secure::Root;
/// use std::path::Path;
///
/// let dir = tempfile::tempdir()?;
/// std::os::unix::fs::symlink("/../../etc", dir.path().join("escape"))?;
/// let root = Root::open(dir.path())?;
/// // "escape/passwd/.." would be /etc on the host; under the root it is <dir>/etc, which the
/// // mkdir_all below creates inside the root.
/// root.mkdir_all(Path::new("escape"))?;
/// assert!(dir.path().join("etc").is_dir());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    walk_only: bool,
}

impl Root {
    /// Open the directory at `path` as a root. `path` itself is resolved normally (it is the
    /// caller's own path); everything resolved through the returned [`Root`] stays under it.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            walk_only: false,
        })
    }

    /// A root that never uses `openat2` and always resolves with the component walk, as on
    /// kernels older than 5.6. Meant for tests of the fallback.
    #[doc(hidden)]
    pub fn open_walk_only(path: &Path) -> io::Result<Root> {
        let mut root = Root::open(path)?;
        root.walk_only = true;
        Ok(root)
    }

    /// Open the directory `rel` resolved inside the root, as an `O_PATH | O_DIRECTORY`
    /// descriptor usable with the `*at` calls.
    ///
    /// Symlinks on the way are followed, but `..`, absolute names and absolute links are
    /// clamped to the root (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, or the
    /// component walk where `openat2` is missing). An empty `rel` is the root itself.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_dir_bytes(rel.as_os_str().as_bytes())
    }

    /// Create the missing directories of `rel` (mode 0755, less the umask) inside the root,
    /// like `mkdir -p` with the root as `/`, and return the last one as in [`Root::open_dir`].
    ///
    /// A symlink on the way is followed under the root, so a dangling link gets its target
    /// created inside the root, never outside.
    pub fn mkdir_all(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.mkdir_all_bytes(rel.as_os_str().as_bytes())
    }

    /// [`Root::open_dir`] for a path given as bytes.
    pub(crate) fn open_dir_bytes(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return self.fd.try_clone();
        }
        match self.openat2(rel, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Some(result) => result,
            None => self.walk(rel, false),
        }
    }

    /// [`Root::mkdir_all`] for a path given as bytes.
    pub(crate) fn mkdir_all_bytes(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        match self.open_dir_bytes(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.walk(rel, true),
            other => other,
        }
    }

    /// Open `rel` inside the root with `flags`, never following its final component (a
    /// symlink there fails with `ELOOP`, or `ENOTDIR` with `O_DIRECTORY`).
    pub(crate) fn open_nofollow(&self, rel: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if rel.is_empty() {
            return Ok(nix::fcntl::openat(
                self.fd.as_fd(),
                ".",
                flags,
                Mode::empty(),
            )?);
        }
        if let Some(result) = self.openat2(rel, flags) {
            return result;
        }
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if name.is_empty() || name == b"." || name == b".." {
            let dir = self.walk(rel, false)?;
            return Ok(nix::fcntl::openat(dir.as_fd(), ".", flags, Mode::empty())?);
        }
        let dir = self.walk(parent, false)?;
        Ok(nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty())?)
    }

    /// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, or `None` where
    /// `openat2` is not available.
    fn openat2(&self, rel: &[u8], flags: OFlag) -> Option<io::Result<OwnedFd>> {
        if self.walk_only || OPENAT2.load(Ordering::Relaxed) == OPENAT2_NO {
            return None;
        }
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: the kernel saw a concurrent rename or mount and refused to guess; retry.
        for _ in 0..16 {
            match nix::fcntl::openat2(self.fd.as_fd(), rel, how) {
                Ok(fd) => {
                    OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
                    return Some(Ok(fd));
                }
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => {
                    OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
                    return None;
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
        None
    }

    /// Resolve the directory `rel` under the root by hand, one `O_PATH | O_NOFOLLOW` component
    /// at a time, creating missing directories when `create` is set.
    fn walk(&self, rel: &[u8], create: bool) -> io::Result<OwnedFd> {
        // Directories entered so far, below the root (empty: at the root).
        let mut stack: Vec<OwnedFd> = Vec::new();
        // Components still to resolve, the next one last.
        let mut pending: Vec<Vec<u8>> = Vec::new();
        push_components(&mut pending, rel);
        let mut links = 0u32;
        let mut created = 0usize;
        while let Some(comp) = pending.pop() {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if comp == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let opened = nix::fcntl::openat(
                cur,
                comp.as_slice(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            let fd = match opened {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create && created < 4096 => {
                    match nix::sys::stat::mkdirat(
                        cur,
                        comp.as_slice(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    created += 1;
                    pending.push(comp);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let st = nix::sys::stat::fstat(fd.as_fd())?;
            match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
                SFlag::S_IFDIR => stack.push(fd),
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP.into());
                    }
                    let target = nix::fcntl::readlinkat(fd.as_fd(), "")?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    push_components(&mut pending, target);
                }
                _ => return Err(Errno::ENOTDIR.into()),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => Ok(self.fd.try_clone()?),
        }
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Push the components of `path` onto `pending` so that the first one is popped first.
fn push_components(pending: &mut Vec<Vec<u8>>, path: &[u8]) {
    for comp in path.split(|&b| b == b'/').rev() {
        if !comp.is_empty() && comp != b"." {
            pending.push(comp.to_vec());
        }
    }
}

/// The `OsStr` of a byte string (for messages and `Path`s).
pub(crate) fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn both(dir: &Path) -> [Root; 2] {
        [Root::open(dir).unwrap(), Root::open_walk_only(dir).unwrap()]
    }

    fn same_dir(a: &OwnedFd, b: &Path) -> bool {
        let sa = nix::sys::stat::fstat(a.as_fd()).unwrap();
        let sb = nix::sys::stat::stat(b).unwrap();
        (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
    }

    #[test]
    fn clamps_dotdot_absolute_and_links_to_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root_dir = tmp.path().join("root");
        fs::create_dir_all(root_dir.join("a/b")).unwrap();
        fs::create_dir_all(tmp.path().join("outside")).unwrap();
        symlink("../../..", root_dir.join("a/up")).unwrap();
        symlink("/", root_dir.join("slash")).unwrap();
        symlink(tmp.path().join("outside"), root_dir.join("abs")).unwrap();
        symlink("loop2", root_dir.join("loop1")).unwrap();
        symlink("loop1", root_dir.join("loop2")).unwrap();
        fs::write(root_dir.join("file"), b"x").unwrap();
        for root in both(&root_dir) {
            let fd = root.open_dir(Path::new("a/up")).unwrap();
            assert!(same_dir(&fd, &root_dir), "a/up is the root");
            let fd = root.open_dir(Path::new("../../a/b/../..")).unwrap();
            assert!(same_dir(&fd, &root_dir));
            let fd = root.open_dir(Path::new("slash/a/b")).unwrap();
            assert!(same_dir(&fd, &root_dir.join("a/b")));
            let fd = root.open_dir(Path::new("")).unwrap();
            assert!(same_dir(&fd, &root_dir));
            let err = root.open_dir(Path::new("abs")).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ENOENT),
                "abs is not followed out"
            );
            let err = root.open_dir(Path::new("loop1/x")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
            let err = root.open_dir(Path::new("file")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        }
    }

    #[test]
    fn mkdir_all_creates_through_dangling_links_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        for (i, walk) in [false, true].into_iter().enumerate() {
            let root_dir = tmp.path().join(format!("root{i}"));
            fs::create_dir_all(&root_dir).unwrap();
            symlink(&outside, root_dir.join("abs")).unwrap();
            symlink("../../../x/y", root_dir.join("rel")).unwrap();
            let root = if walk {
                Root::open_walk_only(&root_dir).unwrap()
            } else {
                Root::open(&root_dir).unwrap()
            };
            let fd = root.mkdir_all(Path::new("abs/sub")).unwrap();
            let inside = root_dir
                .join(outside.strip_prefix("/").unwrap())
                .join("sub");
            assert!(same_dir(&fd, &inside));
            let fd = root.mkdir_all(Path::new("rel/z")).unwrap();
            assert!(same_dir(&fd, &root_dir.join("x/y/z")));
            let fd = root.mkdir_all(Path::new("p/q/r")).unwrap();
            assert!(same_dir(&fd, &root_dir.join("p/q/r")));
            assert!(!outside.exists(), "nothing created outside the root");
        }
    }

    #[test]
    fn open_nofollow_refuses_a_final_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("d")).unwrap();
        symlink("d", tmp.path().join("l")).unwrap();
        for root in both(tmp.path()) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            assert!(root.open_nofollow(b"d", flags).is_ok());
            let err = root.open_nofollow(b"l", flags).unwrap_err();
            assert!(matches!(
                err.raw_os_error(),
                Some(libc::ELOOP | libc::ENOTDIR)
            ));
        }
    }
}
