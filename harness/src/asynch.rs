//! The async API (cargo feature `tokio`): start, wait, exec, readiness and logs without blocking
//! a runtime thread.
//!
//! - [`AsyncContainer::wait`] waits on the container's pidfd through [`tokio::io::unix::AsyncFd`]:
//!   no thread is parked, no polling.
//! - [`start`], [`AsyncContainer::ready`] and [`AsyncContainer::exec_output`] run the blocking
//!   calls on tokio's blocking pool (`spawn_blocking`); the container moves there and back. If
//!   such a future is dropped before it completes, the container stays with the blocking task
//!   and is removed when that task ends.
//! - [`AsyncContainer::logs`] follows the logs as an async sequence of lines (file reads, then a
//!   timer between polls).
//!
//! ```no_run
//! use molde_harness::{Harness, asynch, ready::WaitFor};
//! # async fn f(image: molde_image::Image) -> Result<(), Box<dyn std::error::Error>> {
//! let harness = Harness::shared()?;
//! let mut c = asynch::start(harness, harness.container(&image).command("/bin/sh")
//!     .args(["-c", "echo up; sleep 1"])).await?;
//! c.ready(vec![WaitFor::log("up")?]).await?;
//! let status = c.wait().await?;
//! # let _ = status; Ok(()) }
//! ```

use std::time::Duration;

use molde_container::logs::{LogError, LogFollower};
use molde_container::{ContainerBuilder, ContainerError, LogLine, Output, Status};
use tokio::io::unix::AsyncFd;

use crate::ready::{self, ReadyError, WaitFor};
use crate::{Harness, HarnessError, TestContainer};

/// How often a log follower looks for more lines.
const LOG_POLL: Duration = Duration::from_millis(5);

/// A test container driven from async code (see the [module docs](self)).
#[derive(Debug)]
pub struct AsyncContainer {
    inner: Option<TestContainer>,
}

/// Why a blocking task did not give its result back.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the harness's blocking task was cancelled: {e}"),
    }
}

/// Create and start the container `builder` describes (on the blocking pool).
pub async fn start(
    harness: &Harness,
    builder: ContainerBuilder,
) -> Result<AsyncContainer, HarnessError> {
    let harness = harness.clone();
    let c = joined(tokio::task::spawn_blocking(move || harness.start(builder)).await)?;
    Ok(AsyncContainer { inner: Some(c) })
}

impl AsyncContainer {
    /// The container (for the quick, non-blocking calls: id, status, logs, pidfd).
    pub fn get(&self) -> &TestContainer {
        self.inner.as_ref().expect("present between calls")
    }

    /// The container, mutably.
    pub fn get_mut(&mut self) -> &mut TestContainer {
        self.inner.as_mut().expect("present between calls")
    }

    /// Back to the sync API.
    pub fn into_inner(mut self) -> TestContainer {
        self.inner.take().expect("present between calls")
    }

    /// Run `f` with the container on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut TestContainer) -> T + Send + 'static,
    ) -> T {
        let mut c = self.inner.take().expect("present between calls");
        let (c, out) = joined(
            tokio::task::spawn_blocking(move || {
                let out = f(&mut c);
                (c, out)
            })
            .await,
        );
        self.inner = Some(c);
        out
    }

    /// Wait until the container's process ends: the pidfd registered with the runtime.
    pub async fn wait(&mut self) -> Result<Status, ContainerError> {
        loop {
            let fd = match self.get().pidfd() {
                Some(fd) => fd
                    .try_clone_to_owned()
                    .map_err(|source| ContainerError::Process {
                        id: self.get().id().to_owned(),
                        op: "duplicating the pidfd",
                        source,
                    })?,
                // Not this handle's process (or already collected): the status says.
                None => return self.get_mut().status(),
            };
            let status = self.get_mut().status()?;
            if status != Status::Running {
                return Ok(status);
            }
            // SAFETY: registers the descriptor with the runtime's epoll (epoll_ctl). An
            // `OwnedFd` keeps that descriptor open and returns the same number until the
            // `AsyncFd` drops it, which is what registration requires.
            let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| ContainerError::Process {
                    id: self.get().id().to_owned(),
                    op: "registering the pidfd",
                    source: e.into(),
                })?;
            // Readable once the process has ended.
            let mut guard = afd
                .readable()
                .await
                .map_err(|source| ContainerError::Process {
                    id: self.get().id().to_owned(),
                    op: "waiting on the pidfd",
                    source,
                })?;
            guard.retain_ready();
        }
    }

    /// Wait until every condition holds (see [`ready::wait`]).
    pub async fn ready(&mut self, conditions: Vec<WaitFor>) -> Result<Duration, ReadyError> {
        self.blocking(move |c| ready::wait(c, &conditions)).await
    }

    /// Run `argv` in the container to its end, its output collected.
    pub async fn exec_output(&mut self, argv: Vec<String>) -> Result<Output, ContainerError> {
        self.blocking(move |c| {
            let Some((program, args)) = argv.split_first() else {
                return Err(ContainerError::Io {
                    op: "exec of an empty command",
                    path: Default::default(),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            };
            c.exec(program).args(args).output()
        })
        .await
    }

    /// Its logs, from the first line kept, then live to the container's end.
    pub fn logs(&self) -> Result<AsyncLogs, LogError> {
        Ok(AsyncLogs {
            follower: self.get().follow_logs()?,
        })
    }
}

/// A container's log lines as an async sequence: `while let Some(line) = logs.next().await`.
#[derive(Debug)]
pub struct AsyncLogs {
    follower: LogFollower,
}

impl AsyncLogs {
    /// The next line; `None` at the end (the container ended and all is read).
    pub async fn next(&mut self) -> Option<Result<LogLine, LogError>> {
        loop {
            match self.follower.try_next() {
                Ok(Some(line)) => return Some(Ok(line)),
                Ok(None) if self.follower.is_finished() => return None,
                Ok(None) => tokio::time::sleep(LOG_POLL).await,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
