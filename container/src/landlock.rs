//! An opt-in Landlock ruleset for a container's processes: what they may reach of the
//! container's filesystem, by path (as `landlock` sandboxes do for one program).
//!
//! [`Landlock`] lists the container's paths its processes may read (and execute) and those
//! they may also write. Every filesystem access right the kernel's Landlock ABI knows is
//! handled, best effort (a newer right on an older kernel is left out, as the `landlock`
//! crate's `BestEffort` does): what no rule grants is refused with `EACCES`, whatever the
//! user's capabilities, for the first process, what it execs and forks, and processes exec'd
//! into the container later.
//!
//! The paths are the container's, which exist only once its root is set up in the child, so
//! the work is split as the launcher's rule (nothing allocated after `clone`) demands:
//! - before `clone` (`Landlock::prepare`): the kernel's ABI is read, the handled and
//!   granted rights are settled with the `landlock` crate (`ABI`, `AccessFs`), the ruleset is
//!   created with it (`Ruleset::create`; its descriptor goes to the child) and the paths are
//!   made C strings;
//! - in the child, once in the container's root and before its descriptors are closed
//!   (`restrict`): each path opened `O_PATH`, added as a path-beneath rule (the rights a
//!   non-directory may hold, for a file) and closed, then `landlock_restrict_self`: raw system
//!   calls on prepared data. It holds `CAP_SYS_ADMIN` in its user namespace then, which the
//!   kernel accepts in place of no_new_privs.
//!
//! A kernel without Landlock fails the launch at [`Stage::Landlock`](crate::launch::Stage)
//! (`ENOSYS`: not built; `EOPNOTSUPP`: not enabled at boot); a listed path missing from the
//! container fails it with `ENOENT` and the path. [`abi`] tells which ABI the kernel has.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use landlock::{ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr};
use serde::{Deserialize, Serialize};

/// `LANDLOCK_CREATE_RULESET_VERSION`.
const CREATE_RULESET_VERSION: libc::c_uint = 1;
/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: libc::c_int = 1;

/// The paths a container's processes may reach; nothing else of its filesystem (see the
/// module docs).
///
/// ```
/// use molde_container::Landlock;
/// let rules = Landlock::new().read_only(["/"]).read_write(["/tmp", "/dev"]);
/// assert_eq!(rules.read_write_paths().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landlock {
    read_only: Vec<PathBuf>,
    read_write: Vec<PathBuf>,
}

impl Landlock {
    /// A ruleset that grants nothing yet: add paths with [`read_only`](Self::read_only) and
    /// [`read_write`](Self::read_write).
    pub fn new() -> Landlock {
        Landlock::default()
    }

    /// The container may read and execute what is under these paths (absolute, in the
    /// container).
    pub fn read_only<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Landlock {
        self.read_only.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The container may read, execute, write, create, remove, rename and truncate what is
    /// under these paths (absolute, in the container).
    pub fn read_write<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Landlock {
        self.read_write.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The read-only paths.
    pub fn read_only_paths(&self) -> &[PathBuf] {
        &self.read_only
    }

    /// The read-write paths.
    pub fn read_write_paths(&self) -> &[PathBuf] {
        &self.read_write
    }

    /// The paths of the rules, in the order the child adds them (read-only ones first).
    pub(crate) fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.read_only.iter().chain(&self.read_write)
    }

    /// Everything the child needs (before `clone`): the ruleset's descriptor (the caller keeps
    /// the owner and closes it once the child is made) and the rules. The errno where the
    /// kernel lacks Landlock or refuses the ruleset, or a path is not absolute or holds a NUL.
    pub(crate) fn prepare(&self) -> Result<(OwnedFd, Rules), i32> {
        let abi = ABI::from(abi()?);
        let handled = AccessFs::from_all(abi);
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(handled)
            .and_then(|r| r.create())
            .map_err(|e| {
                tracing::warn!(error = %e, "landlock ruleset");
                libc::EOPNOTSUPP
            })?;
        let fd: OwnedFd = Option::<OwnedFd>::from(ruleset).ok_or(libc::EOPNOTSUPP)?;
        let read = AccessFs::from_read(abi);
        let rules = self
            .read_only
            .iter()
            .map(|p| (p, read))
            .chain(self.read_write.iter().map(|p| (p, handled)))
            .map(|(path, access)| {
                if !path.is_absolute() {
                    return Err(libc::EINVAL);
                }
                let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
                Ok(Rule {
                    path: c,
                    access: access.bits(),
                    file_access: (access & AccessFs::from_file(abi)).bits(),
                })
            })
            .collect::<Result<Vec<_>, i32>>()?;
        let ruleset = fd.as_raw_fd();
        Ok((fd, Rules { ruleset, rules }))
    }
}

/// The kernel's Landlock ABI version (1 for Linux 5.13's...), or the errno: `ENOSYS` (not
/// built into this kernel), `EOPNOTSUPP` (built, not enabled at boot: `lsm=`).
pub fn abi() -> Result<i32, i32> {
    // SAFETY: a NULL attribute of size 0 with the version flag only queries the ABI.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        // SAFETY: reads this thread's errno.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(v as i32)
    }
}

