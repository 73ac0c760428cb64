//! Progress of a pull or push, as events ([`Progress`]) sent to a callback, and
//! [`ProgressDisplay`], which draws them as `docker pull` does: one line per layer,
//! rewritten in place on a terminal.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use molde_image::layerfs::Digest;

/// The state of one layer (or the config) of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// Queued behind other transfers.
    Waiting,
    /// The store has it (same blob, or the same content under another compression).
    AlreadyExists,
    /// Bytes received so far, of the total (the descriptor's size).
    Downloading {
        /// Bytes received.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// All bytes in; checking the digest.
    Verifying,
    /// Unpacking into the store's layer directory.
    Extracting,
    /// Stored, verified and unpacked.
    PullComplete,
    /// The registry has it already (push).
    LayerAlreadyExists,
    /// Mounted from another repository of the registry (push).
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Bytes sent so far, of the total (push).
    Pushing {
        /// Bytes sent.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Uploaded (push).
    Pushed,
}

impl fmt::Display for LayerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerStatus::Waiting => f.write_str("Waiting"),
            LayerStatus::AlreadyExists => f.write_str("Already exists"),
            LayerStatus::Downloading { done, total } => {
                write!(f, "Downloading {}", bar(*done, *total))
            }
            LayerStatus::Verifying => f.write_str("Verifying Checksum"),
            LayerStatus::Extracting => f.write_str("Extracting"),
            LayerStatus::PullComplete => f.write_str("Pull complete"),
            LayerStatus::LayerAlreadyExists => f.write_str("Layer already exists"),
            LayerStatus::Mounted { from } => write!(f, "Mounted from {from}"),
            LayerStatus::Pushing { done, total } => write!(f, "Pushing {}", bar(*done, *total)),
            LayerStatus::Pushed => f.write_str("Pushed"),
        }
    }
}

fn bar(done: u64, total: u64) -> String {
    let width = 40u64;
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    let arrow = if filled < width { ">" } else { "" };
    format!(
        "[{}{arrow}{}] {}/{}",
        "=".repeat(filled as usize),
        " ".repeat((width - filled).saturating_sub(arrow.len() as u64) as usize),
        human(done),
        human(total)
    )
}

/// Bytes as docker prints them (`1.23MB`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u])
    }
}

/// One event of a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Looking the reference up (`Pulling from library/alpine`).
    Resolving {
        /// The reference, in familiar form.
        reference: String,
    },
    /// A layer (by its blob digest) changed state.
    Layer {
        /// Its position in the image, bottom first.
        index: usize,
        /// The blob's digest.
        digest: Digest,
        /// Its new state.
        status: LayerStatus,
    },
    /// The end of a push: `latest: digest: sha256:... size: 528`.
    Pushed {
        /// The tag pushed.
        tag: String,
        /// The manifest's digest.
        digest: Digest,
        /// The manifest's size.
        size: u64,
    },
    /// The end of a pull: the digest (of the manifest or index as the registry serves it)
    /// and a status line (`Downloaded newer image for alpine:latest`, `Image is up to date
    /// for ...`).
    Done {
        /// The digest.
        digest: Digest,
        /// The status line.
        status: String,
    },
}

/// Where events go: a callback shared by the transfer's tasks.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Draws events as `docker pull` does. On a terminal each layer keeps its line, rewritten in
/// place; otherwise a line is printed per change of state (not per byte).
///
/// ```
/// use molde_registry::{LayerStatus, Progress, ProgressDisplay};
/// use molde_image::layerfs::Digest;
///
/// let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
/// let display = ProgressDisplay::to_writer(out.clone(), false);
/// let digest = Digest::of(b"layer");
/// display.show(&Progress::Layer { index: 0, digest, status: LayerStatus::AlreadyExists });
/// let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
/// assert_eq!(text, format!("{}: Already exists\n", &digest.hex()[..12]));
/// ```
pub struct ProgressDisplay {
    state: Mutex<DisplayState>,
}

