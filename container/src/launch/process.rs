//! [`Process`]: a launched container process, waited on and signalled through its pidfd.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::exit::ExitStatus;
use super::pidfd;

macro_rules! pipe_end {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $name(File);

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }

        impl From<$name> for OwnedFd {
            fn from(end: $name) -> OwnedFd {
                end.0.into()
            }
        }

        impl From<OwnedFd> for $name {
            fn from(fd: OwnedFd) -> $name {
                $name(File::from(fd))
            }
        }
    };
}

pipe_end!(
    ChildStdin,
    "The writing end of a process's piped standard input."
);
pipe_end!(
    ChildStdout,
    "The reading end of a process's piped standard output."
);
pipe_end!(
    ChildStderr,
    "The reading end of a process's piped standard error."
);

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Read for ChildStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Read for ChildStderr {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// A running (or finished, not yet dropped) container process: the container's PID 1, or a
/// process exec'd into a running container.
///
/// Dropping it kills the process (`SIGKILL`) if it still runs and reaps it.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    /// With an init as PID 1: the host pid of the program, the init's child.
    program_pid: Option<u32>,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    terminal: Option<super::Terminal>,
}

impl Process {
    pub(crate) fn new(
        pid: u32,
        pidfd: OwnedFd,
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> Process {
        Process {
            pid,
            program_pid: None,
            pidfd,
            status: None,
            stdin: stdin.map(ChildStdin::from),
            stdout: stdout.map(ChildStdout::from),
            stderr: stderr.map(ChildStderr::from),
            terminal: None,
        }
    }

    pub(crate) fn set_terminal(&mut self, terminal: super::Terminal) {
        self.terminal = Some(terminal);
    }

    /// The host's end of the process's terminal, when it was given one
    /// ([`Spec::terminal`](super::Spec::terminal)), once.
    pub fn take_terminal(&mut self) -> Option<super::Terminal> {
        self.terminal.take()
    }

    /// The host pid of the process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host pid of the program: the process itself, or, when an init runs as the
    /// container's PID 1 ([`Spec::init`](super::Spec::init)), the init's child, which exec'd
    /// the program. A further process is exec'd into the container through it: the init is a
    /// copy of the host binary and stays non-dumpable, so only a privileged caller could open
    /// its namespaces.
    pub fn program_pid(&self) -> u32 {
        self.program_pid.unwrap_or(self.pid)
    }

    pub(crate) fn set_program_pid(&mut self, pid: u32) {
        self.program_pid = Some(pid);
    }

    /// The process's pidfd (for `poll` or `setns`).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Wait for the process to end.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        // Whatever the caller has not taken would only make the process block on a full pipe
        // or wait for input: close our end of stdin, as std does.
        drop(self.stdin.take());
        loop {
            match pidfd::waitid(self.pidfd.as_raw_fd(), 0)? {
                Some(status) => {
                    self.status = Some(status);
                    return Ok(status);
                }
                None => continue,
            }
        }
    }

    /// The exit status if the process has ended, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = pidfd::waitid(self.pidfd.as_raw_fd(), libc::WNOHANG)?;
        self.status = status;
        Ok(status)
    }

    /// Wait at most `timeout` for the process to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }

    /// Send `sig` to the process (`pidfd_send_signal`: never a recycled pid).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        pidfd::send_signal(self.pidfd.as_raw_fd(), sig as libc::c_int)
    }

    /// Kill the process (`SIGKILL`); fine if it has already ended. It still has to be waited
    /// for ([`Process::wait`]), as with `std::process::Child`.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match pidfd::send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The writing end of a piped stdin (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The reading end of a piped stdout (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The reading end of a piped stderr (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Wait for the process while collecting its piped stdout and stderr (the ones not
    /// taken), like `std::process::Child::wait_with_output`.
    pub fn wait_with_output(mut self) -> io::Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        drop(self.stdin.take());
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();
        let (out, err) = std::thread::scope(|scope| {
            let err_reader = scope.spawn(move || -> io::Result<Vec<u8>> {
                let mut buf = Vec::new();
                if let Some(mut stderr) = stderr {
                    stderr.read_to_end(&mut buf)?;
                }
                Ok(buf)
            });
            let mut out = Vec::new();
            let out_result = match stdout {
                Some(mut stdout) => stdout.read_to_end(&mut out).map(|_| out),
                None => Ok(out),
            };
            let err_result = err_reader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("stderr reader panicked")));
            (out_result, err_result)
        });
        let status = self.wait()?;
        Ok((status, out?, err?))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}
