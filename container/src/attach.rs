//! [`attach`]: this program's own terminal joined to a container's [`Terminal`], as `docker run
//! -it` and `docker attach` do.
//!
//! With a terminal on this program's stdin, it is put in raw mode (every key goes to the
//! container: Ctrl-C is a byte there, not a signal here) and restored on every way out: the
//! container's end, an error, a panic (a guard restores it while unwinding), and `SIGTERM`,
//! `SIGINT` or `SIGHUP` sent to this program (caught while attached: [`Attached::Signal`]
//! says which, and the caller decides what to do next, e.g. remove the container and exit).
//! The window size is copied at the start and at every `SIGWINCH`. Docker's detach keys,
//! Ctrl-P Ctrl-Q, leave the container running ([`Attached::Detached`]).
//!
//! Without a terminal on stdin (a pipe, a file), the streams are copied as they are: no raw
//! mode, no window size; the end of stdin is passed on as the terminal's end-of-file
//! character (Ctrl-D).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{self, SetArg, Termios};

use crate::launch::Terminal;

/// How an [`attach`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The container's side closed the terminal (its processes on it ended): wait for the
    /// container for its status.
    Ended,
    /// The detach keys (Ctrl-P Ctrl-Q) were typed: the container runs on.
    Detached,
    /// This program was sent this signal (`SIGTERM`, `SIGINT` or `SIGHUP`) while attached;
    /// the terminal is restored.
    Signal(Signal),
}

/// Why [`attach`] failed (the host terminal is restored all the same).
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Another `attach` of this process is running: there is one terminal.
    #[error("another attach is running in this process: one terminal, one attach at a time")]
    Busy,
    /// Setting up or using this program's terminal, its signals or the copying failed.
    #[error("attach: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> AttachError {
    move |source| AttachError::Io { op, source }
}

fn errno_err(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> AttachError {
    move |e| AttachError::Io {
        op,
        source: e.into(),
    }
}

/// Ctrl-P, Ctrl-Q: Docker's detach keys.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];
/// Ctrl-D: the end-of-file character of a terminal in its default modes.
const EOF_CHAR: u8 = 0x04;
/// How long the container may stay quiet after piped input ended before its end-of-file
/// character is sent again (see `pump`).
const EOF_AGAIN_MS: u16 = 250;
/// The signals caught while attached.
const CAUGHT: [Signal; 4] = [
    Signal::SIGWINCH,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// One attach at a time per process (one terminal, one set of signal handlers).
static ATTACHED: Mutex<()> = Mutex::new(());
/// The write end of the running attach's signal pipe (-1: none).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Write the signal's number to the pipe: async-signal-safe (one `write`, errno kept).
extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno location of this thread, read and written back around the write.
        let saved = unsafe { *libc::__errno_location() };
        let byte = sig as u8;
        // SAFETY: a one-byte buffer living across the call; a full pipe drops the byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved };
    }
}

/// The signal handlers of an attach, and the dispositions they replaced (put back on drop).
struct Handlers {
    old: Vec<(Signal, SigAction)>,
    pipe_r: std::os::fd::OwnedFd,
    _pipe_w: std::os::fd::OwnedFd,
}

impl Handlers {
    fn install() -> Result<Handlers, AttachError> {
        let (pipe_r, pipe_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(errno_err("making the signal pipe"))?;
        SIGNAL_PIPE.store(pipe_w.as_raw_fd(), Ordering::Relaxed);
        let mut handlers = Handlers {
            old: Vec::new(),
            pipe_r,
            _pipe_w: pipe_w,
        };
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in CAUGHT {
            // SAFETY: the handler only loads an atomic and calls write(2): async-signal-safe.
            let old = unsafe { sigaction(sig, &action) }.map_err(errno_err("catching signals"))?;
            handlers.old.push((sig, old));
        }
        Ok(handlers)
    }

    /// The signals caught since the last call.
    fn drain(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(n @ 1..) = nix::unistd::read(&self.pipe_r, &mut buf) {
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as i32).ok()),
            );
        }
        out
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..).rev() {
            // SAFETY: putting back the disposition that was there before.
            let _ = unsafe { sigaction(sig, &old) };
        }
        SIGNAL_PIPE.store(-1, Ordering::Relaxed);
    }
}

/// This program's terminal in raw mode; its modes as they were are put back on drop (also
/// while unwinding from a panic).
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Result<RawMode<'a>, AttachError> {
        let saved = termios::tcgetattr(fd).map_err(errno_err("reading the terminal's modes"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw)
            .map_err(errno_err("putting the terminal in raw mode"))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copy this program's window size (of the terminal on `fd`) to the container's.
fn copy_size(fd: RawFd, to: &Terminal) {
    // SAFETY: an all-zero winsize is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `size` is a valid winsize the kernel fills.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 {
        let _ = to.resize(size.ws_row, size.ws_col);
    }
}