struct DisplayState {
    out: Box<dyn Write + Send>,
    live: bool,
    lines: BTreeMap<usize, (Digest, LayerStatus)>,
    drawn: usize,
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ProgressDisplay {
    /// To standard output, live when it is a terminal.
    pub fn stdout() -> ProgressDisplay {
        use std::io::IsTerminal;
        let live = std::io::stdout().is_terminal();
        ProgressDisplay::new(Box::new(std::io::stdout()), live)
    }

    /// Into a shared buffer (for tests and logs); `live` draws with cursor movements.
    pub fn to_writer(buf: Arc<Mutex<Vec<u8>>>, live: bool) -> ProgressDisplay {
        ProgressDisplay::new(Box::new(Shared(buf)), live)
    }

    fn new(out: Box<dyn Write + Send>, live: bool) -> ProgressDisplay {
        ProgressDisplay {
            state: Mutex::new(DisplayState {
                out,
                live,
                lines: BTreeMap::new(),
                drawn: 0,
            }),
        }
    }

    /// A callback for [`crate::Pull::progress`] or [`crate::Push::progress`] that draws
    /// here.
    pub fn callback(self: &Arc<Self>) -> ProgressFn {
        let me = Arc::clone(self);
        Arc::new(move |p| me.show(p))
    }

    /// Draw one event. Output errors are ignored (progress is advisory).
    pub fn show(&self, p: &Progress) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let _ = s.show(p);
    }
}

impl DisplayState {
    fn show(&mut self, p: &Progress) -> std::io::Result<()> {
        match p {
            Progress::Resolving { reference } => {
                writeln!(self.out, "Pulling {reference}")?;
            }
            Progress::Layer {
                index,
                digest,
                status,
            } => {
                let changed = self.lines.get(index).is_none_or(|(_, old)| {
                    std::mem::discriminant(old) != std::mem::discriminant(status)
                });
                self.lines.insert(*index, (*digest, status.clone()));
                if self.live {
                    self.redraw()?;
                } else if changed {
                    writeln!(self.out, "{}: {status}", &digest.hex()[..12])?;
                }
            }
            Progress::Pushed { tag, digest, size } => {
                if self.live {
                    self.redraw()?;
                }
                writeln!(self.out, "{tag}: digest: {digest} size: {size}")?;
                self.lines.clear();
                self.drawn = 0;
            }
            Progress::Done { digest, status } => {
                if self.live {
                    self.redraw()?;
                }
                writeln!(self.out, "Digest: {digest}\nStatus: {status}")?;
                self.lines.clear();
                self.drawn = 0;
            }
        }
        self.out.flush()
    }

    fn redraw(&mut self) -> std::io::Result<()> {
        if self.drawn > 0 {
            write!(self.out, "\x1b[{}A", self.drawn)?;
        }
        for (digest, status) in self.lines.values() {
            writeln!(self.out, "\x1b[2K{}: {status}", &digest.hex()[..12])?;
        }
        self.drawn = self.lines.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_234_567), "1.235MB");
        let s = LayerStatus::Downloading {
            done: 50,
            total: 100,
        }
        .to_string();
        assert!(s.starts_with("Downloading [====="), "{s}");
        assert!(s.ends_with("50B/100B"), "{s}");
    }

    #[test]
    fn live_display_rewrites_lines_in_place() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let d = ProgressDisplay::to_writer(buf.clone(), true);
        let a = Digest::of(b"a");
        for status in [
            LayerStatus::Waiting,
            LayerStatus::Downloading { done: 1, total: 2 },
            LayerStatus::PullComplete,
        ] {
            d.show(&Progress::Layer {
                index: 0,
                digest: a,
                status,
            });
        }
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("\x1b[1A").count(), 2, "{text:?}");
        assert!(text.ends_with("Pull complete\n"));
    }
}
