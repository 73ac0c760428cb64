//! Resource limits through cgroups: memory, pids and cpu, on cgroup v2, v1, and the v1/v2
//! hybrid layout (v1 controllers plus a controller-less v2 hierarchy) that crun 1.8 refuses.
//!
//! A [`Cgroup`] is one container's cgroup. It lives under a molde *parent* (by default `molde`
//! at the root of every hierarchy: `<mount>/molde/<name>`) and spans every hierarchy molde uses:
//!
//! - on pure v2, one directory; the parent enables `memory`, `pids` and `cpu` in its
//!   `cgroup.subtree_control` and holds no processes itself (v2's "no internal processes" rule);
//! - on v1, one directory in each hierarchy that has `memory`, `pids`, `cpu` or `freezer`;
//! - on the hybrid layout, those v1 directories plus one in the v2 hierarchy, so that the
//!   container's cgroup namespace and [`Cgroup::kill_all`] (`cgroup.kill`) work there too.
//!
//! Processes enter through [`Cgroup::add_pid`] or, for the launcher, through the open files of
//! [`Cgroup::procs_files`]. Creating cgroups needs root or a delegated subtree (systemd's
//! `Delegate=yes`; pass it with [`Parent::at`]); without either, [`Cgroup::create`] fails with
//! [`CgroupError::PermissionDenied`], and the caller can run the container without limits.
//!
//! ```no_run
//! use molde_container::cgroup::{Cgroup, Limits};
//! let limits = Limits { memory_bytes: Some(64 << 20), pids: Some(100), cpu_quota: None };
//! let cgroup = Cgroup::create("my-container", &limits)?;
//! let child = std::process::Command::new("sleep").arg("1").spawn().unwrap();
//! cgroup.add_pid(child.id())?;
//! cgroup.kill_all()?;
//! cgroup.remove()?;
//! # Ok::<(), molde_container::cgroup::CgroupError>(())
//! ```

mod detect;
mod error;
mod files;
mod kill;
mod limits;
mod parent;
mod v1;
mod v2;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use detect::{Controller, Layout, Placement, Unified, V1Hierarchy, available};
pub use error::CgroupError;
pub use kill::KillStrategy;
pub use limits::Limits;
pub use parent::Parent;

/// How long removal retries a directory the kernel still reports busy.
const RMDIR_PATIENCE: Duration = Duration::from_secs(2);

/// One of a cgroup's directories.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    /// v2 (the unified hierarchy) or v1.
    v2: bool,
    /// The molde controllers usable in this directory.
    controllers: Vec<Controller>,
}

/// One container's cgroup, in every hierarchy molde uses. Dropping it kills what is left in it
/// and removes it (best effort, logged); [`Cgroup::remove`] does the same and reports errors;
/// [`Cgroup::keep`] leaves it.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    /// v2 directory first (if any), then v1 directories.
    dirs: Vec<Dir>,
    done: bool,
}

/// Every hierarchy molde uses on `layout`: `(mount, controllers it serves there)`, the v2
/// hierarchy first. v1 hierarchies that have none of molde's controllers are skipped.
fn hierarchies(layout: &Layout) -> Vec<(PathBuf, Vec<Controller>)> {
    let mut out = Vec::new();
    if let Some(unified) = layout.unified() {
        let controllers = Controller::LIMITS
            .into_iter()
            .filter(|c| matches!(layout.placement(*c), Some(Placement::V2(_))))
            .collect();
        out.push((unified.mount.clone(), controllers));
    }
    for h in layout.v1() {
        let controllers: Vec<Controller> = [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Freezer,
        ]
        .into_iter()
        .filter(|c| h.has(*c))
        .collect();
        if !controllers.is_empty() {
            out.push((h.mount.clone(), controllers));
        }
    }
    out
}

