//! Writing one entry: the per-kind steps, in the order the kernel needs them.
//!
//! For every kind: resolve the parent under the root (cached between consecutive entries of one
//! directory), create the final component with `O_EXCL` / the `*at` calls (replacing what is in
//! the way, never following it), then owner, xattrs, mode, times. The owner comes before the
//! xattrs and the mode because `chown` clears setuid, setgid and `security.capability`.
//! Directory times are set last, in [`Applier::finish`], since later entries change them.
//!
//! The state of one apply ([`Applier`]: the parent cache, what this layer wrote, the counts)
//! is here; its steps are in `kinds` (one entry of each kind: dir, file, symlink, hardlink,
//! node), `meta` (owner and extended attributes) and `hide` (whiteouts and opaque markers).

mod hide;
mod kinds;
mod meta;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;

use super::archive::{Body, Header, Kind, Names, StreamError, Time};
use super::names;
use super::remove::{self, Written};
use super::{
    ApplyError, ApplyOptions, EntryCounts, EntryError, MAX_SKIPPED_LISTED, SkipReason, Skipped,
};
use crate::secure::Root;
use crate::whiteout::{self, TarName, WHITEOUT_PREFIX};

/// The prefix of aufs's own metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`).
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Why an entry failed: the entry itself, or the stream while reading its data.
enum Fail {
    Entry(EntryError),
    Stream(StreamError),
}

impl From<EntryError> for Fail {
    fn from(e: EntryError) -> Fail {
        Fail::Entry(e)
    }
}

/// An `EntryError::Io` for `op`.
fn io_err(op: &'static str) -> impl FnOnce(Errno) -> EntryError {
    move |e| EntryError::Io {
        op,
        source: e.into(),
    }
}

/// Like [`io_err`], for `io::Error`s.
fn io_err2(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
    move |source| EntryError::Io { op, source }
}

/// What is set on a directory once every entry has been written.
#[derive(Debug, Clone, Copy)]
struct DirMeta {
    atime: Time,
    mtime: Time,
    /// The mode, when it could not be set at once (it lacks `u+rwx`, which later entries need).
    mode: Option<u32>,
}

/// The parent directory of the last entry.
#[derive(Default)]
struct Parent {
    path: Vec<u8>,
    fd: Option<Rc<OwnedFd>>,
    /// The group new entries in it get (it is setgid), if not this process's.
    gid: Option<u32>,
}

/// The state of one apply: options, the caches, what was written, what was skipped.
pub(crate) struct Applier<'r> {
    root: &'r Root,
    root_fd: Rc<OwnedFd>,
    opts: ApplyOptions,
    euid: u32,
    egid: u32,
    parent: Parent,
    written: Written,
    dirs: HashMap<Box<[u8]>, DirMeta>,
    /// Scratch buffers, reused from entry to entry.
    path: Vec<u8>,
    link: Vec<u8>,
    counts: EntryCounts,
    skipped: Vec<Skipped>,
    skipped_total: u64,
}

impl<'r> Applier<'r> {
    /// Prepare to apply onto `root`.
    pub fn new(root: &'r Root, opts: &ApplyOptions) -> io::Result<Self> {
        Ok(Applier {
            root,
            root_fd: Rc::new(root.as_fd().try_clone_to_owned()?),
            opts: *opts,
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            parent: Parent::default(),
            written: Written::default(),
            dirs: HashMap::new(),
            path: Vec::new(),
            link: Vec::new(),
            counts: EntryCounts::default(),
            skipped: Vec::new(),
            skipped_total: 0,
        })
    }

    /// The counts and what was skipped.
    pub fn into_report(self) -> (EntryCounts, Vec<Skipped>, u64) {
        (self.counts, self.skipped, self.skipped_total)
    }

    /// Apply one entry; its data (if any) is read from `body`.
    pub fn entry<R: BufRead>(
        &mut self,
        header: &Header,
        names: &Names,
        body: &mut Body<R>,
    ) -> Result<(), ApplyError> {
        let raw = names.path();
        let mut path = std::mem::take(&mut self.path);
        let result = names::normalize(raw, &mut path)
            .map_err(Fail::Entry)
            .and_then(|()| self.dispatch(header, names, body, &path));
        self.path = path;
        result.map_err(|fail| match fail {
            Fail::Entry(reason) => ApplyError::entry(raw, reason),
            Fail::Stream(e) => super::stream_error(e),
        })
    }

