//! Owner and extended attributes of an entry: `chown` first (it clears setuid, setgid and
//! `security.capability`), then the xattrs the options allow; an owner that could not be set is
//! recorded in an xattr, as umoci does.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::{Applier, io_err, io_err2};
use crate::apply::archive::{Header, Names};
use crate::apply::{EntryError, Ownership, SkipReason, Xattrs};

impl Applier<'_> {
    /// Set the owner with `chown` unless the entry already has it.
    pub(super) fn owner(
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
    pub(super) fn xattr_allowed(&self, name: &[u8]) -> bool {
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
    pub(super) fn xattrs(
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
    pub(super) fn xattrs_at(
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
}

/// Keep an owner that could not be set in [`crate::idmap::ROOTLESS_XATTR`], as umoci does
/// (regular files and directories only: a user xattr cannot be set on others). Best effort:
/// a filesystem without user xattrs keeps the caller as owner, as before.
pub(super) fn record_owner(
    unset: Option<(u32, u32)>,
    set: impl FnOnce(&OsStr, &[u8]) -> io::Result<()>,
) {
    if let Some((uid, gid)) = unset {
        let value = crate::idmap::encode_owner(uid, gid);
        let _ = set(OsStr::new(crate::idmap::ROOTLESS_XATTR), &value);
    }
}
