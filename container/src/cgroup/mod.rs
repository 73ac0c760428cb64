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
mod files;
mod v1;
mod v2;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use detect::{Controller, Layout, Placement, Unified, V1Hierarchy, available};

/// How long [`Cgroup::kill_all`] waits for a cgroup to empty.
const KILL_PATIENCE: Duration = Duration::from_secs(10);
/// How long removal retries a directory the kernel still reports busy.
const RMDIR_PATIENCE: Duration = Duration::from_secs(2);

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem is mounted (nothing in `/proc/self/mountinfo`).
    #[error(
        "no cgroup filesystem is mounted (none in /proc/self/mountinfo): resource limits are not \
         available; run without limits"
    )]
    NotMounted,
    /// The kernel refused for lack of permission.
    #[error(
        "cannot {op} {path}: {source}: resource limits need root or a delegated cgroup (systemd \
         `Delegate=yes`, passed as Parent::at); run without limits to go on without them"
    )]
    PermissionDenied {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A limit was asked for whose controller this host does not offer.
    #[error(
        "the {controller} controller is not available (neither a v1 hierarchy nor the v2 \
         hierarchy's cgroup.controllers has it): run without the {controller} limit"
    )]
    ControllerUnavailable {
        /// The missing controller.
        controller: Controller,
    },
    /// The kernel refused to enable a controller for the molde parent.
    #[error(
        "cannot enable the {controller} controller in {path}: {source} (EBUSY: that cgroup holds \
         processes of its own, which cgroup v2 forbids for a parent; choose a parent without)"
    )]
    EnableController {
        /// The controller.
        controller: Controller,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroup of this name already exists.
    #[error("cgroup {path} already exists")]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// The name is not usable as a cgroup directory.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A limit is out of range.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A cgroupfs file held something unexpected.
    #[error("unexpected content in {path}: {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
    /// Processes were still in the cgroup after killing them.
    #[error("cgroup {path} still holds processes {pids:?} after SIGKILL")]
    NotEmpty {
        /// A directory of the cgroup.
        path: PathBuf,
        /// The pids left.
        pids: Vec<u32>,
    },
    /// A process could not be moved into the cgroup.
    #[error("cannot move process {pid} into {path}: {source}")]
    AddPid {
        /// The process.
        pid: u32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The error (ESRCH: no such process).
        #[source]
        source: io::Error,
    },
    /// Another I/O error.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A container's resource limits. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes, swap included (the container does not swap around its limit). At least
    /// one page is needed; the kernel rounds down to whole pages.
    pub memory_bytes: Option<u64>,
    /// Processes and threads, at least 1.
    pub pids: Option<u64>,
    /// CPU bandwidth: `quota` microseconds of CPU time per `period` microseconds (period 1 ms to
    /// 1 s, quota at least 1 ms; `(50_000, 100_000)` is half a CPU, `(200_000, 100_000)` two).
    pub cpu_quota: Option<(u64, u64)>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Checks the ranges the kernel accepts, so that a bad value fails before anything is made.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(bytes) = self.memory_bytes
            && bytes < 4096
        {
            return Err(CgroupError::InvalidLimit(format!(
                "memory limit {bytes} bytes is below one page (4096)"
            )));
        }
        if self.pids == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "pids limit 0: at least 1 process is needed".into(),
            ));
        }
        if let Some((quota, period)) = self.cpu_quota {
            if !(1_000..=1_000_000).contains(&period) {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu period {period} us is outside 1000..=1000000 us"
                )));
            }
            if quota < 1_000 {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu quota {quota} us is below the kernel's minimum of 1000 us"
                )));
            }
        }
        Ok(())
    }

    /// Whether `controller` has a limit to set.
    fn wants(&self, controller: Controller) -> bool {
        match controller {
            Controller::Memory => self.memory_bytes.is_some(),
            Controller::Pids => self.pids.is_some(),
            Controller::Cpu => self.cpu_quota.is_some(),
            Controller::Freezer => false,
        }
    }
}

/// Where containers' cgroups are made: a path relative to the root of every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    relative: PathBuf,
}

impl Default for Parent {
    /// `molde`, at the root of every hierarchy.
    fn default() -> Self {
        Parent {
            relative: PathBuf::from("molde"),
        }
    }
}

impl Parent {
    /// A parent at `relative` below every hierarchy's root, such as a delegated subtree
    /// (`user.slice/user-1000.slice/user@1000.service/app.slice/molde`). In v2 each of its
    /// ancestors must hold no processes of its own once controllers are enabled.
    pub fn at(relative: impl Into<PathBuf>) -> Result<Parent, CgroupError> {
        let relative = relative.into();
        let shown = relative.to_string_lossy().into_owned();
        let normal = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if relative.as_os_str().is_empty() || !normal {
            return Err(CgroupError::InvalidName {
                name: shown,
                reason: "a parent must be a relative path of plain components (no '..', no '/')",
            });
        }
        Ok(Parent { relative })
    }

    /// The parent's path relative to each hierarchy's root.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// The parent's directory in every hierarchy molde uses on this host.
    pub fn dirs(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let layout = available()?;
        Ok(hierarchies(&layout)
            .into_iter()
            .map(|(mount, _)| mount.join(&self.relative))
            .collect())
    }

