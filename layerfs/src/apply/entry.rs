//! Writing one entry: the per-kind steps, in the order the kernel needs them.
//!
//! For every kind: resolve the parent under the root (cached between consecutive entries of one
//! directory), create the final component with `O_EXCL` / the `*at` calls (replacing what is in
//! the way, never following it), then owner, xattrs, mode, times. The owner comes before the
//! xattrs and the mode because `chown` clears setuid, setgid and `security.capability`.
//! Directory times are set last, in [`Applier::finish`], since later entries change them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use xattr::FileExt;

use super::archive::{Body, Header, Kind, Names, StreamError, Time};
use super::names::{self, MAX_PATH};
use super::remove::{self, Written};
use super::{
    ApplyError, ApplyOptions, DeviceNodes, EntryCounts, EntryError, MAX_SKIPPED_LISTED, Ownership,
    SkipReason, Skipped, Xattrs,
};
use crate::secure::Root;
use crate::whiteout::{self, Format, TarName, WHITEOUT_PREFIX};

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

    /// Set the owner with `chown` unless the entry already has it.
    fn owner(
        &mut self,
        raw: &[u8],
        header: &Header,
        already: Option<(u32, u32)>,
        chown: impl FnOnce(Uid, Gid) -> nix::Result<()>,
    ) -> Result<Option<(u32, u32)>, EntryError> {
        if self.opts.ownership == Ownership::Ignore
            || already
                .is_some_and(|(u, g)| u64::from(u) == header.uid && u64::from(g) == header.gid)
        {
            return Ok(None);
        }
        let result = match (u32::try_from(header.uid), u32::try_from(header.gid)) {
            (Ok(uid), Ok(gid)) if uid != u32::MAX && gid != u32::MAX => {
                chown(Uid::from_raw(uid), Gid::from_raw(gid))
            }
            _ => Err(Errno::EINVAL),
        };
        match result {
            Ok(()) => Ok(None),
            Err(errno @ (Errno::EPERM | Errno::EINVAL))
                if self.opts.ownership == Ownership::BestEffort =>
            {
                self.skip(
                    raw,
                    SkipReason::Owner {
                        uid: header.uid,
                        gid: header.gid,
                        errno,
                    },
                );
                Ok(u32::try_from(header.uid)
                    .ok()
                    .zip(u32::try_from(header.gid).ok())
                    .filter(|&ids| ids != (0, 0)))
            }
            Err(e) => Err(io_err("chown")(e)),
        }
    }

    /// Whether the options let the layer set the xattr `name`.
    fn xattr_allowed(&self, name: &[u8]) -> bool {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            return false;
        }
        match self.opts.xattrs {
            Xattrs::Ignore => false,
            Xattrs::Unprivileged => name.starts_with(b"user.") || name == b"security.capability",
            Xattrs::All => {
                name.starts_with(b"user.")
                    || name.starts_with(b"security.")
                    || name.starts_with(b"trusted.")
            }
        }
    }

    /// Set the entry's xattrs with `set`.
    fn xattrs(
        &mut self,
        raw: &[u8],
        names: &Names,
        mut set: impl FnMut(&OsStr, &[u8]) -> io::Result<()>,
    ) -> Result<(), EntryError> {
        for (key, value) in names.xattrs() {
            let name = String::from_utf8_lossy(key).into_owned();
            if !self.xattr_allowed(key) || key.contains(&0) {
                self.skip(raw, SkipReason::Xattr { name, errno: None });
                continue;
            }
            if let Err(e) = set(OsStr::from_bytes(key), value) {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
                match errno {
                    Errno::EPERM
                    | Errno::EACCES
                    | Errno::ENOTSUP
                    | Errno::E2BIG
                    | Errno::ERANGE
                    | Errno::EINVAL => self.skip(
                        raw,
                        SkipReason::Xattr {
                            name,
                            errno: Some(errno),
                        },
                    ),
                    _ => return Err(io_err2("set an xattr")(e)),
                }
            }
        }
        Ok(())
    }

    /// Set xattrs on `name` in `parent`, not following it (symlinks, fifos, devices), through
    /// `/proc/self/fd/PARENT/NAME`.
    fn xattrs_at(
        &mut self,
        raw: &[u8],
        names: &Names,
        parent: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<(), EntryError> {
        if names.xattrs().next().is_none() {
            return Ok(());
        }
        let mut at = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
        at.extend_from_slice(name);
        let at = PathBuf::from(OsStr::from_bytes(&at));
        self.xattrs(raw, names, |k, v| xattr::set(&at, k, v))
    }

    fn dir(&mut self, header: &Header, names: &Names, path: &[u8]) -> Result<(), EntryError> {
        let raw = names.path();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (fd, already) = if path.is_empty() {
            let fd = self
                .root
                .open_nofollow(b"", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(io_err2("open the target directory"))?;
            (fd, None)
        } else {
            let (parent_path, name) = names::split(path);
            let (parent, gid) = self.parent(parent_path)?;
            let parent = parent.as_fd();
            let mkdir = || nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700));
            let fresh = match mkdir() {
                Ok(()) => true,
                Err(Errno::EEXIST) => {
                    let st = nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(io_err("stat"))?;
                    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                        false
                    } else {
                        self.clear_way(parent, name)?;
                        mkdir().map_err(io_err("mkdir"))?;
                        true
                    }
                }
                Err(e) => return Err(io_err("mkdir")(e)),
            };
            let fd = nix::fcntl::openat(parent, name, flags, Mode::empty())
                .map_err(io_err("open the directory"))?;
            (fd, fresh.then_some((self.euid, gid)))
        };
        let unset = self.owner(raw, header, already, |u, g| {
            nix::unistd::fchown(fd.as_fd(), Some(u), Some(g))
        })?;
        let file = File::from(fd);
        self.xattrs(raw, names, |k, v| file.set_xattr(k, v))?;
        record_owner(unset, |k, v| file.set_xattr(k, v));
        let mode = header.mode & 0o7777;
        let now = if mode & 0o700 == 0o700 {
            mode
        } else {
            mode | 0o700
        };
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(now))
            .map_err(io_err("chmod"))?;
        self.dirs.insert(
            path.into(),
            DirMeta {
                atime: header.atime.unwrap_or(header.mtime),
                mtime: header.mtime,
                mode: (now != mode).then_some(mode),
            },
        );
        // The next entries are most likely in this directory.
        self.set_parent(path, Rc::new(OwnedFd::from(file)))
    }

    fn file<R: BufRead>(
        &mut self,
        header: &Header,
        names: &Names,
        body: &mut Body<R>,
        parent_path: &[u8],
        name: &[u8],
    ) -> Result<(), Fail> {
        let raw = names.path();
        let (parent, gid) = self.parent(parent_path)?;
        let parent = parent.as_fd();
        let fd = self.create(parent, name, "create the file", || {
            nix::fcntl::openat(
                parent,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        let mut file = File::from(fd);
        loop {
            let chunk = body.chunk().map_err(Fail::Stream)?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            file.write_all(chunk).map_err(io_err2("write"))?;
            body.consume(n);
        }
        let unset = self.owner(raw, header, Some((self.euid, gid)), |u, g| {
            nix::unistd::fchown(file.as_fd(), Some(u), Some(g))
        })?;
        self.xattrs(raw, names, |k, v| file.set_xattr(k, v))?;
        record_owner(unset, |k, v| file.set_xattr(k, v));
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(header.mode & 0o7777))
            .map_err(io_err("chmod"))?;
        let (atime, mtime) = times(header);
        nix::sys::stat::futimens(file.as_fd(), &atime, &mtime).map_err(io_err("set times"))?;
        Ok(())
    }

    fn symlink(
        &mut self,
        header: &Header,
        names: &Names,
        parent_path: &[u8],
        name: &[u8],
    ) -> Result<(), EntryError> {
        let raw = names.path();
        let target = names.link();
        if target.contains(&0) {
            return Err(EntryError::NulInName);
        }
        if target.is_empty() {
            return Err(EntryError::InvalidLinkTarget {
                target: PathBuf::new(),
            });
        }
        if target.len() > MAX_PATH {
            return Err(EntryError::NameTooLong {
                len: target.len(),
                max: MAX_PATH,
            });
        }
        let (parent, gid) = self.parent(parent_path)?;
        let parent = parent.as_fd();
        self.create(parent, name, "symlink", || {
            nix::unistd::symlinkat(target, parent, name)
        })?;
        self.owner(raw, header, Some((self.euid, gid)), |u, g| {
            nix::unistd::fchownat(parent, name, Some(u), Some(g), AtFlags::AT_SYMLINK_NOFOLLOW)
        })?;
        self.xattrs_at(raw, names, parent, name)?;
        let (atime, mtime) = times(header);
        nix::sys::stat::utimensat(
            parent,
            name,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_err("set times"))
    }

    fn hardlink(
        &mut self,
        names: &Names,
        path: &[u8],
        parent_path: &[u8],
        name: &[u8],
    ) -> Result<(), EntryError> {
        let raw_target = names.link();
        let mut target = std::mem::take(&mut self.link);
        let result = self.hardlink_to(raw_target, &mut target, path, parent_path, name);
        self.link = target;
        result
    }

    fn hardlink_to(
        &mut self,
        raw_target: &[u8],
        target: &mut Vec<u8>,
        path: &[u8],
        parent_path: &[u8],
        name: &[u8],
    ) -> Result<(), EntryError> {
        let target_path = || PathBuf::from(OsStr::from_bytes(raw_target));
        match names::normalize(raw_target, target) {
            Ok(()) => {}
            Err(EntryError::ParentDir) => {
                return Err(EntryError::LinkEscapes {
                    target: target_path(),
                });
            }
            Err(e) => return Err(e),
        }
        if target.is_empty() {
            return Err(EntryError::InvalidLinkTarget {
                target: target_path(),
            });
        }
        let (parent, _) = self.parent(parent_path)?;
        let parent = parent.as_fd();
        if target.as_slice() == path {
            // A link to itself: it is already there, or there is nothing to link.
            return nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(drop)
                .map_err(io_err("hardlink"));
        }
        let (target_dir, target_name) = names::split(target);
        let target_dir = self
            .root
            .open_dir_bytes(target_dir)
            .map_err(io_err2("resolve the hardlink target's directory"))?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
        self.create(parent, name, "hardlink", || {
            nix::unistd::linkat(
                target_dir.as_fd(),
                target_name,
                parent,
                name,
                AtFlags::empty(),
            )
        })?;
        Ok(())
    }

    fn node(
        &mut self,
        header: &Header,
        names: &Names,
        parent_path: &[u8],
        name: &[u8],
    ) -> Result<(), EntryError> {
        let raw = names.path();
        let kind = match header.kind {
            Kind::Char => SFlag::S_IFCHR,
            Kind::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        if kind != SFlag::S_IFIFO && self.opts.devices == DeviceNodes::Skip {
            self.skip(
                raw,
                SkipReason::DeviceNode {
                    block: kind == SFlag::S_IFBLK,
                    major: header.dev_major,
                    minor: header.dev_minor,
                },
            );
            return Ok(());
        }
        let dev = if kind == SFlag::S_IFIFO {
            0
        } else {
            let (Ok(major), Ok(minor)) = (
                u32::try_from(header.dev_major),
                u32::try_from(header.dev_minor),
            ) else {
                return Err(io_err("mknod")(Errno::EINVAL));
            };
            libc::makedev(major, minor)
        };
        let (parent, gid) = self.parent(parent_path)?;
        let parent = parent.as_fd();
        self.create(parent, name, "mknod", || {
            nix::sys::stat::mknodat(parent, name, kind, Mode::from_bits_truncate(0o600), dev)
        })?;
        self.owner(raw, header, Some((self.euid, gid)), |u, g| {
            nix::unistd::fchownat(parent, name, Some(u), Some(g), AtFlags::AT_SYMLINK_NOFOLLOW)
        })?;
        self.xattrs_at(raw, names, parent, name)?;
        // Just created by mknodat, so not a symlink: following is harmless.
        nix::sys::stat::fchmodat(
            parent,
            name,
            Mode::from_bits_truncate(header.mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(io_err("chmod"))?;
        let (atime, mtime) = times(header);
        nix::sys::stat::utimensat(
            parent,
            name,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_err("set times"))
    }

    /// `.wh.NAME` in `parent`: hide `NAME` of the lower layers.
    fn whiteout(&mut self, parent_path: &[u8], hidden: &[u8]) -> Result<(), EntryError> {
        self.counts.whiteouts += 1;
        match self.opts.format {
            Format::Flat => {
                let dir = match self.root.open_dir_bytes(parent_path) {
                    Ok(fd) => fd,
                    // Nothing there: nothing to hide.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                        return Ok(());
                    }
                    Err(e) => return Err(io_err2("resolve the whiteout's directory")(e)),
                };
                self.invalidate();
                remove::remove_unwritten(dir.as_fd(), parent_path, hidden, &self.written)
                    .map_err(io_err2("remove a whited-out entry"))
            }
            Format::Overlay(xattr) => {
                let mut path = Vec::new();
                names::join(parent_path, hidden, &mut path);
                let (parent, _) = self.parent(parent_path)?;
                let parent = parent.as_fd();
                if self.written.contains(&path) {
                    // This layer wrote it: it stays. If it is a directory, the lower one is
                    // hidden all the same, so the layer's directory becomes opaque (what flat
                    // does by removing the lower children).
                    let dir = nix::fcntl::openat(
                        parent,
                        hidden,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    );
                    return match dir {
                        Ok(fd) => File::from(fd)
                            .set_xattr(xattr.opaque(), b"y")
                            .map_err(io_err2("set the opaque xattr")),
                        Err(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT) => Ok(()),
                        Err(e) => Err(io_err("open a whited-out directory")(e)),
                    };
                }
                self.create(parent, hidden, "create a whiteout device", || {
                    nix::sys::stat::mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                })
            }
        }
    }

    /// `.wh..wh..opq` in `dir`: hide every lower entry of `dir`.
    fn opaque(&mut self, dir_path: &[u8]) -> Result<(), EntryError> {
        self.counts.opaques += 1;
        let Some(dir) = self.opaque_dir(dir_path)? else {
            return Ok(());
        };
        match self.opts.format {
            Format::Flat => {
                self.invalidate();
                remove::clear_unwritten(dir.as_fd(), dir_path, &self.written)
                    .map_err(io_err2("remove a directory's hidden entries"))?;
            }
            Format::Overlay(xattr) => {
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open the opaque directory"))?;
                File::from(fd)
                    .set_xattr(xattr.opaque(), b"y")
                    .map_err(io_err2("set the opaque xattr"))?;
            }
        }
        self.written.mark(dir_path);
        Ok(())
    }

    /// The directory an opaque marker sits in: the marker says it is a directory of this layer,
    /// so it is made one (created, or replacing a lower non-directory, a symlink included),
    /// unless this layer itself wrote something else there (`None`: nothing to make opaque).
    fn opaque_dir(&mut self, dir_path: &[u8]) -> Result<Option<OwnedFd>, EntryError> {
        if dir_path.is_empty() {
            return self
                .root
                .open_dir_bytes(b"")
                .map(Some)
                .map_err(io_err2("open the target directory"));
        }
        let (parent_path, name) = names::split(dir_path);
        let (parent, _) = self.parent(parent_path)?;
        let parent = parent.as_fd();
        let open = || {
            nix::fcntl::openat(
                parent,
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        match open() {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR | Errno::ELOOP) => {
                if self.written.contains(dir_path) {
                    return Ok(None);
                }
                self.clear_way(parent, name)?;
            }
            Err(e) => return Err(io_err("open the opaque directory")(e)),
        }
        match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_err("mkdir")(e)),
        }
        open()
            .map(Some)
            .map_err(io_err("open the opaque directory"))
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

/// Keep an owner that could not be set in [`crate::idmap::ROOTLESS_XATTR`], as umoci does
/// (regular files and directories only: a user xattr cannot be set on others). Best effort:
/// a filesystem without user xattrs keeps the caller as owner, as before.
fn record_owner(unset: Option<(u32, u32)>, set: impl FnOnce(&OsStr, &[u8]) -> io::Result<()>) {
    if let Some((uid, gid)) = unset {
        let value = crate::idmap::encode_owner(uid, gid);
        let _ = set(OsStr::new(crate::idmap::ROOTLESS_XATTR), &value);
    }
}
