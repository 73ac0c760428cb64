//! [`LogFollower`]: a container's log from the first line kept, then live as lines come, until
//! the container has ended and everything it wrote has been read.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{LogError, LogLine, Record, file, parse};

/// How often the follower looks for more at the end of the log.
const POLL: Duration = Duration::from_millis(5);
/// How long after the container's end the follower waits for the pump's end-of-run record
/// (a pump whose process was killed never writes it).
const GRACE: Duration = Duration::from_millis(250);

/// Follows a container's log, like `docker logs --follow`: every line kept, oldest first, then
/// new lines as the container writes them; the end comes once the container has ended and its
/// output is all read. Rotation while following is seen (the file being read is read to its
/// end before the new one).
///
/// As an [`Iterator`] it blocks (polling every few ms); [`LogFollower::try_next`] never blocks.
pub struct LogFollower {
    dir: PathBuf,
    running: Box<dyn FnMut() -> bool + Send>,
    /// Files still to read, oldest first; the last is the current `log` (with its inode).
    files: VecDeque<(File, u64)>,
    /// Bytes of a record not yet ended by its newline.
    partial: Vec<u8>,
    /// Lines parsed, not yet returned.
    queue: VecDeque<LogLine>,
    /// Whether the last record read ended a run.
    run_ended: bool,
    /// Since when the container is seen ended with nothing more to read.
    ended_at: Option<Instant>,
    done: bool,
}

impl std::fmt::Debug for LogFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFollower")
            .field("dir", &self.dir)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl LogFollower {
    /// Follow the log of the container directory `dir`; `running` says whether the container
    /// still runs (then more may come).
    pub(crate) fn new(
        dir: PathBuf,
        running: impl FnMut() -> bool + Send + 'static,
    ) -> Result<LogFollower, LogError> {
        let mut files = VecDeque::new();
        let mut older: Vec<u32> = (1..64).take_while(|&n| file(&dir, n).exists()).collect();
        older.reverse();
        older.push(0);
        for n in older {
            let path = file(&dir, n);
            match File::open(&path) {
                Ok(f) => {
                    let ino = f
                        .metadata()
                        .map_err(|source| LogError::Io {
                            path: path.clone(),
                            source,
                        })?
                        .ino();
                    files.push_back((f, ino));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LogError::Io { path, source }),
            }
        }
        Ok(LogFollower {
            dir,
            running: Box::new(running),
            files,
            partial: Vec::new(),
            queue: VecDeque::new(),
            run_ended: false,
            ended_at: None,
            done: false,
        })
    }

    /// Whether the end has been reached (the container ended and its output is all read).
    pub fn is_finished(&self) -> bool {
        self.done && self.queue.is_empty()
    }

    /// The next line if one is there now, without waiting; `Ok(None)` when none is (see
    /// [`LogFollower::is_finished`] for whether more can come).
    pub fn try_next(&mut self) -> Result<Option<LogLine>, LogError> {
        if self.queue.is_empty() && !self.done {
            self.fill()?;
        }
        Ok(self.queue.pop_front())
    }

    /// The next line, waiting at most `timeout` for it; `Ok(None)` at the end or when the time
    /// is up.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LogLine>, LogError> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(line) = self.try_next()? {
                return Ok(Some(line));
            }
            let now = Instant::now();
            if self.done || now >= until {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(until - now));
        }
    }

    /// Read what the files have now into the queue; at their end, note the rotation or the
    /// container's end.
    fn fill(&mut self) -> Result<(), LogError> {
        let mut buf = [0u8; 16 << 10];
        loop {
            let Some((f, _)) = self.files.front_mut() else {
                // No file yet (never started): the current one may appear.
                if !self.reopen()? {
                    self.check_end();
                    return Ok(());
                }
                continue;
            };
            let n = f.read(&mut buf).map_err(|source| LogError::Io {
                path: file(&self.dir, 0),
                source,
            })?;
            if n > 0 {
                self.parse(&buf[..n]);
                if !self.queue.is_empty() {
                    return Ok(());
                }
                continue;
            }
            if self.files.len() > 1 {
                self.files.pop_front();
                continue;
            }
            // At the end of the current file: was it rotated?
            if self.reopen()? {
                continue;
            }
            self.check_end();
            return Ok(());
        }
    }

    /// Open `log` if it is not the file being read (it appeared, or the one being read was
    /// rotated); whether it did.
    fn reopen(&mut self) -> Result<bool, LogError> {
        let path = file(&self.dir, 0);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(LogError::Io { path, source }),
        };
        let ino = f
            .metadata()
            .map_err(|source| LogError::Io {
                path: path.clone(),
                source,
            })?
            .ino();
        if self.files.back().is_some_and(|(_, i)| *i == ino) {
            return Ok(false);
        }
        self.files.push_back((f, ino));
        Ok(true)
    }

    fn check_end(&mut self) {
        if (self.running)() {
            self.ended_at = None;
            return;
        }
        let since = *self.ended_at.get_or_insert_with(Instant::now);
        if self.run_ended || since.elapsed() >= GRACE {
            self.done = true;
        }
    }

    fn parse(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|&b| b == b'\n') {
            match parse(&self.partial[start..start + nl]) {
                Some(Record::Line(l)) => {
                    self.run_ended = false;
                    self.queue.push_back(l);
                }
                Some(Record::End) => self.run_ended = true,
                None => {}
            }
            start += nl + 1;
        }
        self.partial.drain(..start);
    }
}

impl Iterator for LogFollower {
    type Item = Result<LogLine, LogError>;

    /// The next line, waiting for it as long as the container runs.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(line)) => return Some(Ok(line)),
                Ok(None) if self.done => return None,
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
