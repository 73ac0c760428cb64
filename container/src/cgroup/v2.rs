//! Limits in the cgroup v2 hierarchy, and enabling controllers down to the molde parent.

use std::path::Path;

use super::detect::Controller;
use super::{CgroupError, Limits, files};

/// Enables `controllers` in `dir`'s `cgroup.subtree_control` (those not enabled yet), so that
/// its children get them. `dir` must hold no processes itself unless it is the root (v2's "no
/// internal processes" rule); the kernel answers EBUSY otherwise.
pub(crate) fn enable(dir: &Path, controllers: &[Controller]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = files::read(&path)?;
    for controller in controllers {
        if enabled.split_whitespace().any(|c| c == controller.name()) {
            continue;
        }
        files::write_raw(&path, &format!("+{}", controller.name())).map_err(
            |source| match source.raw_os_error() {
                Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
                    files::error("enable controllers in", &path, source)
                }
                _ => CgroupError::EnableController {
                    controller: *controller,
                    path: path.clone(),
                    source,
                },
            },
        )?;
    }
    Ok(())
}

/// The controllers `dir` can use (its `cgroup.controllers`).
pub(crate) fn controllers(dir: &Path) -> Result<Vec<Controller>, CgroupError> {
    let text = files::read(&dir.join("cgroup.controllers"))?;
    Ok(Controller::LIMITS
        .into_iter()
        .filter(|c| text.split_whitespace().any(|n| n == c.name()))
        .collect())
}

/// Writes the limits that belong to `controllers` into the v2 cgroup `dir`.
pub(crate) fn write_limits(
    dir: &Path,
    controllers: &[Controller],
    limits: &Limits,
) -> Result<(), CgroupError> {
    for controller in controllers {
        match controller {
            Controller::Memory => {
                if let Some(bytes) = limits.memory_bytes {
                    files::write(&dir.join("memory.max"), &bytes.to_string())?;
                    // The limit covers memory and swap together: no swapping around it. Without
                    // swap accounting the file is absent.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        files::write(&swap, "0")?;
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
                    files::write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
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
            let path = dir.join("memory.max");
            limits.memory_bytes = files::parse_max(&path, &files::read(&path)?)?;
        }
        Controller::Pids => {
            let path = dir.join("pids.max");
            limits.pids = files::parse_max(&path, &files::read(&path)?)?;
        }
        Controller::Cpu => {
            let path = dir.join("cpu.max");
            let text = files::read(&path)?;
            let mut parts = text.split_whitespace();
            let quota = files::parse_max(&path, parts.next().unwrap_or(""))?;
            let period = files::parse_u64(&path, parts.next().unwrap_or(""))?;
            limits.cpu_quota = quota.map(|q| (q, period));
        }
        Controller::Freezer => {}
    }
    Ok(())
}

/// The OOM kill count of a v2 memory cgroup (`oom_kill` in `memory.events`).
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    let path = dir.join("memory.events");
    let text = files::read(&path)?;
    files::keyed(&path, &text, "oom_kill")?.ok_or(CgroupError::Parse {
        path,
        text: "no oom_kill line".into(),
    })
}
