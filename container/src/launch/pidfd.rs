//! pidfd system calls: a process named by a descriptor, never by a pid that may be reused.
//! Used by [`Process`](super::Process), by `launch::exec` and by the container verbs that
//! reach a process another handle started (`container/stop.rs`, `container/start.rs`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::exit::ExitStatus;

/// `pidfd_open(2)`: a pidfd for `pid`.
pub(crate) fn open(pid: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new pidfd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// `pidfd_send_signal(2)`.
pub(crate) fn send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments; a NULL siginfo means "as kill(2) would send it".
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Wait until the process of `pidfd` ends (`true`) or `timeout` passes (`false`).
pub(crate) fn poll_exit(pidfd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                // Rounded up: never back before `timeout` has passed.
                let left = d.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
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

/// `waitid(P_PIDFD, pidfd, WEXITED | extra)`: the status, or `None` with `WNOHANG` when the
/// process still runs.
pub(crate) fn waitid(pidfd: RawFd, extra: libc::c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; the kernel fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes during the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL | extra,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid filled `info` for a child (or left si_pid 0 with WNOHANG).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return Ok(None);
        }
        // SAFETY: as above; si_status is valid for SIGCHLD infos.
        let status = unsafe { info.si_status() };
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            _ => ExitStatus::Signaled(Signal::try_from(status).unwrap_or(Signal::SIGKILL)),
        }));
    }
}
