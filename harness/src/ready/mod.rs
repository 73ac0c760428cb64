//! Readiness: wait until a container's service is ready, as testcontainers' wait strategies do,
//! but polling cheaply (a connect every 2 ms, an exec every 10 ms, not a sleep of a second) and
//! stopping at once when the container exits, with its exit status and last log lines.
//!
//! ```no_run
//! use std::time::Duration;
//! use molde_harness::ready::{self, WaitFor};
//! # fn f(c: &mut molde_container::Container) -> Result<(), molde_harness::ready::ReadyError> {
//! ready::wait(c, &[
//!     WaitFor::log("database system is ready to accept connections")?,
//!     WaitFor::exec(["pg_isready", "-h", "/sock"]).timeout(Duration::from_secs(5)),
//! ])?;
//! # Ok(()) }
//! ```

mod probe;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use molde_container::logs::{LogError, LogFollower, Stream};
use molde_container::{Container, ContainerError, LogLine, Status};
use regex::Regex;

pub(crate) use probe::healthcheck;

/// The default timeout of a condition.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines a failed wait carries.
const ERROR_LINES: usize = 20;

/// What readiness means: one condition, with its timeout. Several are checked in turn by
/// [`wait`] (all must hold).
#[derive(Debug, Clone)]
pub struct WaitFor {
    kind: Kind,
    timeout: Duration,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// A connect to this unix socket (a host path) succeeds.
    Unix(PathBuf),
    /// A log line matches (`times` lines, counted from the container's first line).
    Log {
        pattern: Regex,
        stream: Option<Stream>,
        times: usize,
    },
    /// A command exec'd in the container exits 0.
    Exec(Vec<String>),
    /// An HTTP GET answers 2xx.
    Http { addr: SocketAddr, path: String },
    /// The image's HEALTHCHECK command exits 0.
    Health,
    /// A fixed delay (as a last resort).
    Delay(Duration),
}

