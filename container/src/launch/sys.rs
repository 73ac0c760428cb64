//! Raw syscalls for the child after `clone`: no allocation, no locks, errno as plain data.

use std::ffi::CStr;

/// Result of a raw syscall: the return value, or the errno.
pub(crate) type Sys = Result<libc::c_long, i32>;

pub(crate) fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

pub(crate) fn check(ret: libc::c_long) -> Sys {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

/// `mount(2)`.
pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Sys {
    // SAFETY: every pointer is NULL or a NUL-terminated string living across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount,
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data),
        )
    })
}

/// `open_tree(path, OPEN_TREE_CLONE | AT_RECURSIVE | O_CLOEXEC)`: a detached copy of a tree.
pub(crate) fn open_tree_clone(path: &CStr) -> Sys {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: a valid NUL-terminated path.
    check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint | libc::O_CLOEXEC as libc::c_uint,
        )
    })
}

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 1;

/// `mount_setattr(2)` making the mount at `dirfd`/`path` read-only (recursively if asked).
pub(crate) fn make_read_only(dirfd: i32, path: &CStr, recursive: bool) -> Sys {
    set_mount_attr(dirfd, path, MOUNT_ATTR_RDONLY, recursive)
}

/// `MOUNT_ATTR_NODEV`: device nodes on the mount cannot be opened.
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `mount_setattr(2)` setting `attr_set` on the mount at `dirfd`/`path` (recursively if asked).
pub(crate) fn set_mount_attr(dirfd: i32, path: &CStr, attr_set: u64, recursive: bool) -> Sys {
    mount_setattr(
        dirfd,
        path,
        &MountAttr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
        recursive,
    )
}

/// `mount_setattr(2)` making the (detached) tree `fd` a recursive slave: it keeps receiving
/// the mounts and unmounts of the peers it was cloned from (the host's, when a host mount is
/// shared), and nothing mounted in it propagates back.
pub(crate) fn make_slave(fd: i32) -> Sys {
    mount_setattr(
        fd,
        c"",
        &MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: libc::MS_SLAVE,
            userns_fd: 0,
        },
        true,
    )
}