    fn dispatch<R: BufRead>(
        &mut self,
        header: &Header,
        names: &Names,
        body: &mut Body<R>,
        path: &[u8],
    ) -> Result<(), Fail> {
        let raw = names.path();
        match header.kind {
            Kind::Unsupported(kind) => return Err(EntryError::UnsupportedType { kind }.into()),
            Kind::Sparse => return Err(EntryError::Sparse.into()),
            _ => {}
        }
        let (parent, name) = names::split(path);
        // Whiteout names: only as the last component, and only naming one entry.
        for comp in parent.split(|&b| b == b'/') {
            if comp.starts_with(AUFS_META_PREFIX) {
                self.skip(raw, SkipReason::AufsMetadata);
                return Ok(());
            }
            if comp.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(EntryError::InvalidWhiteout.into());
            }
        }
        match whiteout::classify(OsStr::from_bytes(name)) {
            TarName::Opaque => return self.opaque(parent).map_err(Fail::Entry),
            TarName::Whiteout(hidden) => {
                let hidden = hidden.as_bytes();
                if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                    self.skip(raw, SkipReason::AufsMetadata);
                    return Ok(());
                }
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(EntryError::InvalidWhiteout.into());
                }
                return self.whiteout(parent, hidden).map_err(Fail::Entry);
            }
            TarName::Plain => {}
        }
        self.count(header);
        if path.is_empty() && header.kind != Kind::Dir {
            return Err(EntryError::ReplacesRoot.into());
        }
        match header.kind {
            Kind::Dir => self.dir(header, names, path)?,
            Kind::File => self.file(header, names, body, parent, name)?,
            Kind::Symlink => self.symlink(header, names, parent, name)?,
            Kind::Hardlink => self.hardlink(names, path, parent, name)?,
            Kind::Char | Kind::Block | Kind::Fifo => self.node(header, names, parent, name)?,
            Kind::Sparse | Kind::Unsupported(_) => {}
        }
        self.written.mark(path);
        Ok(())
    }

    /// Record something not done.
    fn skip(&mut self, raw: &[u8], reason: SkipReason) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_SKIPPED_LISTED {
            self.skipped.push(Skipped {
                path: PathBuf::from(OsStr::from_bytes(raw)),
                reason,
            });
        }
    }

    /// The directory `parent` (normalized), created if missing, and the group new entries in
    /// it get.
    fn parent(&mut self, parent: &[u8]) -> Result<(Rc<OwnedFd>, u32), EntryError> {
        if let Some(fd) = &self.parent.fd
            && self.parent.path == parent
        {
            return Ok((fd.clone(), self.parent.gid.unwrap_or(self.egid)));
        }
        let fd = if parent.is_empty() {
            self.root_fd.clone()
        } else {
            Rc::new(
                self.root
                    .mkdir_all_bytes(parent)
                    .map_err(io_err2("resolve the parent directory"))?,
            )
        };
        self.written.mark(parent);
        self.set_parent(parent, fd.clone())?;
        Ok((fd, self.parent.gid.unwrap_or(self.egid)))
    }

    /// Make `fd` (the directory at `path`) the cached parent.
    fn set_parent(&mut self, path: &[u8], fd: Rc<OwnedFd>) -> Result<(), EntryError> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io_err("stat the parent directory"))?;
        self.parent.gid = (st.st_mode & libc::S_ISGID != 0).then_some(st.st_gid);
        self.parent.path.clear();
        self.parent.path.extend_from_slice(path);
        self.parent.fd = Some(fd);
        Ok(())
    }

    /// Forget the cached parent: something was removed, so a path may now resolve elsewhere.
    fn invalidate(&mut self) {
        self.parent.fd = None;
    }

    /// Remove what is at `name` in `parent`, so that an entry can take its place.
    fn clear_way(&mut self, parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), EntryError> {
        self.invalidate();
        remove::remove_any(parent, name).map_err(io_err2("remove the entry in the way"))
    }

    /// Run `make` (a create call); if the name is taken, clear the way and run it again.
    fn create<T>(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        op: &'static str,
        mut make: impl FnMut() -> nix::Result<T>,
    ) -> Result<T, EntryError> {
        match make() {
            Err(Errno::EEXIST) => {
                self.clear_way(parent, name)?;
                make().map_err(io_err(op))
            }
            other => other.map_err(io_err(op)),
        }
    }

    /// Set the directories' times, and the modes that had to wait, deepest first.
    pub fn finish(&mut self) -> Result<(), ApplyError> {
        self.invalidate();
        let mut dirs: Vec<(Box<[u8]>, DirMeta)> = self.dirs.drain().collect();
        let depth = |p: &[u8]| {
            if p.is_empty() {
                0
            } else {
                1 + p.iter().filter(|&&b| b == b'/').count()
            }
        };
        dirs.sort_unstable_by_key(|(p, _)| std::cmp::Reverse(depth(p)));
        for (path, meta) in dirs {
            let fail = |reason| ApplyError::entry(&path, reason);
            let fd = match self
                .root
                .open_nofollow(&path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            {
                Ok(fd) => fd,
                // Replaced by a later entry: its times are that entry's.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(fail(io_err2("open a directory to set its times")(e))),
            };
            nix::sys::stat::futimens(fd.as_fd(), &spec(meta.atime), &spec(meta.mtime))
                .map_err(|e| fail(io_err("set times")(e)))?;
            if let Some(mode) = meta.mode {
                nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| fail(io_err("chmod")(e)))?;
            }
        }
        Ok(())
    }

    /// Count an entry by kind.
    fn count(&mut self, header: &Header) {
        let c = &mut self.counts;
        match header.kind {
            Kind::Dir => c.dirs += 1,
            Kind::File => c.files += 1,
            Kind::Symlink => c.symlinks += 1,
            Kind::Hardlink => c.hardlinks += 1,
            Kind::Char => c.char_devices += 1,
            Kind::Block => c.block_devices += 1,
            Kind::Fifo => c.fifos += 1,
            Kind::Sparse | Kind::Unsupported(_) => {}
        }
    }
}

fn spec(t: Time) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}

/// The access and modification times of an entry.
fn times(header: &Header) -> (TimeSpec, TimeSpec) {
    (
        spec(header.atime.unwrap_or(header.mtime)),
        spec(header.mtime),
    )
}
