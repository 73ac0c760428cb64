//! [`Limits`]: a container's memory, pids and cpu limits, checked before any cgroup is made.

use super::{CgroupError, Controller};

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
    pub(super) fn wants(&self, controller: Controller) -> bool {
        match controller {
            Controller::Memory => self.memory_bytes.is_some(),
            Controller::Pids => self.pids.is_some(),
            Controller::Cpu => self.cpu_quota.is_some(),
            Controller::Freezer => false,
        }
    }
}
