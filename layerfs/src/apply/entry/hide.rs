//! Hiding lower content: a whiteout (`.wh.NAME`) and an opaque marker (`.wh..wh..opq`), flat
//! (remove what the lower layers had, never what this layer wrote) or overlay (a char device
//! 0/0, the opaque xattr).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use xattr::FileExt;

use super::{Applier, io_err, io_err2};
use crate::apply::EntryError;
use crate::apply::names;
use crate::apply::remove;
use crate::whiteout::Format;

impl Applier<'_> {
    /// `.wh.NAME` in `parent`: hide `NAME` of the lower layers.
    pub(super) fn whiteout(&mut self, parent_path: &[u8], hidden: &[u8]) -> Result<(), EntryError> {
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
    pub(super) fn opaque(&mut self, dir_path: &[u8]) -> Result<(), EntryError> {
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
    pub(super) fn opaque_dir(&mut self, dir_path: &[u8]) -> Result<Option<OwnedFd>, EntryError> {
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
}