impl WaitFor {
    fn new(kind: Kind) -> WaitFor {
        WaitFor {
            kind,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Until a TCP connect to `addr` succeeds (the container's address, or a published port).
    pub fn tcp(addr: SocketAddr) -> WaitFor {
        WaitFor::new(Kind::Tcp(addr))
    }
    /// Until a connect to the unix socket `path` (on the host: in a directory bound into the
    /// container) succeeds.
    pub fn unix_socket(path: impl Into<PathBuf>) -> WaitFor {
        WaitFor::new(Kind::Unix(path.into()))
    }
    /// Until a line of stdout or stderr matches the regular expression `pattern` (counting from
    /// the container's first line). The container must keep logs
    /// ([`molde_container::ContainerBuilder::logs`]; the harness's containers do).
    pub fn log(pattern: &str) -> Result<WaitFor, ReadyError> {
        let pattern = Regex::new(pattern).map_err(|source| ReadyError::Pattern {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(WaitFor::new(Kind::Log {
            pattern,
            stream: None,
            times: 1,
        }))
    }
    /// Only lines of `stream` count (for a [`WaitFor::log`] condition).
    pub fn on(mut self, only: Stream) -> WaitFor {
        if let Kind::Log { stream, .. } = &mut self.kind {
            *stream = Some(only);
        }
        self
    }
    /// `n` matching lines are needed (for a [`WaitFor::log`] condition; e.g. a server that
    /// restarts once after its first start).
    pub fn times(mut self, n: usize) -> WaitFor {
        if let Kind::Log { times, .. } = &mut self.kind {
            *times = n.max(1);
        }
        self
    }
    /// Until `argv` exec'd in the container exits 0 (e.g. `pg_isready`).
    pub fn exec<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> WaitFor {
        WaitFor::new(Kind::Exec(argv.into_iter().map(Into::into).collect()))
    }
    /// Until `GET path` at `addr` answers with a 2xx status.
    pub fn http(addr: SocketAddr, path: impl Into<String>) -> WaitFor {
        WaitFor::new(Kind::Http {
            addr,
            path: path.into(),
        })
    }
    /// Until the image's own HEALTHCHECK command (Docker's `config.Healthcheck`) exits 0.
    pub fn healthcheck() -> WaitFor {
        WaitFor::new(Kind::Health)
    }
    /// A fixed delay: what testcontainers users write when nothing better exists. Prefer a
    /// condition.
    pub fn delay(d: Duration) -> WaitFor {
        WaitFor::new(Kind::Delay(d))
    }
    /// How long this condition may take (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> WaitFor {
        self.timeout = timeout;
        self
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Tcp(a) => write!(f, "a TCP connect to {a}"),
            Kind::Unix(p) => write!(f, "a connect to the unix socket {}", p.display()),
            Kind::Log {
                pattern,
                stream,
                times,
            } => {
                write!(f, "a log line matching /{pattern}/")?;
                if let Some(s) = stream {
                    write!(f, " on {s}")?;
                }
                if *times > 1 {
                    write!(f, " ({times} times)")?;
                }
                Ok(())
            }
            Kind::Exec(argv) => write!(f, "`{}` to exit 0", argv.join(" ")),
            Kind::Http { addr, path } => write!(f, "GET http://{addr}{path} to answer 2xx"),
            Kind::Health => f.write_str("the image's HEALTHCHECK to pass"),
            Kind::Delay(d) => write!(f, "a delay of {d:?}"),
        }
    }
}

/// The last log lines of a container, shown one per line.
#[derive(Debug, Clone, Default)]
pub struct LastLines(pub Vec<LogLine>);

impl fmt::Display for LastLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(no log lines)");
        }
        write!(f, "last {} log lines:", self.0.len())?;
        for l in &self.0 {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// Why a container did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// A condition did not hold in its time.
    #[error("container {id} not ready: waited {timeout:?} for {what}; {lines}")]
    TimedOut {
        /// The container.
        id: String,
        /// The condition.
        what: String,
        /// Its timeout.
        timeout: Duration,
        /// Its last log lines.
        lines: LastLines,
    },
    /// The container exited while a condition was awaited.
    #[error("container {id} {status} while waiting for {what}; {lines}")]
    Exited {
        /// The container.
        id: String,
        /// The condition.
        what: String,
        /// How it ended.
        status: Status,
        /// Its last log lines.
        lines: LastLines,
    },
    /// A log condition's pattern is not a valid regular expression.
    #[error("readiness pattern /{pattern}/: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The parser's complaint.
        #[source]
        source: regex::Error,
    },
    /// The image has no HEALTHCHECK (or `NONE`), or one molde cannot read.
    #[error("image {image} has no usable HEALTHCHECK ({reason}): wait for another condition")]
    NoHealthcheck {
        /// The image id.
        image: String,
        /// What is missing.
        reason: String,
    },
    /// The container could not be checked or exec'd into.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Its logs could not be read (a log condition needs a container made with
    /// `ContainerBuilder::logs`).
    #[error(transparent)]
    Logs(#[from] LogError),
}

/// One attempt at a condition: whether it holds now.
type Check = Box<dyn FnMut(&mut Container) -> Result<bool, ReadyError>>;

/// Wait until every condition holds, in order (each within its own timeout); stop at once
/// with [`ReadyError::Exited`] if the container's process ends. Returns how long it took.
pub fn wait(container: &mut Container, conditions: &[WaitFor]) -> Result<Duration, ReadyError> {
    let began = Instant::now();
    for c in conditions {
        wait_one(container, c)?;
    }
    Ok(began.elapsed())
}

fn wait_one(container: &mut Container, c: &WaitFor) -> Result<(), ReadyError> {
    let until = Instant::now() + c.timeout;
    let (interval, mut check) = poller(container, c)?;
    let mut pause = Duration::from_millis(1);
    loop {
        if check(container)? {
            return Ok(());
        }
        let status = container.status()?;
        if !matches!(status, Status::Running) {
            // One last look: what it wrote before it ended may match.
            if check(container)? {
                return Ok(());
            }
            return Err(ReadyError::Exited {
                id: container.id().to_owned(),
                what: c.to_string(),
                status,
                lines: last_lines(container),
            });
        }
        let now = Instant::now();
        if now >= until {
            return Err(ReadyError::TimedOut {
                id: container.id().to_owned(),
                what: c.to_string(),
                timeout: c.timeout,
                lines: last_lines(container),
            });
        }
        std::thread::sleep(pause.min(until - now));
        pause = (pause * 2).min(interval);
    }
}

/// The check of a condition and how often it may run.
fn poller(container: &Container, c: &WaitFor) -> Result<(Duration, Check), ReadyError> {
    let ms = Duration::from_millis;
    Ok(match &c.kind {
        Kind::Tcp(addr) => {
            let addr = *addr;
            (ms(2), (Box::new(move |_| Ok(probe::tcp(addr)))))
        }
        Kind::Unix(path) => {
            let path = path.clone();
            (ms(2), (Box::new(move |_| Ok(probe::unix(&path)))))
        }
        Kind::Log {
            pattern,
            stream,
            times,
        } => {
            let mut follower = container.follow_logs()?;
            let (pattern, stream, times) = (pattern.clone(), *stream, *times);
            let mut seen = 0;
            let check = move |_: &mut Container| {
                seen += log_matches(&mut follower, &pattern, stream)?;
                Ok(seen >= times)
            };
            (ms(2), (Box::new(check)))
        }
        Kind::Exec(argv) => {
            let argv = argv.clone();
            (ms(10), (Box::new(move |c| probe::exec(c, &argv))))
        }
        Kind::Http { addr, path } => {
            let (addr, path) = (*addr, path.clone());
            (ms(5), (Box::new(move |_| Ok(probe::http(addr, &path)))))
        }
        Kind::Health => {
            let argv = healthcheck(container)?;
            (ms(10), (Box::new(move |c| probe::exec(c, &argv))))
        }
        Kind::Delay(d) => {
            let until = Instant::now() + *d;
            (ms(5), (Box::new(move |_| Ok(Instant::now() >= until))))
        }
    })
}

/// How many of the lines available now match.
fn log_matches(
    follower: &mut LogFollower,
    pattern: &Regex,
    stream: Option<Stream>,
) -> Result<usize, ReadyError> {
    let mut n = 0;
    while let Some(line) = follower.try_next()? {
        if stream.is_none_or(|s| s == line.stream) && pattern.is_match(&line.text()) {
            n += 1;
        }
    }
    Ok(n)
}

fn last_lines(container: &Container) -> LastLines {
    LastLines(container.log_tail(ERROR_LINES).unwrap_or_default())
}
