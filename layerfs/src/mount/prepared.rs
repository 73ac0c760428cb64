//! [`PreparedMount`]: a [`Mount`] with every string and descriptor it needs made ready, so that
//! performing it allocates nothing and takes no lock.
//!
//! A container launcher performs the rootfs mounts in a child made by `clone` in a possibly
//! multi-threaded process, where only async-signal-safe code may run. It prepares the mounts
//! before `clone` and calls [`PreparedMount::perform`] in the child.
//!
//! An overlay goes through the new mount API where the kernel has `lowerdir+` (Linux >= 6.8),
//! else through `mount(2)` with an option string, which must fit in a page. When the absolute
//! paths do not fit, every directory is opened `O_PATH` here, the option string names them by
//! descriptor number (`lowerdir=7:8:9...`), and `perform` makes the mount from
//! `/proc/self/fd` as its working directory, then returns to the one it had. A child made by
//! `clone` without `CLONE_FILES` has the same descriptor numbers, and its own
//! `/proc/self/fd` lists them. 500 layers take about 2.5 KB.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use super::overlay;
use super::syscalls::{
    FSCONFIG_CMD_CREATE, FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSMOUNT_CLOEXEC, FSOPEN_CLOEXEC,
    MOUNT_ATTR_RDONLY, MOVE_MOUNT_F_EMPTY_PATH, OPEN_TREE_CLONE,
};
use super::{Mount, MountApi, MountError, OverlayMount, c_path};

/// The step of [`PreparedMount::perform`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreparedStep {
    /// `fsopen(2)`.
    Fsopen,
    /// `fsconfig(2)` setting a parameter.
    Fsconfig,
    /// `fsconfig(2)` creating the superblock.
    Create,
    /// `fsmount(2)`.
    Fsmount,
    /// `move_mount(2)`.
    MoveMount,
    /// `mount(2)`.
    Mount,
    /// `mount(2)` remounting a bind read-only, or `mount_setattr(2)` making a detached bind
    /// read-only.
    Remount,
    /// `open_tree(2)` taking a detached copy of a bind's source.
    OpenTree,
    /// Changing the working directory to `/proc/self/fd` for a mount whose options name
    /// directories by descriptor, or back.
    Chdir,
}

/// A [`Mount`] ready to be performed at its target without allocating (see the module docs).
///
/// It holds the descriptors standing for over-long paths (or for every directory, when the
/// `mount(2)` options name them by number); they are close-on-exec, and must stay open in the
/// process that performs the mount.
#[derive(Debug)]
pub struct PreparedMount {
    target: CString,
    how: How,
}

#[derive(Debug)]
enum How {
    Overlay {
        /// `fsconfig` parameters in order: key and string value (`None`: a flag).
        params: Vec<(&'static CStr, Option<CString>)>,
        /// Whether to try the new mount API first.
        new_api: bool,
        /// The `mount(2)` option string, when it fits in a page.
        legacy_options: Option<CString>,
        /// The absolute target when `legacy_options` names directories by descriptor
        /// number, relative to `/proc/self/fd`.
        fd_relative_target: Option<CString>,
        read_only: bool,
        _held: Vec<OwnedFd>,
    },
    Bind {
        source: CString,
        read_only: bool,
    },
}

impl Mount {
    /// Prepare this mount to be performed at `target` later, without allocation
    /// ([`PreparedMount::perform`]). Checks what [`Mount::mount_at`] checks.
    pub fn prepare(&self, target: &Path) -> Result<PreparedMount, MountError> {
        self.prepare_using(target, MountApi::Auto)
    }

