//! logs: read back, tail or follow what a container wrote to stdout and stderr (kept when it
//! was made with [`crate::ContainerBuilder::logs`]; see [`crate::logs`]).

use std::io::Write;

use super::Container;
use crate::logs::{self, LogError, LogFollower, LogLine};
use crate::record::{self, State};

/// How many lines a container dropped during a panic prints.
const PANIC_LINES: usize = 30;

impl Container {
    fn check_logged(&self) -> Result<(), LogError> {
        if self.record.run.logs.is_none() {
            return Err(LogError::NotLogged {
                id: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Every line of its output kept so far (of every run), oldest first.
    pub fn logs(&self) -> Result<Vec<LogLine>, LogError> {
        self.check_logged()?;
        logs::read(self.paths.dir())
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> Result<Vec<LogLine>, LogError> {
        self.check_logged()?;
        logs::tail(self.paths.dir(), n)
    }

    /// Follow its output: every line kept, then new lines as they come, until the container
    /// has ended and all is read (see [`LogFollower`]). Independent of this handle: it may be
    /// moved to another thread.
    pub fn follow_logs(&self) -> Result<LogFollower, LogError> {
        self.check_logged()?;
        let paths = self.paths.clone();
        let mut rec = self.record.clone();
        LogFollower::new(self.paths.dir().to_owned(), move || {
            rec.reload_state(&paths).is_ok()
                && rec.state == State::Running
                && record::alive(rec.pid, rec.pid_start)
        })
    }

    /// Print its last log lines on stderr (for a test that panicked while it lived).
    pub(crate) fn print_last_logs(&self) {
        if self.record.run.logs.is_none() {
            return;
        }
        let Ok(lines) = logs::tail(self.paths.dir(), PANIC_LINES) else {
            return;
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "--- last {} log lines of container {} ({}) ---",
            lines.len(),
            &self.id[..12.min(self.id.len())],
            self.image.id()
        );
        for l in &lines {
            let _ = writeln!(err, "{l}");
        }
        let _ = writeln!(err, "---");
    }
}
