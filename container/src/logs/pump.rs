//! The pump: a thread that reads a container's stdout and stderr pipes and writes them, line
//! by line, into its log files, rotating them. It ends when both pipes are closed (every
//! process of the container that held them has ended), after writing an end-of-run record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{LogConfig, Stream, file, format};

/// A line without a newline is written as a partial record when this much has gathered.
const MAX_LINE: usize = 16 << 10;
/// ... or when nothing more came for this long.
const PARTIAL_AFTER_MS: u16 = 100;

/// A running pump; [`Pump::wait`] for its end.
#[derive(Debug)]
pub(crate) struct Pump {
    done: mpsc::Receiver<()>,
    finished: bool,
}

impl Pump {
    /// Wait up to `timeout` for the pump to have written everything; whether it has.
    pub(crate) fn wait(&mut self, timeout: Duration) -> bool {
        if !self.finished {
            self.finished = !matches!(
                self.done.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
        }
        self.finished
    }
}

/// The write ends to hand to the container (stdout, stderr) and the pump reading the other
/// ends into the log files of container directory `dir`.
pub(crate) fn start(dir: PathBuf, config: LogConfig) -> io::Result<(OwnedFd, OwnedFd, Pump)> {
    let flags = nix::fcntl::OFlag::O_CLOEXEC;
    let (out_r, out_w) = nix::unistd::pipe2(flags)?;
    let (err_r, err_w) = nix::unistd::pipe2(flags)?;
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer::open(dir, config)?;
    std::thread::Builder::new()
        .name("molde-logs".into())
        .spawn(move || {
            run(&mut writer, [File::from(out_r), File::from(err_r)]);
            let _ = tx.send(());
        })?;
    Ok((
        out_w,
        err_w,
        Pump {
            done: rx,
            finished: false,
        },
    ))
}

/// The log files being written.
struct Writer {
    dir: PathBuf,
    config: LogConfig,
    file: File,
    size: u64,
}

impl Writer {
    fn open(dir: PathBuf, config: LogConfig) -> io::Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file(&dir, 0))?;
        let size = file.metadata()?.len();
        Ok(Writer {
            dir,
            config,
            file,
            size,
        })
    }

    /// Append `records` (whole records), rotating first if they would pass the limit.
    fn write(&mut self, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        if self.size > 0 && self.size + records.len() as u64 > self.config.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::warn!("rotating the log in {}: {e}", self.dir.display());
            }
        }
        match self.file.write_all(records) {
            Ok(()) => self.size += records.len() as u64,
            Err(e) => tracing::warn!("writing the log in {}: {e}", self.dir.display()),
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.config.files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.config.files).rev() {
            match fs::rename(file(&self.dir, n - 1), file(&self.dir, n)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        *self = Writer::open(self.dir.clone(), self.config)?;
        Ok(())
    }
}

/// One stream's pipe and the line it has begun.
struct Source {
    pipe: Option<File>,
    stream: Stream,
    pending: Vec<u8>,
}

impl Source {
    /// Move the complete lines of `pending` (and, if `all`, the rest as a partial line) into
    /// `out` as records.
    fn drain(&mut self, out: &mut Vec<u8>, all: bool) {
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            format(
                out,
                Some(self.stream),
                false,
                &self.pending[start..start + nl],
            );
            start += nl + 1;
        }
        while self.pending.len() - start >= MAX_LINE {
            format(
                out,
                Some(self.stream),
                true,
                &self.pending[start..start + MAX_LINE],
            );
            start += MAX_LINE;
        }
        if all && start < self.pending.len() {
            format(out, Some(self.stream), true, &self.pending[start..]);
            start = self.pending.len();
        }
        self.pending.drain(..start);
    }
}

fn run(writer: &mut Writer, pipes: [File; 2]) {
    let [out, err] = pipes;
    let mut sources = [
        Source {
            pipe: Some(out),
            stream: Stream::Stdout,
            pending: Vec::new(),
        },
        Source {
            pipe: Some(err),
            stream: Stream::Stderr,
            pending: Vec::new(),
        },
    ];
    let mut buf = vec![0u8; 64 << 10];
    let mut records = Vec::new();
    while sources.iter().any(|s| s.pipe.is_some()) {
        let waiting = sources.iter().any(|s| !s.pending.is_empty());
        let timeout = if waiting {
            PollTimeout::from(PARTIAL_AFTER_MS)
        } else {
            PollTimeout::NONE
        };
        let ready: Vec<bool> = {
            let open: Vec<&File> = sources.iter().filter_map(|s| s.pipe.as_ref()).collect();
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => fds.iter().map(|p| p.any().unwrap_or(false)).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("polling a container's output: {e}");
                    return;
                }
            }
        };
        if !ready.iter().any(|&r| r) {
            // Quiet for a while: what has gathered is shown as partial lines.
            for s in &mut sources {
                s.drain(&mut records, true);
            }
        }
        let mut ready = ready.into_iter();
        for s in sources.iter_mut().filter(|s| s.pipe.is_some()) {
            if !ready.next().unwrap_or(false) {
                continue;
            }
            let pipe = s.pipe.as_mut().expect("filtered on an open pipe");
            match pipe.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    s.pipe = None;
                    s.drain(&mut records, true);
                }
                Ok(n) => {
                    s.pending.extend_from_slice(&buf[..n]);
                    s.drain(&mut records, false);
                }
            }
        }
        writer.write(&records);
        records.clear();
    }
    format(&mut records, None, false, b"");
    writer.write(&records);
}
