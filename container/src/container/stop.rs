//! stop, kill and restart: signal the container's PID 1 (through a pidfd, so a recycled pid
//! is never hit), also when another process started it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::{Container, Status};
use crate::error::ContainerError;
use crate::launch::pidfd;
use crate::record::{self, Record, State};

/// A pidfd for `pid` if it still is the process that started at `start` (clock ticks).
pub(crate) fn foreign_pidfd(pid: u32, start: u64) -> Option<OwnedFd> {
    let fd = pidfd::open(pid).ok()?;
    // Checked after opening: the pidfd now pins this very process.
    match record::pid_info(pid) {
        Some((s, false)) if s == start => Some(fd),
        _ => None,
    }
}

/// Send `sig` to the process of `pidfd`; fine if it has already ended.
pub(crate) fn send(pidfd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    match pidfd::send_signal(pidfd.as_raw_fd(), sig) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

impl Container {
    /// Send `sig` to the container's PID 1 (a no-op when it does not run).
    pub fn signal(&mut self, sig: nix::sys::signal::Signal) -> Result<(), ContainerError> {
        self.send_signal(sig as i32)
    }

    fn send_signal(&mut self, sig: i32) -> Result<(), ContainerError> {
        let id = self.id.clone();
        let perr = move |source| ContainerError::Process {
            id,
            op: "signalling",
            source,
        };
        if let Some(p) = &self.process {
            let fd = p.pidfd().try_clone_to_owned().map_err(perr.clone())?;
            return send(&fd, sig).map_err(perr);
        }
        let r = Record::read(&self.paths)?;
        if r.state == State::Running
            && let (Some(pid), Some(start)) = (r.pid, r.pid_start)
            && let Some(fd) = foreign_pidfd(pid, start)
        {
            send(&fd, sig).map_err(perr)?;
        }
        Ok(())
    }

    /// Kill the container's processes (SIGKILL to PID 1: the kernel kills the rest of its pid
    /// namespace). Returns at once; [`Container::wait`] collects the end.
    pub fn kill(&mut self) -> Result<(), ContainerError> {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all();
        }
        self.send_signal(libc::SIGKILL)
    }

    /// Stop: the stop signal (the image's `StopSignal`, else SIGTERM), then SIGKILL after
    /// `grace`; returns the status after the end.
    pub fn stop(&mut self, grace: Duration) -> Result<Status, ContainerError> {
        self.check_not_removed("stop")?;
        if !matches!(self.status()?, Status::Running) {
            return self.status();
        }
        self.send_signal(self.record.run.stop_signal)?;
        if self
            .wait_until(std::time::Instant::now() + grace, false)?
            .is_none()
        {
            self.kill()?;
            self.wait_inner(false)?;
        }
        self.status()
    }

    /// Stop (if running, with `grace`) and start again, on the same writable layer.
    pub fn restart(&mut self, grace: Duration) -> Result<(), ContainerError> {
        self.stop(grace)?;
        self.start()
    }
}