/// `mount_setattr(2)` of the mount at `dirfd`/`path` (the mount `dirfd` itself when `path` is
/// empty), recursively if asked.
fn mount_setattr(dirfd: i32, path: &CStr, attr: &MountAttr, recursive: bool) -> Sys {
    let mut flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: `attr` and `path` live across the call; the size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// The unique id (`STATX_MNT_ID_UNIQUE`, never reused) of the mount of this thread's root
/// directory: `Err(errno)`, `ENOSYS` when the kernel does not report one (before 6.8).
pub(crate) fn root_mount_id() -> Result<u64, i32> {
    // SAFETY: all-zero is a valid `struct statx` (plain integers).
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a buffer the kernel fills.
    check(unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_MNT_ID_UNIQUE,
            &mut buf,
        )
    } as libc::c_long)?;
    if buf.stx_mask & libc::STATX_MNT_ID_UNIQUE == 0 {
        return Err(libc::ENOSYS);
    }
    Ok(buf.stx_mnt_id)
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`.
pub(crate) fn move_mount(fd: i32, target: &CStr) -> Sys {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: NUL-terminated strings living across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// `mkdir(2)`, an existing entry being fine.
pub(crate) fn mkdir_exist_ok(path: &CStr, mode: libc::mode_t) -> Sys {
    // SAFETY: a valid NUL-terminated path.
    match check(unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), mode) }) {
        Err(libc::EEXIST) => Ok(0),
        other => other,
    }
}

/// Check that `path` is a real directory (not a symlink to one): `ENOTDIR` otherwise.
pub(crate) fn real_dir(path: &CStr) -> Sys {
    // SAFETY: a valid NUL-terminated path; the fd is closed at once.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    close(fd as i32);
    Ok(0)
}

/// Make an empty file at `path` if nothing is there (a mount point for a file), without
/// opening anything: an existing entry is fine unless it is a directory (`EISDIR`) or a
/// symlink (`ELOOP`: a mount would follow it). Opening the target instead would block on a
/// FIFO the image put there, or open a device node as the launcher (all capabilities).
pub(crate) fn touch(path: &CStr, mode: libc::mode_t) -> Sys {
    // SAFETY: a valid NUL-terminated path; plain integer arguments.
    let made = check(unsafe {
        libc::syscall(
            libc::SYS_mknodat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::S_IFREG | mode,
            0,
        )
    });
    match made {
        Err(libc::EEXIST) => match file_type(path)? {
            libc::S_IFDIR => Err(libc::EISDIR),
            libc::S_IFLNK => Err(libc::ELOOP),
            _ => Ok(0),
        },
        other => other,
    }
}

/// Close every descriptor from 3 up except `keep` (`close_range(2)`, twice).
pub(crate) fn close_all_but(keep: i32) -> Sys {
    let close_range = |first: u32, last: u32| {
        // SAFETY: plain integer arguments.
        check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) })
    };
    let keep = keep.max(0) as u32;
    if keep > 3 {
        close_range(3, keep - 1)?;
    }
    close_range(keep.max(2) + 1, u32::MAX)
}

/// `close(2)`.
pub(crate) fn close(fd: i32) {
    // SAFETY: plain integer argument; errors are irrelevant here.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// `chdir(2)`.
pub(crate) fn chdir(path: &CStr) -> Sys {
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::syscall(libc::SYS_chdir, path.as_ptr()) })
}

/// `write(2)` of the whole buffer (short writes to pipes of < PIPE_BUF bytes do not happen).
pub(crate) fn write(fd: i32, buf: &[u8]) -> Sys {
    // SAFETY: `buf` is valid for reads of its length.
    check(unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })
}

/// `read(2)`.
pub(crate) fn read(fd: i32, buf: &mut [u8]) -> Sys {
    // SAFETY: `buf` is valid for writes of its length.
    check(unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) })
}

/// `prctl(2)` with up to two arguments.
pub(crate) fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Sys {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_prctl, option, arg2, arg3, 0, 0) })
}

/// `_exit(2)`: end the process at once (no atexit handlers, no stdio flushing).
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: exit_group never returns.
    unsafe {
        libc::syscall(libc::SYS_exit_group, code);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The full signal set, for `rt_sigprocmask` and `rt_sigtimedwait` (the kernel's 64 bits).
pub(crate) const ALL_SIGNALS: u64 = !0;

/// `rt_sigprocmask(how, set)`, returning the previous mask.
pub(crate) fn sigprocmask(how: libc::c_int, set: u64) -> Sys {
    let mut old: u64 = 0;
    // SAFETY: `set` and `old` are 8-byte kernel sigsets living across the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            &set as *const u64,
            &mut old as *mut u64,
            8,
        )
    })
    .map(|_| old as libc::c_long)
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` (x86_64 and aarch64 layout without
/// `sa_restorer` use: a handler of `SIG_DFL` needs none).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: libc::sighandler_t,
    mask: u64,
}

/// Every signal's disposition back to its default (`SIG_DFL`), ignored ones included: the
/// program must not inherit the host's choices (a Rust host ignores `SIGPIPE`, and ignored
/// signals stay ignored across `execve`), and no host handler may run in a child that shares
/// the host's memory. `SIGKILL` and `SIGSTOP` cannot be changed and are skipped.
pub(crate) fn default_signal_dispositions() -> Sys {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a valid kernel sigaction living across the call; no old action
        // is asked for.
        check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        })?;
    }
    Ok(0)
}

/// The file type bits (`S_IFMT`) of `path`, not following a final symlink.
pub(crate) fn file_type(path: &CStr) -> Result<libc::mode_t, i32> {
    // SAFETY: an all-zero stat is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path; `st` is valid for writes.
    check(unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// A character device node at `path` with exactly `mode` (the umask does not apply).
pub(crate) fn mknod_char(path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> Sys {
    // SAFETY: a valid NUL-terminated path; plain integer arguments.
    check(unsafe {
        libc::syscall(
            libc::SYS_mknodat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::S_IFCHR | mode,
            dev,
        )
    })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_fchmodat, libc::AT_FDCWD, path.as_ptr(), mode) })
}