    /// [`Mount::prepare`] for one kernel interface only: tests use it to exercise both.
    /// `MountApi::New` is taken as `Auto` (the new API where the kernel has it).
    #[doc(hidden)]
    pub fn prepare_using(&self, target: &Path, api: MountApi) -> Result<PreparedMount, MountError> {
        let target_c = c_path(overlay::KIND, target, target)?;
        let how = match self {
            Mount::Overlay(o) => prepare_overlay(o, target, api)?,
            Mount::Bind { source, read_only } => How::Bind {
                source: c_path("bind", target, source)?,
                read_only: *read_only,
            },
        };
        Ok(PreparedMount {
            target: target_c,
            how,
        })
    }
}

fn prepare_overlay(o: &OverlayMount, target: &Path, api: MountApi) -> Result<How, MountError> {
    overlay::validate(o, target)?;
    let mut o = o.clone();
    if o.upperdir.is_none() && o.lowerdirs.len() == 1 {
        // As in overlay::mount: the empty target serves as the second layer.
        if !overlay::target_is_empty(target)? {
            return Err(MountError::InvalidOverlay {
                target: target.to_path_buf(),
                reason: "a read-only overlay of a single layer is mounted over an empty target \
                         directory; this one has entries"
                    .into(),
            });
        }
        o.lowerdirs.push(target.to_path_buf());
    }
    let mut held = Vec::new();
    let mut params = Vec::new();
    for lower in &o.lowerdirs {
        params.push((
            c"lowerdir+",
            Some(overlay::fsconfig_value(lower, false, target, &mut held)?),
        ));
    }
    if let (Some(upper), Some(work)) = (&o.upperdir, &o.workdir) {
        params.push((
            c"upperdir",
            Some(overlay::fsconfig_value(upper, true, target, &mut held)?),
        ));
        params.push((
            c"workdir",
            Some(overlay::fsconfig_value(work, true, target, &mut held)?),
        ));
    }
    for (key, value) in overlay::DIFFABLE_OPTIONS {
        params.push((key, Some(value.to_owned())));
    }
    if o.userxattr {
        params.push((c"userxattr", None));
    }
    if o.volatile {
        params.push((c"volatile", None));
    }
    let new_api = api != MountApi::Legacy && overlay::kernel_at_least(6, 8);
    let page = overlay::page_size();
    let options = overlay::options(&o, |p| overlay::escape(p.as_os_str().as_bytes()));
    let mut fd_relative_target = None;
    let legacy_options = if options.len() < page {
        CString::new(options).ok()
    } else if new_api {
        // The new API has no length limit; `mount(2)` is only its fallback where `fsopen`
        // is refused, and opening every layer for that case is not worth it.
        None
    } else {
        let mut fds: HashMap<&Path, RawFd> = HashMap::new();
        let dirs = o.lowerdirs.iter().chain(&o.upperdir).chain(&o.workdir);
        for dir in dirs {
            if !fds.contains_key(dir.as_path()) {
                let fd = overlay::open_path(dir, target)?;
                fds.insert(dir.as_path(), fd.as_raw_fd());
                held.push(fd);
            }
        }
        let short = overlay::options(&o, |dir| fds[dir].to_string().into_bytes());
        if short.len() < page {
            let absolute = std::path::absolute(target).map_err(|source| MountError::Path {
                kind: overlay::KIND,
                target: target.to_path_buf(),
                path: target.to_path_buf(),
                source,
            })?;
            fd_relative_target = Some(c_path(overlay::KIND, target, &absolute)?);
            CString::new(short).ok()
        } else {
            None
        }
    };
    Ok(How::Overlay {
        params,
        new_api,
        legacy_options,
        fd_relative_target,
        read_only: o.upperdir.is_none(),
        _held: held,
    })
}

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

/// Close `fd`, ignoring errors (nothing to do about them here).
fn close(fd: libc::c_long) {
    // SAFETY: `fd` is a descriptor this module opened and nothing else uses.
    unsafe { libc::close(fd as libc::c_int) };
}

fn overlay_legacy(
    target: &CStr,
    options: &CStr,
    read_only: bool,
) -> Result<(), (PreparedStep, Errno)> {
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: all strings are NUL-terminated and live across the call.
    check(unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    } as libc::c_long)
    .map(|_| ())
    .map_err(|e| (PreparedStep::Mount, e))
}

