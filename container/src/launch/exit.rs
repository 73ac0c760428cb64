//! [`ExitStatus`]: how a container process ended, as `waitid` on its pidfd tells.

use nix::sys::signal::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
}

impl ExitStatus {
    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(*code),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self {
            ExitStatus::Signaled(sig) => Some(*sig),
            ExitStatus::Exited(_) => None,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by {sig}"),
        }
    }
}
