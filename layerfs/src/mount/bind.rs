//! Performing a bind mount, optionally read-only.
//!
//! With the new mount API the read-only bind is made detached (`open_tree` + `mount_setattr`)
//! and attached in one step, so it is never visible writable. With `mount(2)` it takes a bind
//! and a remount; if the remount fails the bind is detached again.

use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::syscalls;
use super::{MountApi, MountError, MountStage, c_path};

const KIND: &str = "bind";

fn syscall_error(target: &Path, stage: MountStage, errno: Errno) -> MountError {
    MountError::Syscall {
        kind: KIND,
        target: target.to_path_buf(),
        stage,
        errno,
        kernel_message: None,
    }
}

/// Bind `source` at `target`.
pub(super) fn mount(
    source: &Path,
    read_only: bool,
    target: &Path,
    api: MountApi,
) -> Result<(), MountError> {
    match std::fs::metadata(source) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(MountError::Path {
                kind: KIND,
                target: target.to_path_buf(),
                path: source.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "bind source is not a directory",
                ),
            });
        }
        Err(source_error) => {
            return Err(MountError::Path {
                kind: KIND,
                target: target.to_path_buf(),
                path: source.to_path_buf(),
                source: source_error,
            });
        }
    }
    let source_c = c_path(KIND, target, source)?;
    let target_c = c_path(KIND, target, target)?;
    if api != MountApi::Legacy {
        match new_api(&source_c, read_only, &target_c, target) {
            Err(NewApi::Unsupported(_)) if api == MountApi::Auto => {}
            Err(NewApi::Unsupported((stage, errno))) => {
                return Err(syscall_error(target, stage, errno));
            }
            Err(NewApi::Failed(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
    legacy(&source_c, read_only, &target_c, target)
}

enum NewApi {
    /// The step and errno that show the new API cannot be used here.
    Unsupported((MountStage, Errno)),
    Failed(MountError),
}

fn new_api(
    source: &std::ffi::CStr,
    read_only: bool,
    target_c: &std::ffi::CStr,
    target: &Path,
) -> Result<(), NewApi> {
    let tree = match syscalls::open_tree_clone(source) {
        Ok(fd) => fd,
        // ENOSYS: no new mount API. EPERM: no privilege (mount(2) will say so too), or a
        // seccomp filter that knows only the old API.
        Err(errno @ (Errno::ENOSYS | Errno::EPERM)) => {
            return Err(NewApi::Unsupported((MountStage::OpenTree, errno)));
        }
        Err(errno) => {
            return Err(NewApi::Failed(syscall_error(
                target,
                MountStage::OpenTree,
                errno,
            )));
        }
    };
    if read_only {
        match syscalls::mount_setattr(tree.as_fd(), syscalls::MOUNT_ATTR_RDONLY) {
            Ok(()) => {}
            // open_tree exists (5.2) but mount_setattr does not (5.12): use mount(2).
            Err(Errno::ENOSYS) => {
                return Err(NewApi::Unsupported((
                    MountStage::MountSetattr,
                    Errno::ENOSYS,
                )));
            }
            Err(errno) => {
                return Err(NewApi::Failed(syscall_error(
                    target,
                    MountStage::MountSetattr,
                    errno,
                )));
            }
        }
    }
    // On failure the detached clone is released when `tree` is closed.
    syscalls::move_mount_to(tree.as_fd(), target_c)
        .map_err(|errno| NewApi::Failed(syscall_error(target, MountStage::MoveMount, errno)))
}

fn legacy(
    source: &std::ffi::CStr,
    read_only: bool,
    target_c: &std::ffi::CStr,
    target: &Path,
) -> Result<(), MountError> {
    nix::mount::mount(
        Some(source),
        target_c,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| syscall_error(target, MountStage::Mount, errno))?;
    if read_only {
        let remount = nix::mount::mount(
            None::<&str>,
            target_c,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
        if let Err(errno) = remount {
            // Never leave a writable bind where a read-only one was asked for.
            let _ = nix::mount::umount2(target_c, MntFlags::MNT_DETACH);
            return Err(syscall_error(target, MountStage::Remount, errno));
        }
    }
    Ok(())
}
