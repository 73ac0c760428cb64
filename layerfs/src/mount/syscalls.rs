//! Thin wrappers over the new mount API syscalls (`fsopen`, `fsconfig`, `fsmount`,
//! `move_mount`, `open_tree`, `mount_setattr`).
//!
//! libc has the `SYS_*` numbers for these but (for glibc targets, as of libc 0.2.191) not the
//! flag constants of `<linux/mount.h>`, so the few needed are defined here.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

// From <linux/mount.h>: not exported by libc for glibc targets.
/// `fsopen` flag: close the context fd on exec.
pub(crate) const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
/// `fsconfig` command: set a flag parameter (no value).
pub(crate) const FSCONFIG_SET_FLAG: libc::c_uint = 0;
/// `fsconfig` command: set a string parameter.
pub(crate) const FSCONFIG_SET_STRING: libc::c_uint = 1;
/// `fsconfig` command: create the superblock.
pub(crate) const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `fsmount` flag: close the mount fd on exec.
pub(crate) const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
/// Mount attribute: read-only.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `move_mount` flag: the source is the fd itself (empty path).
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `open_tree` flag: clone the tree into a new detached mount (a bind mount).
pub(crate) const OPEN_TREE_CLONE: libc::c_uint = 0x1;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn fd_result(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: the syscall returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

fn unit_result(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `fsopen(2)`: a new filesystem context for `fstype`.
pub(crate) fn fsopen(fstype: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `fstype` is a valid NUL-terminated string for the duration of the call.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
}

/// `fsconfig(2)` with `FSCONFIG_SET_STRING`.
pub(crate) fn fsconfig_string(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> Result<(), Errno> {
    // SAFETY: `key` and `value` are valid NUL-terminated strings; `fs` is an open fd.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0 as libc::c_int,
        )
    })
}

/// `fsconfig(2)` with `FSCONFIG_SET_FLAG`.
pub(crate) fn fsconfig_flag(fs: BorrowedFd<'_>, key: &CStr) -> Result<(), Errno> {
    // SAFETY: `key` is a valid NUL-terminated string; the value must be NULL for a flag.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0 as libc::c_int,
        )
    })
}

/// `fsconfig(2)` with `FSCONFIG_CMD_CREATE`.
pub(crate) fn fsconfig_create(fs: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: key and value must be NULL for a command; `fs` is an open fd.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0 as libc::c_int,
        )
    })
}

/// `fsmount(2)`: a detached mount of the created superblock.
pub(crate) fn fsmount(fs: BorrowedFd<'_>, attr_flags: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integer arguments; `fs` is an open fd.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attr_flags as libc::c_uint,
        )
    })
}

/// `move_mount(2)` of the detached mount `mnt` onto `target`.
pub(crate) fn move_mount_to(mnt: BorrowedFd<'_>, target: &CStr) -> Result<(), Errno> {
    // SAFETY: the empty string and `target` are valid NUL-terminated strings; `mnt` is open.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// `open_tree(2)` with `OPEN_TREE_CLONE`: a detached bind mount of `source`.
pub(crate) fn open_tree_clone(source: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `source` is a valid NUL-terminated string.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })
}

/// `mount_setattr(2)` setting `attr_set` on the mount behind `mnt`.
pub(crate) fn mount_setattr(mnt: BorrowedFd<'_>, attr_set: u64) -> Result<(), Errno> {
    let attr = MountAttr {
        attr_set,
        ..MountAttr::default()
    };
    // SAFETY: `attr` lives across the call and its size is passed; the path is empty with
    // AT_EMPTY_PATH so `mnt` itself is changed.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// The messages the kernel logged into a filesystem context (errors and warnings of
/// `fsconfig`), joined; `None` when there are none.
pub(crate) fn fs_context_log(fs: BorrowedFd<'_>) -> Option<String> {
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; the log holds at most a few.
    for _ in 0..16 {
        match nix::unistd::read(fs, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                messages.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
            }
        }
    }
    if messages.is_empty() {
        None
    } else {
        Some(messages.join("; "))
    }
}