/// Checks a cgroup name: one plain path component.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not names")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Cgroup {
    /// Creates the cgroup `name` under the default parent (`molde`) with `limits`.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        Cgroup::create_in(&Parent::default(), name, limits)
    }

    /// Creates the cgroup `name` under `parent` with `limits`, in every hierarchy molde uses.
    /// Fails if it exists already, if a limit's controller is missing, or without permission;
    /// nothing is left behind on failure.
    pub fn create_in(parent: &Parent, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        check_name(name)?;
        limits.validate()?;
        let layout = available()?;
        for controller in Controller::LIMITS {
            if limits.wants(controller) && layout.placement(controller).is_none() {
                return Err(CgroupError::ControllerUnavailable { controller });
            }
        }
        let mut cgroup = Cgroup {
            name: name.to_owned(),
            dirs: Vec::new(),
            done: false,
        };
        let unified_mount = layout.unified().map(|u| u.mount.clone());
        for (mount, controllers) in hierarchies(&layout) {
            let v2 = Some(&mount) == unified_mount.as_ref();
            let parent_dir = mount.join(parent.relative());
            if v2 {
                // Enable the controllers on the way down: the root (exempt from the "no
                // internal processes" rule), each intermediate directory, then the parent.
                let mut dir = mount.clone();
                v2::enable(&dir, &controllers)?;
                for component in parent.relative().components() {
                    dir.push(component);
                    files::mkdir(&dir, true)?;
                    v2::enable(&dir, &controllers)?;
                }
            } else {
                let mut dir = mount.clone();
                for component in parent.relative().components() {
                    dir.push(component);
                    files::mkdir(&dir, true)?;
                }
            }
            let path = parent_dir.join(name);
            files::mkdir(&path, false)?;
            // From here on, the Cgroup's Drop removes the directory if a later step fails.
            cgroup.dirs.push(Dir {
                path,
                v2,
                controllers,
            });
        }
        for dir in &cgroup.dirs {
            if dir.v2 {
                v2::write_limits(&dir.path, &dir.controllers, limits)?;
            } else {
                v1::write_limits(&dir.path, &dir.controllers, limits)?;
            }
        }
        Ok(cgroup)
    }

    /// Opens the existing cgroup `name` under `parent` (to kill or remove what a crashed or
    /// other process left). `None` if it exists in no hierarchy.
    pub fn open_in(parent: &Parent, name: &str) -> Result<Option<Cgroup>, CgroupError> {
        check_name(name)?;
        let layout = available()?;
        let unified_mount = layout.unified().map(|u| u.mount.clone());
        let mut dirs = Vec::new();
        for (mount, controllers) in hierarchies(&layout) {
            let path = mount.join(parent.relative()).join(name);
            if path.is_dir() {
                let v2 = Some(&mount) == unified_mount.as_ref();
                let controllers = if v2 {
                    v2::controllers(&path)?
                } else {
                    controllers
                };
                dirs.push(Dir {
                    path,
                    v2,
                    controllers,
                });
            }
        }
        Ok((!dirs.is_empty()).then(|| Cgroup {
            name: name.to_owned(),
            dirs,
            done: false,
        }))
    }

    /// The cgroup's name (its directory name under the parent).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directories, one per hierarchy (the v2 one first, if any).
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// The directory that carries `controller`'s files, if the cgroup has that controller.
    pub fn controller_dir(&self, controller: Controller) -> Option<&Path> {
        self.dir_of(controller).map(|d| d.path.as_path())
    }

    fn dir_of(&self, controller: Controller) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
    }

    /// The v2 directory, if the host has a v2 hierarchy.
    fn unified(&self) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.v2)
    }

    /// The `cgroup.procs` files of every hierarchy (v1 without `cgroup.procs`: `tasks`).
    fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| {
                let procs = d.path.join("cgroup.procs");
                if d.v2 || procs.exists() {
                    procs
                } else {
                    d.path.join("tasks")
                }
            })
            .collect()
    }

    /// Moves process `pid` (all its threads) into the cgroup, in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for path in self.procs_paths() {
            files::write_raw(&path, &pid.to_string()).map_err(|source| CgroupError::AddPid {
                pid,
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The `cgroup.procs` (or v1 `tasks`) file of every hierarchy, opened `O_WRONLY|O_CLOEXEC`:
    /// opened before a clone, the parent writes the child's pid into each (see [`write_pid`])
    /// before letting the child go on.
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.procs_paths()
            .into_iter()
            .map(|path| {
                // std opens with O_CLOEXEC.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| files::error("open", &path, e))
            })
            .collect()
    }

    /// The processes in the cgroup (in any of its hierarchies), sorted.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for path in self.procs_paths() {
            pids.extend(files::read_pids(&path)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// The limits in force, read back from the cgroup's files (`None` where unlimited or where
    /// the cgroup lacks the controller).
    pub fn limits(&self) -> Result<Limits, CgroupError> {
        let mut limits = Limits::default();
        for controller in Controller::LIMITS {
            if let Some(dir) = self.dir_of(controller) {
                if dir.v2 {
                    v2::read_limit(&dir.path, controller, &mut limits)?;
                } else {
                    v1::read_limit(&dir.path, controller, &mut limits)?;
                }
            }
        }
        Ok(limits)
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup (v2
    /// `memory.events` or v1 `memory.oom_control`, `oom_kill`).
    pub fn memory_events_oom(&self) -> Result<u64, CgroupError> {
        let dir = self
            .dir_of(Controller::Memory)
            .ok_or(CgroupError::ControllerUnavailable {
                controller: Controller::Memory,
            })?;
        if dir.v2 {
            v2::oom_kills(&dir.path)
        } else {
            v1::oom_kills(&dir.path)
        }
    }

    /// Kills what is left in the cgroup and removes its directory in every hierarchy. Reports
    /// the first error; directories that could not be removed are named in it.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.done = true;
        self.teardown()
    }

    /// Leaves the cgroup in place (for debugging, or for another process to reopen with
    /// [`Cgroup::open_in`]); its processes keep running.
    pub fn keep(mut self) {
        self.done = true;
    }

    fn teardown(&self) -> Result<(), CgroupError> {
        let mut first = None;
        // Kill unless the cgroup is known to be empty (a failed read still tries).
        if !self.pids().is_ok_and(|pids| pids.is_empty())
            && let Err(e) = self.kill_all()
        {
            first = Some(e);
        }
        for dir in &self.dirs {
            if let Err(e) = files::rmdir(&dir.path, RMDIR_PATIENCE) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.teardown()
        {
            tracing::warn!(cgroup = %self.name, error = %e, "removing a dropped cgroup failed");
        }
    }
}

/// Writes `pid` into each `cgroup.procs` file from [`Cgroup::procs_files`] (one `write(2)`
/// each, no allocation). The launcher's parent calls this between clone and releasing the
/// child.
pub fn write_pid(files: &[OwnedFd], pid: u32) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut at = buf.len();
    let mut n = pid;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for fd in files {
        let fd: BorrowedFd<'_> = fd.as_fd();
        let written = nix::unistd::write(fd, &buf[at..]).map_err(io::Error::from)?;
        if written != buf.len() - at {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of a pid to cgroup.procs",
            ));
        }
    }
    Ok(())
}
