//! Work done as root of a user namespace with subordinate id maps: what an unprivileged
//! process cannot do on its own files once they belong to its subordinate ids (give an
//! unpacked layer the owners its tar recorded, remove a tree that holds such files).
//!
//! A forked child enters a new user namespace, waits while the parent writes its maps with
//! `newuidmap`/`newgidmap`, becomes its root, does the work and reports an errno. The child
//! of a fork in a multi-threaded process is a copy of one thread: the work must take no lock
//! another thread may hold (glibc's allocator is made safe across `fork`; the functions here
//! take no other lock). Its errors come back as an `io::Error` from the errno.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{ForkResult, Gid, Uid};

use crate::idmap::{self, IdMaps};

/// The child's first byte: in its namespace, waiting for the maps.
const READY: u8 = 1;
/// The child's last report: this byte, then its errno (0: done).
const DONE: u8 = 2;

/// Run `work` as root (uid and gid 0) of a new user namespace with `maps`, in a forked child.
pub fn run_as_root(maps: &IdMaps, work: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child only makes system calls and runs `work` (see the module's doc), then
    // `_exit`s without running the parent's destructors.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            let errno = match child(&ready_w, &go_r, work) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            let mut report = [DONE, 0, 0, 0, 0];
            report[1..].copy_from_slice(&errno.to_ne_bytes());
            let _ = nix::unistd::write(&ready_w, &report);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            let result = parent(maps, child.as_raw() as u32, &ready_r, go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

fn child(ready: &OwnedFd, go: &OwnedFd, work: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)?;
    nix::unistd::write(ready, &[READY])?;
    let mut byte = [0u8];
    if nix::unistd::read(go.as_fd(), &mut byte)? != 1 {
        return Err(Errno::ECANCELED.into());
    }
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))?;
    work()
}

fn parent(maps: &IdMaps, pid: u32, ready: &OwnedFd, go: OwnedFd) -> io::Result<()> {
    let mut tag = [0u8];
    read_exact(ready, &mut tag)?;
    if tag[0] == READY {
        maps.write_for(pid).map_err(io::Error::other)?;
        nix::unistd::write(&go, &[1])?;
        drop(go);
        read_exact(ready, &mut tag)?;
    }
    let mut errno = [0u8; 4];
    read_exact(ready, &mut errno)?;
    match i32::from_ne_bytes(errno) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Fill `buf` from `fd`; EOF first is the helper's death.
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_fd(), &mut buf[got..]) {
            Ok(0) => return Err(io::Error::other("the user namespace helper died")),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Remove the tree at `path` as root of a user namespace with `maps`, where some of it
/// belongs to subordinate ids (directories the caller may not write in). Modes are given back
/// first where a directory is not writable even by its owner.
pub fn remove_tree(maps: &IdMaps, path: &Path) -> io::Result<()> {
    run_as_root(maps, || match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
}

/// Give every entry under `dir` (the root included, symlinks not followed) the owner its
/// [`idmap::ROOTLESS_XATTR`] records, as root of a user namespace with `maps`, and drop the
/// record: the ids are then real, through the maps, and a container with the same maps sees
/// them. Set-id bits and file capabilities, which `chown` clears, are put back. Entries
/// without a record keep their owner (the caller's, root inside).
pub fn restore_owners(maps: &IdMaps, dir: &Path) -> io::Result<()> {
    run_as_root(maps, || {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                for entry in fs::read_dir(&path)? {
                    stack.push(entry?.path());
                }
            }
            if !(meta.is_dir() || meta.is_file()) {
                continue;
            }
            let Some(value) = xattr::get(&path, idmap::ROOTLESS_XATTR)? else {
                continue;
            };
            let Some((uid, gid)) = idmap::decode_owner(&value) else {
                continue;
            };
            let caps = xattr::get(&path, "security.capability")?;
            std::os::unix::fs::lchown(&path, uid, gid)?;
            xattr::remove(&path, idmap::ROOTLESS_XATTR)?;
            if let Some(caps) = caps {
                xattr::set(&path, "security.capability", &caps)?;
            }
            if meta.mode() & 0o6000 != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
        }
        Ok(())
    })
}
