//! The container's `/dev`: a tmpfs with the usual device nodes (made with `mknod`, or bound
//! from the host's), a devpts instance of its own, the standard links and `/dev/shm`.

use std::ffi::CStr;

use super::RootSetup;
use crate::launch::error::Stage;
use crate::launch::failure::step;
use crate::launch::sys;

/// A device node bind-mounted from the host's /dev.
pub(crate) const DEVICES: [&CStr; 6] = [
    c"/dev/null",
    c"/dev/zero",
    c"/dev/full",
    c"/dev/random",
    c"/dev/urandom",
    c"/dev/tty",
];

/// The numbers of [`DEVICES`] (fixed by the kernel's device list), for `mknod`.
pub(crate) const DEVICE_NUMBERS: [libc::dev_t; 6] = [
    libc::makedev(1, 3),
    libc::makedev(1, 5),
    libc::makedev(1, 7),
    libc::makedev(1, 8),
    libc::makedev(1, 9),
    libc::makedev(5, 0),
];

/// Mount `/dev` in the new root (the working directory is `/`).
pub(super) fn setup_dev(p: i32, r: &RootSetup) {
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev", 0o755));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"tmpfs"),
            c"/dev",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some(c"mode=755,size=65536k")
        )
    );
    for (i, dev) in DEVICES.iter().enumerate() {
        if r.mknod_devices {
            step!(
                p,
                Stage::Dev,
                i,
                sys::mknod_char(dev, 0o666, DEVICE_NUMBERS[i])
            );
        } else {
            step!(p, Stage::Dev, i, sys::touch(dev, 0o666));
            step!(p, Stage::Dev, i, sys::move_mount(r.device_trees[i], dev));
            sys::close(r.device_trees[i]);
        }
    }
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev/pts", 0o755));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"devpts"),
            c"/dev/pts",
            Some(c"devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=0620")
        )
    );
    for (target, link) in [
        (c"pts/ptmx", c"/dev/ptmx"),
        (c"/proc/self/fd", c"/dev/fd"),
        (c"/proc/self/fd/0", c"/dev/stdin"),
        (c"/proc/self/fd/1", c"/dev/stdout"),
        (c"/proc/self/fd/2", c"/dev/stderr"),
    ] {
        // SAFETY: valid NUL-terminated paths.
        step!(
            p,
            Stage::Dev,
            0,
            sys::check(unsafe {
                libc::syscall(
                    libc::SYS_symlinkat,
                    target.as_ptr(),
                    libc::AT_FDCWD,
                    link.as_ptr(),
                )
            })
        );
    }
    step!(p, Stage::Dev, 0, sys::mkdir_exist_ok(c"/dev/shm", 0o1777));
    step!(
        p,
        Stage::Dev,
        0,
        sys::mount(
            Some(c"shm"),
            c"/dev/shm",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"mode=1777,size=65536k")
        )
    );
}