    /// The names of the cgroups below this parent (in any hierarchy), sorted: after a crash,
    /// whatever is here and not in the store's records is stale.
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for dir in self.dirs()? {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(files::error("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| files::error("list", &dir, e))?;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes the parent's directories where they are empty (its last component only; those
    /// holding cgroups are left). Other molde users may share a parent: call this only for a
    /// parent of your own.
    pub fn remove_if_empty(&self) -> Result<(), CgroupError> {
        for dir in self.dirs()? {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::EBUSY | libc::ENOTEMPTY)
                    ) => {}
                Err(e) => return Err(files::error("remove", &dir, e)),
            }
        }
        Ok(())
    }
}

/// How [`Cgroup::kill_all`] kills a cgroup's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillStrategy {
    /// v2 `cgroup.kill` (kernel 5.14+): the kernel kills every process, forks included.
    CgroupKill,
    /// v1 freezer: freeze (no process runs, none forks), SIGKILL each, thaw.
    FreezerV1,
    /// v2 `cgroup.freeze` (kernel 5.2+): the same with v2's built-in freezer.
    FreezeV2,
    /// SIGKILL each listed process, again until none is left (a forking process can race it;
    /// the pids limit bounds the race).
    Signal,
}

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
            let parent_dir = mount.join(&parent.relative);
            if v2 {
                // Enable the controllers on the way down: the root (exempt from the "no
                // internal processes" rule), each intermediate directory, then the parent.
                let mut dir = mount.clone();
                v2::enable(&dir, &controllers)?;
                for component in parent.relative.components() {
                    dir.push(component);
                    files::mkdir(&dir, true)?;
                    v2::enable(&dir, &controllers)?;
                }
            } else {
                let mut dir = mount.clone();
                for component in parent.relative.components() {
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
            let path = mount.join(&parent.relative).join(name);
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

    /// Kills every process in the cgroup with SIGKILL and waits until it is empty, with the
    /// first of [`Cgroup::kill_strategies`]: v2's `cgroup.kill` where the kernel has it (5.14+;
    /// also in a hybrid's v2 hierarchy), which also catches processes forking meanwhile; else
    /// freezing the cgroup (v1 `freezer`, or v2 `cgroup.freeze`), killing each process and
    /// thawing; else killing until nothing is left.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let strategy = self.kill_strategies()[0];
        self.kill_all_using(strategy)
    }

    /// The ways this cgroup's processes can be killed here, best first (never empty: the last
    /// is always [`KillStrategy::Signal`]).
    pub fn kill_strategies(&self) -> Vec<KillStrategy> {
        let mut out = Vec::new();
        if let Some(dir) = self.unified() {
            if dir.path.join("cgroup.kill").exists() {
                out.push(KillStrategy::CgroupKill);
            }
        }
        if self.dir_of(Controller::Freezer).is_some() {
            out.push(KillStrategy::FreezerV1);
        }
        if let Some(dir) = self.unified() {
            if dir.path.join("cgroup.freeze").exists() {
                out.push(KillStrategy::FreezeV2);
            }
        }
        out.push(KillStrategy::Signal);
        out
    }

    /// [`Cgroup::kill_all`] with a given strategy (one of [`Cgroup::kill_strategies`]; another
    /// fails with the I/O error of its missing file).
    pub fn kill_all_using(&self, strategy: KillStrategy) -> Result<(), CgroupError> {
        let missing = || CgroupError::Io {
            op: "kill through",
            path: self.dirs[0].path.clone(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("{strategy:?} is not available for this cgroup"),
            ),
        };
        match strategy {
            KillStrategy::CgroupKill => {
                let dir = self.unified().ok_or_else(missing)?;
                files::write(&dir.path.join("cgroup.kill"), "1")?;
                return self.wait_empty(false);
            }
            KillStrategy::FreezerV1 | KillStrategy::FreezeV2 => {
                let v2 = strategy == KillStrategy::FreezeV2;
                let dir = if v2 {
                    self.unified()
                } else {
                    self.dir_of(Controller::Freezer)
                }
                .ok_or_else(missing)?;
                freeze(&dir.path, v2, true)?;
                let killed = self.signal_each();
                let thawed = freeze(&dir.path, v2, false);
                killed?;
                thawed?;
            }
            KillStrategy::Signal => self.signal_each()?,
        }
        self.wait_empty(true)
    }

    /// Sends SIGKILL to every process listed now.
    fn signal_each(&self) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            // ESRCH: it exited meanwhile.
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        Ok(())
    }

    /// Waits until no process is left; with `resignal`, kills whatever still shows up.
    fn wait_empty(&self, resignal: bool) -> Result<(), CgroupError> {
        let deadline = Instant::now() + KILL_PATIENCE;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs[0].path.clone(),
                    pids,
                });
            }
            if resignal {
                self.signal_each()?;
            }
            std::thread::sleep(Duration::from_millis(2));
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

/// Freezes or thaws `dir`: v1 `freezer.state`, or v2 `cgroup.freeze`.
fn freeze(dir: &Path, v2: bool, frozen: bool) -> Result<(), CgroupError> {
    if v2 {
        files::write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    } else {
        v1::freeze(dir, frozen)
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
