//! Limits in cgroup v1 hierarchies (`memory`, `pids`, `cpu`) and the v1 freezer.

use std::path::Path;
use std::time::{Duration, Instant};

use super::detect::Controller;
use super::{CgroupError, Limits, files};

/// v1 reports "no memory limit" as a page-aligned `PAGE_COUNTER_MAX` (close to `i64::MAX`);
/// anything at or above this counts as unlimited.
const UNLIMITED_MEMORY: u64 = 1 << 62;

/// Writes the limits that belong to `controllers` into the v1 cgroup `dir`.
pub(crate) fn write_limits(
    dir: &Path,
    controllers: &[Controller],
    limits: &Limits,
) -> Result<(), CgroupError> {
    for controller in controllers {
        match controller {
            Controller::Memory => {
                if let Some(bytes) = limits.memory_bytes {
                    let value = bytes.to_string();
                    files::write(&dir.join("memory.limit_in_bytes"), &value)?;
                    // With swap accounting, the limit covers memory and swap together (no
                    // swapping around the limit). Without it the file is absent: nothing to do.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        files::write(&memsw, &value)?;
                    }
                }
            }
            Controller::Pids => {
                if let Some(pids) = limits.pids {
                    files::write(&dir.join("pids.max"), &pids.to_string())?;
                }
            }
            Controller::Cpu => {
                if let Some((quota, period)) = limits.cpu_quota {
                    // Period first: the quota is checked against it.
                    files::write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    files::write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Controller::Freezer => {}
        }
    }
    Ok(())
}

/// Reads back the limit `controller` has in `dir` into `limits`.
pub(crate) fn read_limit(
    dir: &Path,
    controller: Controller,
    limits: &mut Limits,
) -> Result<(), CgroupError> {
    match controller {
        Controller::Memory => {
            let path = dir.join("memory.limit_in_bytes");
            let bytes = files::parse_u64(&path, &files::read(&path)?)?;
            limits.memory_bytes = (bytes < UNLIMITED_MEMORY).then_some(bytes);
        }
        Controller::Pids => {
            let path = dir.join("pids.max");
            limits.pids = files::parse_max(&path, &files::read(&path)?)?;
        }
        Controller::Cpu => {
            let quota_path = dir.join("cpu.cfs_quota_us");
            let quota = files::read(&quota_path)?;
            let quota = quota.trim();
            if quota == "-1" {
                limits.cpu_quota = None;
            } else {
                let quota = files::parse_u64(&quota_path, quota)?;
                let period_path = dir.join("cpu.cfs_period_us");
                let period = files::parse_u64(&period_path, &files::read(&period_path)?)?;
                limits.cpu_quota = Some((quota, period));
            }
        }
        Controller::Freezer => {}
    }
    Ok(())
}

/// The OOM kill count of a v1 memory cgroup (`oom_kill` in `memory.oom_control`, kernel 4.13+).
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    let path = dir.join("memory.oom_control");
    let text = files::read(&path)?;
    files::keyed(&path, &text, "oom_kill")?.ok_or(CgroupError::Parse {
        path,
        text: "no oom_kill line (kernel older than 4.13)".into(),
    })
}

/// Freezes (`FROZEN`) or thaws (`THAWED`) a v1 freezer cgroup. Freezing waits (briefly) until
/// the state reads `FROZEN`; a cgroup still `FREEZING` after that is left so, and the caller's
/// kill loop handles whatever still runs.
pub(crate) fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let path = dir.join("freezer.state");
    files::write(&path, if frozen { "FROZEN" } else { "THAWED" })?;
    if frozen {
        let deadline = Instant::now() + Duration::from_secs(1);
        while files::read(&path)?.trim() != "FROZEN" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}
