//! stop, kill and restart: signal the container's PID 1 (through a pidfd, so a recycled pid
//! is never hit), also when another process started it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Container, Status};
use crate::error::ContainerError;
use crate::record::{self, Record, State};

/// A pidfd for `pid` if it still is the process that started at `start` (clock ticks).
pub(crate) fn foreign_pidfd(pid: u32, start: u64) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: the pidfd now pins this very process.
    match record::pid_info(pid) {
        Some((s, false)) if s == start => Some(fd),
        _ => None,
    }
}

/// Wait until the process of `pidfd` ends (`true`) or `timeout` passes (`false`).
pub(crate) fn poll_exit(pidfd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return true;
        }
        if n == 0 {
            return false;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true;
        }
    }
}

pub(crate) fn send(pidfd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: plain integer arguments; a NULL siginfo means "as kill(2) would send it".
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
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
        if self.wait_timeout_no_deadline(grace)?.is_none() {
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

    fn wait_timeout_no_deadline(
        &mut self,
        grace: Duration,
    ) -> Result<Option<Status>, ContainerError> {
        let saved = self.deadline.take();
        let r = self.wait_timeout(grace);
        if self.process.is_some() {
            self.deadline = saved;
        }
        r
    }
}
