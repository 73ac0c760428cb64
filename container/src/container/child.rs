//! [`Child`] and [`Output`]: a started container used like `std::process::Child`.

use std::io::Read;
use std::time::Duration;

use super::{Container, Status};
use crate::error::ContainerError;
use crate::launch::{ChildStderr, ChildStdin, ChildStdout};

/// What [`crate::ContainerBuilder::output`] collects, like `std::process::Output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How the container's process ended.
    pub status: Status,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self.status, Status::Exited { code: Some(0), .. })
    }
}

/// A started container, like `std::process::Child`: its piped streams, wait, kill. Dropping
/// it kills the container's processes and removes the container (unless
/// [`Child::into_container`] took it out).
#[derive(Debug)]
pub struct Child {
    /// The container's stdin, when piped.
    pub stdin: Option<ChildStdin>,
    /// The container's stdout, when piped.
    pub stdout: Option<ChildStdout>,
    /// The container's stderr, when piped.
    pub stderr: Option<ChildStderr>,
    /// The host's end of the container's terminal ([`crate::ContainerBuilder::tty`]).
    pub terminal: Option<crate::launch::Terminal>,
    container: Container,
}

impl Child {
    pub(crate) fn new(mut container: Container) -> Result<Child, ContainerError> {
        let p = container
            .process
            .as_mut()
            .ok_or_else(|| ContainerError::State {
                id: container.id.clone(),
                state: "not running".into(),
                op: "spawn",
            })?;
        Ok(Child {
            stdin: p.take_stdin(),
            stdout: p.take_stdout(),
            stderr: p.take_stderr(),
            terminal: p.take_terminal(),
            container,
        })
    }

    /// The host pid of the container's PID 1.
    pub fn pid(&self) -> Option<u32> {
        self.container.pid()
    }

    /// The container.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// The container, mutably (stop, restart, commit...).
    pub fn container_mut(&mut self) -> &mut Container {
        &mut self.container
    }

    /// The container, taken out of the child (its streams are closed).
    pub fn into_container(self) -> Container {
        self.container
    }

    /// Wait for the end (stdin is closed first, as `std` does).
    pub fn wait(&mut self) -> Result<Status, ContainerError> {
        drop(self.stdin.take());
        self.container.wait()
    }

    /// The status if the process has ended, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<Status>, ContainerError> {
        match self.container.status()? {
            Status::Running => Ok(None),
            s => Ok(Some(s)),
        }
    }

    /// Wait at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Status>, ContainerError> {
        self.container.wait_timeout(timeout)
    }

    /// Kill the container's processes.
    pub fn kill(&mut self) -> Result<(), ContainerError> {
        self.container.kill()
    }

    /// Wait for the end while collecting piped stdout and stderr, then remove the container.
    /// On a terminal ([`crate::ContainerBuilder::tty`]) what it shows is `stdout` (the
    /// program's stdout and stderr both, lines ending in `\r\n`).
    pub fn wait_with_output(mut self) -> Result<Output, ContainerError> {
        drop(self.stdin.take());
        let stdout = output_reader(self.terminal.take(), self.stdout.take());
        let stderr = self.stderr.take();
        let id = self.container.id.clone();
        // Read while waiting: the wait enforces the timeout (killing the container closes
        // the pipes), so a run that never closes its streams cannot hang the reader.
        let (status, out, err) = std::thread::scope(|s| {
            let o = s.spawn(move || read_all(stdout));
            let e = s.spawn(move || read_all(stderr));
            let status = self.container.wait();
            let join = |h: std::thread::ScopedJoinHandle<'_, std::io::Result<Vec<u8>>>| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("output reader panicked")))
            };
            (status, join(o), join(e))
        });
        let removed = self.into_container().close();
        let status = status?;
        removed?;
        let perr = |source| ContainerError::Process {
            id: id.clone(),
            op: "reading output",
            source,
        };
        Ok(Output {
            status,
            stdout: out.map_err(perr)?,
            stderr: err.map_err(perr)?,
        })
    }
}

/// What a run's `stdout` is read from: its terminal if it has one, else its piped stdout.
pub(crate) fn output_reader(
    terminal: Option<crate::launch::Terminal>,
    stdout: Option<ChildStdout>,
) -> Option<Box<dyn Read + Send>> {
    match terminal {
        Some(t) => Some(Box::new(t)),
        None => stdout.map(|s| Box::new(s) as Box<dyn Read + Send>),
    }
}

fn read_all(r: Option<impl Read>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        r.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// Read piped stdout and stderr to their ends, both at once.
pub(crate) fn collect(
    stdout: Option<impl Read + Send>,
    stderr: Option<ChildStderr>,
) -> (std::io::Result<Vec<u8>>, std::io::Result<Vec<u8>>) {
    std::thread::scope(|s| {
        let e = s.spawn(move || read_all(stderr));
        let o = read_all(stdout);
        let e = e
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stderr reader panicked")));
        (o, e)
    })
}
