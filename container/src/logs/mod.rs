//! A container's logs: its stdout and stderr kept in the store, bounded and rotated, read back
//! whole ([`read`]), as a tail ([`tail`]) or followed live ([`LogFollower`]).
//!
//! ```text
//! <store>/molde/containers/<id>/log      the current file
//! <store>/molde/containers/<id>/log.1    the one before (log.2 older still, up to LogConfig::files)
//! ```
//!
//! Both streams go through pipes to a pump thread of the process that started the container
//! ([`pump`]), which writes one record per line, in the order they arrived:
//!
//! ```text
//! oF 1733600000.123456789 a whole line of stdout
//! eP 1733600000.223456789 the start of a stderr line that had no newline (yet)
//! x- 1733600000.323456789                     (the end of a run: both pipes closed)
//! ```
//!
//! Lines are split on `\n`; a line without one is written as a *partial* record when 16 KiB of
//! it have gathered, when no more came for 100 ms, or at the end. When a file would pass
//! [`LogConfig::max_bytes`] it is renamed `log.1` (and `log.1` to `log.2`, ...; the oldest
//! beyond [`LogConfig::files`] is dropped) and a new `log` begun.

mod follow;
pub(crate) mod pump;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use follow::LogFollower;

/// How much of a container's output is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The size at which a log file is rotated (bytes, records included).
    pub max_bytes: u64,
    /// How many files are kept, the current one included (at least 1: then the current file is
    /// emptied when full).
    pub files: u32,
}

impl Default for LogConfig {
    /// 4 MiB per file, two files.
    fn default() -> Self {
        LogConfig {
            max_bytes: 4 << 20,
            files: 2,
        }
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The stream it came from.
    pub stream: Stream,
    /// When the pump read it.
    pub time: SystemTime,
    /// Its bytes, without the newline.
    pub bytes: Vec<u8>,
    /// Whether it ended without a newline (the rest, if any, comes as further lines).
    pub partial: bool,
}

impl LogLine {
    /// The text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

impl fmt::Display for LogLine {
    /// `stdout: the text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stream, self.text())
    }
}

/// Why logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A log file could not be read.
    #[error("reading the container log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The container keeps no logs: it was made without [`crate::ContainerBuilder::logs`].
    #[error("container {id} keeps no logs (make it with ContainerBuilder::logs)")]
    NotLogged {
        /// The container.
        id: String,
    },
}

/// A record as parsed: a line, or the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Line(LogLine),
    End,
}

/// The log file `n` of a container directory (0: the current one).
pub(crate) fn file(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join("log")
    } else {
        dir.join(format!("log.{n}"))
    }
}

/// Parse one record (without its newline); `None` for a line that is not one.
pub(crate) fn parse(rec: &[u8]) -> Option<Record> {
    let (&kind, rest) = rec.split_first()?;
    let (&flag, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (time, text) = (&rest[..space], &rest[space + 1..]);
    let time = std::str::from_utf8(time).ok()?;
    let (secs, nanos) = time.split_once('.')?;
    let time = UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    let stream = match kind {
        b'o' => Stream::Stdout,
        b'e' => Stream::Stderr,
        b'x' => return Some(Record::End),
        _ => return None,
    };
    Some(Record::Line(LogLine {
        stream,
        time,
        bytes: text.to_vec(),
        partial: flag == b'P',
    }))
}

/// Append the record of a line (or the end of a run, `line` `None`) to `out`.
pub(crate) fn format(out: &mut Vec<u8>, stream: Option<Stream>, partial: bool, text: &[u8]) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let kind = match stream {
        Some(Stream::Stdout) => 'o',
        Some(Stream::Stderr) => 'e',
        None => 'x',
    };
    let flag = match (stream, partial) {
        (None, _) => '-',
        (_, true) => 'P',
        (_, false) => 'F',
    };
    use std::io::Write;
    let _ = write!(out, "{kind}{flag} {}.{:09} ", t.as_secs(), t.subsec_nanos());
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Every line kept in the container directory `dir`, oldest first.
pub fn read(dir: &Path) -> Result<Vec<LogLine>, LogError> {
    let mut lines = Vec::new();
    let mut files: Vec<u32> = (1..64).take_while(|&n| file(dir, n).exists()).collect();
    files.reverse();
    files.push(0);
    for n in files {
        let path = file(dir, n);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogError::Io { path, source }),
        };
        for rec in BufReader::new(f).split(b'\n') {
            let rec = rec.map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?;
            if let Some(Record::Line(l)) = parse(&rec) {
                lines.push(l);
            }
        }
    }
    Ok(lines)
}

/// The last `n` lines kept in the container directory `dir`.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<LogLine>, LogError> {
    let mut lines = read(dir)?;
    let cut = lines.len().saturating_sub(n);
    Ok(lines.split_off(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        format(&mut out, Some(Stream::Stderr), true, b"a b  c");
        format(&mut out, None, false, b"");
        let mut recs = out.split(|&b| b == b'\n');
        match parse(recs.next().unwrap()) {
            Some(Record::Line(l)) => {
                assert_eq!(l.stream, Stream::Stderr);
                assert!(l.partial);
                assert_eq!(l.bytes, b"a b  c");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(recs.next().unwrap()), Some(Record::End));
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b""), None);
    }
}
