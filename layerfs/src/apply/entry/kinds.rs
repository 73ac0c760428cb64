//! One entry of each kind: a directory, a regular file (its data streamed from the tar), a
//! symlink, a hardlink (its target resolved under the root) and a device node or fifo.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use xattr::FileExt;

use super::meta::record_owner;
use super::{Applier, DirMeta, Fail, io_err, io_err2, times};
use crate::apply::archive::{Body, Header, Kind, Names};
use crate::apply::names::{self, MAX_PATH};
use crate::apply::{DeviceNodes, EntryError, SkipReason};

impl Applier<'_> {
    pub(super) fn dir(
        &mut self,
        header: &Header,
        names: &Names,
        path: &[u8],
    ) -> Result<(), EntryError> {
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

    pub(super) fn file<R: BufRead>(
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

    pub(super) fn symlink(
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

    pub(super) fn hardlink(
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

    pub(super) fn hardlink_to(
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

    pub(super) fn node(
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
}
