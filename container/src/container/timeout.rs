//! A run's wall-clock timeout, decided in one place.
//!
//! One deadline is taken at start; whoever reaches it first, the watchdog thread (the timeout
//! holds even when nobody waits) or a waiter, kills the process through [`RunTimeout::expire`],
//! which marks the run as timed out *before* sending SIGKILL and only if the process is still
//! alive. The end is then judged by [`RunTimeout::outcome`] alone: a SIGKILL death after the
//! mark is a timeout; any other end (a normal exit just before the deadline, an OOM kill or a
//! `kill` before it) is the process's own. No clock is read again to guess what happened, so a
//! loaded machine delaying one thread or the other cannot turn a timeout into a plain SIGKILL
//! or the other way round.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::launch::pidfd::poll_exit;
use crate::launch::{ExitStatus, Process};

/// The timeout of one run of a container's process.
#[derive(Debug)]
pub(crate) struct RunTimeout {
    deadline: Instant,
    limit: Duration,
    /// Set once the process was found alive at the deadline and is being killed for it.
    expired: Arc<AtomicBool>,
}

/// How a run with a timeout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ended by itself (an exit, or a signal not sent for the timeout: an OOM kill too).
    Ended(ExitStatus),
    /// It was alive at the deadline and killed for it.
    TimedOut(ExitStatus),
}

impl RunTimeout {
    /// Arm the timeout of `process`, started just now: the deadline is `limit` from now, and a
    /// watchdog thread expires it then unless the process has ended.
    pub(crate) fn arm(process: &Process, limit: Duration) -> std::io::Result<RunTimeout> {
        let timeout = RunTimeout {
            deadline: Instant::now() + limit,
            limit,
            expired: Arc::new(AtomicBool::new(false)),
        };
        let fd = process.pidfd().try_clone_to_owned()?;
        let (deadline, expired) = (timeout.deadline, timeout.expired.clone());
        std::thread::Builder::new()
            .name("molde-timeout".into())
            .spawn(move || {
                if !poll_until(&fd, deadline) {
                    let _ = expire(&fd, &expired);
                }
            })?;
        Ok(timeout)
    }

    /// The deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The limit the run was given.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Kill the process for its timeout (a waiter found the deadline passed), through its
    /// pidfd: marked timed out first, and only if it still runs.
    pub(crate) fn expire(&self, pidfd: &OwnedFd) -> std::io::Result<()> {
        expire(pidfd, &self.expired)
    }

    /// How the run ended, given its collected status.
    pub(crate) fn outcome(&self, status: ExitStatus) -> Outcome {
        judge(self.expired.load(Ordering::SeqCst), status)
    }
}

/// The one rule: killed after being marked expired is a timeout, anything else is not.
fn judge(expired: bool, status: ExitStatus) -> Outcome {
    if expired && status.signal() == Some(nix::sys::signal::Signal::SIGKILL) {
        Outcome::TimedOut(status)
    } else {
        Outcome::Ended(status)
    }
}

/// Wait for the process's end until `deadline` (`true`: it ended). Never returns `false`
/// before the deadline: `poll`'s milliseconds are rounded down, so it polls again.
fn poll_until(pidfd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if poll_exit(pidfd, Some(left)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Mark `expired` and SIGKILL the process of `pidfd`, unless it has already ended (then its
/// own end stands).
fn expire(pidfd: &OwnedFd, expired: &AtomicBool) -> std::io::Result<()> {
    if poll_exit(pidfd, Some(Duration::ZERO)) {
        return Ok(());
    }
    expired.store(true, Ordering::SeqCst);
    match crate::launch::pidfd::send_signal(pidfd.as_raw_fd(), libc::SIGKILL) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kill_after_expiry_is_a_timeout() {
        let killed = ExitStatus::Signaled(nix::sys::signal::Signal::SIGKILL);
        let term = ExitStatus::Signaled(nix::sys::signal::Signal::SIGTERM);
        let exited = ExitStatus::Exited(0);
        assert_eq!(judge(true, killed), Outcome::TimedOut(killed));
        assert_eq!(judge(false, killed), Outcome::Ended(killed), "an OOM kill");
        assert_eq!(
            judge(true, exited),
            Outcome::Ended(exited),
            "ended just in time"
        );
        assert_eq!(judge(true, term), Outcome::Ended(term));
    }

    #[test]
    fn the_watchdog_never_fires_before_the_deadline() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let fd = crate::launch::pidfd::open(child.id()).unwrap();
        for ms in [0, 1, 2, 7, 20] {
            // Odd fractions of a millisecond, which `poll` rounds down.
            let deadline = Instant::now() + Duration::from_micros(ms * 1000 + 937);
            assert!(!poll_until(&fd, deadline));
            assert!(Instant::now() >= deadline, "returned before the deadline");
        }
        let expired = AtomicBool::new(false);
        expire(&fd, &expired).unwrap();
        assert!(expired.load(Ordering::SeqCst));
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // An ended process is not expired again.
        let expired = AtomicBool::new(false);
        expire(&fd, &expired).unwrap();
        assert!(!expired.load(Ordering::SeqCst));
    }
}