/// `mount(2)` with options naming directories by descriptor number, from `/proc/self/fd`;
/// the working directory is restored afterwards. `target` is absolute.
fn overlay_legacy_in_fd_dir(
    target: &CStr,
    options: &CStr,
    read_only: bool,
) -> Result<(), (PreparedStep, Errno)> {
    // SAFETY: a NUL-terminated path and plain flags.
    let saved = check(unsafe {
        libc::open(
            c".".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    } as libc::c_long)
    .map_err(|e| (PreparedStep::Chdir, e))?;
    // SAFETY: a NUL-terminated path.
    if let Err(e) = check(unsafe { libc::chdir(c"/proc/self/fd".as_ptr()) } as libc::c_long) {
        close(saved);
        return Err((PreparedStep::Chdir, e));
    }
    let mounted = overlay_legacy(target, options, read_only);
    // SAFETY: `saved` is the descriptor opened above.
    let back = check(unsafe { libc::fchdir(saved as libc::c_int) } as libc::c_long);
    close(saved);
    mounted?;
    if let Err(e) = back {
        // Leave nothing mounted on failure.
        // SAFETY: the target string is valid; detach what was just mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        return Err((PreparedStep::Chdir, e));
    }
    Ok(())
}

impl PreparedMount {
    /// Perform the mount at its target. Allocates nothing and takes no lock: safe in a child
    /// made by `clone` in a multi-threaded process. On failure nothing stays mounted.
    pub fn perform(&self) -> Result<(), (PreparedStep, Errno)> {
        match &self.how {
            How::Bind { source, read_only } => self.bind(source, *read_only),
            How::Overlay {
                params,
                new_api,
                legacy_options,
                fd_relative_target,
                read_only,
                ..
            } => {
                if *new_api {
                    match self.overlay_new_api(params, *read_only) {
                        Err((PreparedStep::Fsopen, Errno::ENOSYS | Errno::EPERM))
                            if legacy_options.is_some() => {}
                        other => return other,
                    }
                }
                match (legacy_options, fd_relative_target) {
                    (Some(options), None) => overlay_legacy(&self.target, options, *read_only),
                    (Some(options), Some(target)) => {
                        overlay_legacy_in_fd_dir(target, options, *read_only)
                    }
                    (None, _) => Err((PreparedStep::Mount, Errno::E2BIG)),
                }
            }
        }
    }

    /// Whether [`PreparedMount::detach`] can make this mount: a bind, or an overlay through the
    /// new mount API (not one that needs `mount(2)`).
    pub fn can_detach(&self) -> bool {
        match &self.how {
            How::Bind { .. } => true,
            How::Overlay { new_api, .. } => *new_api,
        }
    }

    /// Make the mount without attaching it anywhere: the returned descriptor (close-on-exec)
    /// holds the detached tree, to be attached later with `move_mount(2)`, for example after
    /// joining another mount namespace, where the paths this mount names may not exist. The
    /// target given at preparation is not used. Allocates nothing and takes no lock, as
    /// [`PreparedMount::perform`]; only where [`PreparedMount::can_detach`] (`EINVAL`
    /// otherwise). On failure nothing is left open.
    pub fn detach(&self) -> Result<RawFd, (PreparedStep, Errno)> {
        match &self.how {
            How::Bind { source, read_only } => {
                // SAFETY: a valid NUL-terminated path; plain flags.
                let fd = check(unsafe {
                    libc::syscall(
                        libc::SYS_open_tree,
                        libc::AT_FDCWD,
                        source.as_ptr(),
                        OPEN_TREE_CLONE
                            | libc::AT_RECURSIVE as libc::c_uint
                            | libc::O_CLOEXEC as libc::c_uint,
                    )
                })
                .map_err(|e| (PreparedStep::OpenTree, e))?;
                // SAFETY: `fd` is the descriptor just opened, open across the call.
                let tree = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd as RawFd) };
                // As the read-only remount of a bind made with `mount(2)`: not recursive.
                if *read_only
                    && let Err(e) = super::syscalls::mount_setattr(tree, MOUNT_ATTR_RDONLY)
                {
                    close(fd);
                    return Err((PreparedStep::Remount, e));
                }
                Ok(fd as RawFd)
            }
            How::Overlay {
                params,
                new_api: true,
                read_only,
                ..
            } => self
                .overlay_detached(params, *read_only)
                .map(|fd| fd as RawFd),
            How::Overlay { .. } => Err((PreparedStep::Fsopen, Errno::EINVAL)),
        }
    }

    fn overlay_new_api(
        &self,
        params: &[(&'static CStr, Option<CString>)],
        read_only: bool,
    ) -> Result<(), (PreparedStep, Errno)> {
        let mnt = self.overlay_detached(params, read_only)?;
        // SAFETY: the empty string and the target are NUL-terminated strings.
        let moved = check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt,
                c"".as_ptr(),
                libc::AT_FDCWD,
                self.target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        });
        close(mnt);
        moved.map(|_| ()).map_err(|e| (PreparedStep::MoveMount, e))
    }

    /// The overlay as a detached mount (`fsopen`, `fsconfig`, `fsmount`).
    fn overlay_detached(
        &self,
        params: &[(&'static CStr, Option<CString>)],
        read_only: bool,
    ) -> Result<libc::c_long, (PreparedStep, Errno)> {
        // SAFETY: a valid NUL-terminated string; plain flags.
        let fs =
            check(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
                .map_err(|e| (PreparedStep::Fsopen, e))?;
        let result = (|| {
            for (key, value) in params {
                let (cmd, value_ptr) = match value {
                    Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
                    None => (FSCONFIG_SET_FLAG, std::ptr::null()),
                };
                // SAFETY: `key` and `value` are NUL-terminated strings living across the call.
                check(unsafe {
                    libc::syscall(libc::SYS_fsconfig, fs, cmd, key.as_ptr(), value_ptr, 0)
                })
                .map_err(|e| (PreparedStep::Fsconfig, e))?;
            }
            // SAFETY: a command takes NULL key and value.
            check(unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs,
                    FSCONFIG_CMD_CREATE,
                    std::ptr::null::<libc::c_char>(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            })
            .map_err(|e| (PreparedStep::Create, e))?;
            let attrs = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
            // SAFETY: plain integer arguments.
            check(unsafe {
                libc::syscall(
                    libc::SYS_fsmount,
                    fs,
                    FSMOUNT_CLOEXEC,
                    attrs as libc::c_uint,
                )
            })
            .map_err(|e| (PreparedStep::Fsmount, e))
        })();
        close(fs);
        result
    }

    fn bind(&self, source: &CStr, read_only: bool) -> Result<(), (PreparedStep, Errno)> {
        // SAFETY: NUL-terminated strings living across the call; no data.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                self.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        } as libc::c_long)
        .map_err(|e| (PreparedStep::Mount, e))?;
        if read_only {
            // SAFETY: as above.
            let remount = check(unsafe {
                libc::mount(
                    std::ptr::null(),
                    self.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            } as libc::c_long);
            if let Err(e) = remount {
                // SAFETY: the target string is valid; detach what was just bound.
                unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
                return Err((PreparedStep::Remount, e));
            }
        }
        Ok(())
    }

    /// The target directory, as given to [`Mount::prepare`].
    pub fn target(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.target.to_bytes()))
    }
}
