//! Killing every process of a cgroup: [`KillStrategy`], best first (`cgroup.kill`, a
//! freezer, or signals until none is left).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Cgroup, CgroupError, Controller, files, v1};

/// How long [`Cgroup::kill_all`] waits for a cgroup to empty.
const KILL_PATIENCE: Duration = Duration::from_secs(10);

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

impl Cgroup {
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
}

/// Freezes or thaws `dir`: v1 `freezer.state`, or v2 `cgroup.freeze`.
fn freeze(dir: &Path, v2: bool, frozen: bool) -> Result<(), CgroupError> {
    if v2 {
        files::write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    } else {
        v1::freeze(dir, frozen)
    }
}
