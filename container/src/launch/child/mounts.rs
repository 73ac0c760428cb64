//! Mounts in the new root after `/dev`: the caller's further mounts (binds of host trees
//! taken before, tmpfs), then Docker's masked and read-only paths.

use std::ffi::CStr;

use super::{ExtraKind, RootSetup};
use crate::launch::error::Stage;
use crate::launch::failure::{fail, step};
use crate::launch::sys;

/// Docker's masked paths.
pub(crate) const MASKED: [&CStr; 10] = [
    c"/proc/acpi",
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
    c"/proc/scsi",
    c"/sys/firmware",
    c"/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub(crate) const READ_ONLY: [&CStr; 5] = [
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];

/// The caller's further mounts, each on a target made on the way.
pub(super) fn extra(p: i32, r: &RootSetup) {
    for (i, m) in r.extra.iter().enumerate() {
        for dir in &m.dirs {
            step!(p, Stage::Mount, i, sys::mkdir_exist_ok(dir, 0o755));
        }
        if m.is_file {
            step!(p, Stage::Mount, i, sys::touch(&m.target, 0o644));
        } else {
            step!(p, Stage::Mount, i, sys::mkdir_exist_ok(&m.target, 0o755));
        }
        match &m.kind {
            ExtraKind::Bind { .. } => {
                step!(
                    p,
                    Stage::Mount,
                    i,
                    sys::move_mount(r.extra_trees[i], &m.target)
                );
                sys::close(r.extra_trees[i]);
            }
            ExtraKind::Tmpfs { data } => {
                step!(
                    p,
                    Stage::Mount,
                    i,
                    sys::mount(
                        Some(c"tmpfs"),
                        &m.target,
                        Some(c"tmpfs"),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        Some(data)
                    )
                );
            }
        }
    }
}

/// Docker's masked paths (an empty read-only tmpfs on a directory, `/dev/null` on a file) and
/// read-only paths.
pub(super) fn mask_and_read_only(p: i32) {
    let err_w = p;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (i, path) in MASKED.iter().enumerate() {
        // Looked at first: a bind of /dev/null onto a directory fails only after the kernel
        // has copied the mount, and undoing the copy costs an RCU grace period.
        let mask = match sys::file_type(path) {
            Err(libc::ENOENT) => continue,
            Err(e) => fail(err_w, Stage::MaskPaths, e, i as u32),
            Ok(libc::S_IFDIR) => sys::mount(
                Some(c"tmpfs"),
                path,
                Some(c"tmpfs"),
                libc::MS_RDONLY | nosuid_nodev_noexec,
                Some(c"size=0"),
            ),
            Ok(_) => sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None),
        };
        match mask {
            Ok(_) | Err(libc::ENOENT) => {}
            Err(e) => fail(err_w, Stage::MaskPaths, e, i as u32),
        }
    }
    for (i, path) in READ_ONLY.iter().enumerate() {
        match sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Ok(_) => {
                step!(
                    p,
                    Stage::ReadonlyPaths,
                    i,
                    sys::make_read_only(libc::AT_FDCWD, path, true)
                );
            }
            Err(libc::ENOENT) => {}
            Err(e) => fail(err_w, Stage::ReadonlyPaths, e, i as u32),
        }
    }
}