/// Join this program's stdin and stdout to the container's terminal until the container's
/// side ends, the detach keys are typed or this program gets `SIGTERM`, `SIGINT` or `SIGHUP`
/// (see the [module](self) for the rest). One attach runs at a time in a process.
///
/// ```no_run
/// use molde_container::{Container, attach::{attach, Attached}};
/// # fn f(store: &molde_image::Store, image: &molde_image::Image) -> Result<(), Box<dyn std::error::Error>> {
/// let mut c = Container::builder(store, image).command("/bin/sh").tty(true).start()?;
/// let terminal = c.take_terminal().expect("made with tty");
/// match attach(&terminal)? {
///     Attached::Ended => println!("{}", c.wait()?),
///     Attached::Detached => { c.keep(); }
///     Attached::Signal(sig) => eprintln!("{sig}: removing the container"),
/// }
/// # Ok(()) }
/// ```
pub fn attach(terminal: &Terminal) -> Result<Attached, AttachError> {
    let Ok(_one) = ATTACHED.try_lock() else {
        return Err(AttachError::Busy);
    };
    let stdin = io::stdin();
    let stdout = io::stdout();
    let input = stdin.as_fd();
    let is_tty = nix::unistd::isatty(input).unwrap_or(false);
    let handlers = Handlers::install()?;
    let raw = if is_tty {
        copy_size(input.as_raw_fd(), terminal);
        Some(RawMode::enter(input)?)
    } else {
        None
    };
    let ended = pump(terminal, input, &mut stdout.lock(), &handlers, is_tty);
    drop(raw);
    drop(handlers);
    ended
}

/// The copying loop of [`attach`].
fn pump(
    terminal: &Terminal,
    input: BorrowedFd<'_>,
    output: &mut impl Write,
    handlers: &Handlers,
    is_tty: bool,
) -> Result<Attached, AttachError> {
    let mut buf = [0u8; 8192];
    let mut input_open = true;
    // A Ctrl-P typed last, held back until the next key says whether it detaches.
    let mut held = false;
    loop {
        let mut fds = vec![
            PollFd::new(terminal.as_fd(), PollFlags::POLLIN),
            PollFd::new(handlers.pipe_r.as_fd(), PollFlags::POLLIN),
        ];
        if input_open {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        // Once piped input has ended, its end-of-file character is sent again whenever the
        // container is quiet for a while: a shell that turns its line editing on after the
        // character arrived (canonical input switched to raw) loses it, and would wait for
        // input forever. Every read after the end of a pipe gets end-of-file; so here.
        let timeout = if input_open {
            PollTimeout::NONE
        } else {
            PollTimeout::from(EOF_AGAIN_MS)
        };
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(errno_err("waiting for input")(e)),
            Ok(0) => {
                (&*terminal)
                    .write_all(&[EOF_CHAR])
                    .map_err(io_err("writing to the container's terminal"))?;
                continue;
            }
            Ok(_) => {}
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let (from_container, signalled, from_input) = (ready(0), ready(1), ready(2));
        if signalled {
            for sig in handlers.drain() {
                if sig == Signal::SIGWINCH {
                    if is_tty {
                        copy_size(input.as_raw_fd(), terminal);
                    }
                } else {
                    return Ok(Attached::Signal(sig));
                }
            }
        }
        if from_container {
            let n = (&*terminal)
                .read(&mut buf)
                .map_err(io_err("reading the container's terminal"))?;
            if n == 0 {
                return Ok(Attached::Ended);
            }
            output
                .write_all(&buf[..n])
                .and_then(|()| output.flush())
                .map_err(io_err("writing to this program's output"))?;
        }
        if from_input {
            let n = match nix::unistd::read(input, &mut buf) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(errno_err("reading this program's input")(e)),
            };
            if n == 0 {
                // The end of a piped input: the terminal's end-of-file character.
                input_open = false;
                (&*terminal)
                    .write_all(&[EOF_CHAR])
                    .map_err(io_err("writing to the container's terminal"))?;
                continue;
            }
            let (keys, detach) = detach_filter(&buf[..n], &mut held);
            (&*terminal)
                .write_all(&keys)
                .map_err(io_err("writing to the container's terminal"))?;
            if detach {
                return Ok(Attached::Detached);
            }
        }
    }
}

/// The keys to pass on from `input`, and whether the detach keys were typed (what follows
/// them is dropped). `held`: a Ctrl-P ended the previous input, not passed on yet.
fn detach_filter(input: &[u8], held: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len() + 1);
    for &b in input {
        if *held {
            *held = false;
            if b == DETACH_KEYS[1] {
                return (out, true);
            }
            out.push(DETACH_KEYS[0]);
        }
        if b == DETACH_KEYS[0] {
            *held = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_ctrl_p_ctrl_q_even_across_reads() {
        let mut held = false;
        assert_eq!(detach_filter(b"ls\r", &mut held), (b"ls\r".to_vec(), false));
        assert_eq!(
            detach_filter(b"a\x10\x11b", &mut held),
            (b"a".to_vec(), true)
        );
        held = false;
        assert_eq!(detach_filter(b"x\x10", &mut held), (b"x".to_vec(), false));
        assert!(held);
        assert_eq!(detach_filter(b"\x11", &mut held), (Vec::new(), true));
        held = false;
        // Ctrl-P followed by anything else is passed on, in order.
        assert_eq!(
            detach_filter(b"\x10z", &mut held),
            (b"\x10z".to_vec(), false)
        );
        assert_eq!(
            detach_filter(b"\x10\x10\x11", &mut held),
            (b"\x10".to_vec(), true)
        );
    }
}