/// One rule, prepared: the path, and the rights it grants beneath a directory and on a file.
#[derive(Debug)]
pub(crate) struct Rule {
    path: CString,
    access: u64,
    file_access: u64,
}

/// The rules for the child, and the ruleset's descriptor they go in.
#[derive(Debug)]
pub(crate) struct Rules {
    /// The ruleset's descriptor (its owner kept by the caller of [`Landlock::prepare`]
    /// until the child is made).
    ruleset: i32,
    rules: Vec<Rule>,
}

/// `struct landlock_path_beneath_attr` (packed, as the kernel declares it).
#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// In the child: add the rules (paths resolved in its root now) and restrict this process;
/// the ruleset's descriptor is closed. Raw system calls only. The errno and the rule's
/// index on failure.
pub(crate) fn restrict(rules: &Rules) -> Result<(), (i32, u32)> {
    let errno = || {
        // SAFETY: reads this thread's errno.
        unsafe { *libc::__errno_location() }
    };
    for (i, rule) in rules.rules.iter().enumerate() {
        // SAFETY: a NUL-terminated path prepared before clone.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                rule.path.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err((errno(), i as u32));
        }
        let fd = fd as i32;
        // SAFETY: an all-zero stat is valid; the kernel fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` lives across the call; an empty path with AT_EMPTY_PATH names `fd`.
        let stat = unsafe {
            libc::syscall(
                libc::SYS_newfstatat,
                fd,
                c"".as_ptr(),
                &mut st as *mut libc::stat,
                libc::AT_EMPTY_PATH,
            )
        };
        let attr = PathBeneath {
            allowed_access: if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                rule.access
            } else {
                rule.file_access
            },
            parent_fd: fd,
        };
        // SAFETY: `attr` has the kernel's layout and lives across the call.
        let added = (stat == 0).then(|| unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                rules.ruleset,
                RULE_PATH_BENEATH,
                &attr as *const PathBeneath,
                0u32,
            )
        });
        let failed = (added != Some(0)).then(errno);
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        if let Some(e) = failed {
            return Err((e, i as u32));
        }
    }
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, rules.ruleset, 0u32) };
    let failed = (ret < 0).then(errno);
    // SAFETY: closes the ruleset's descriptor, no longer needed.
    unsafe { libc::syscall(libc::SYS_close, rules.ruleset) };
    match failed {
        Some(e) => Err((e, rules.rules.len() as u32)),
        None => Ok(()),
    }
}

/// The rights `rights` grants, for tests and diagnostics.
#[cfg(test)]
fn names(rights: u64) -> Vec<String> {
    landlock::BitFlags::<AccessFs>::from_bits_truncate(rights)
        .iter()
        .map(|a| format!("{a:?}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_grant_read_or_everything_handled_and_files_only_file_rights() {
        let Ok(v) = abi() else {
            // This kernel has no Landlock: preparing says so.
            assert!(Landlock::new().read_only(["/"]).prepare().is_err());
            return;
        };
        assert!(v >= 1);
        let l = Landlock::new().read_only(["/usr"]).read_write(["/tmp"]);
        let (_fd, rules) = l.prepare().unwrap();
        assert_eq!(rules.rules.len(), 2);
        let ro = names(rules.rules[0].access);
        assert!(ro.iter().any(|n| n == "ReadFile") && ro.iter().any(|n| n == "Execute"));
        assert!(!ro.iter().any(|n| n == "WriteFile"));
        let rw = names(rules.rules[1].access);
        assert!(rw.iter().any(|n| n == "WriteFile") && rw.iter().any(|n| n == "MakeDir"));
        assert!(
            !names(rules.rules[1].file_access)
                .iter()
                .any(|n| n == "MakeDir")
        );
        assert_eq!(l.paths().nth(1).unwrap(), &PathBuf::from("/tmp"));
        assert_eq!(
            Landlock::new().read_only(["relative"]).prepare().err(),
            Some(libc::EINVAL)
        );
    }
}
