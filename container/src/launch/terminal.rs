//! [`Terminal`]: the host's end (the master) of a container process's pseudo-terminal, and
//! its [`WindowSize`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A terminal's window size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows (lines).
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for WindowSize {
    /// 24 rows of 80 columns, a VT100's.
    fn default() -> WindowSize {
        WindowSize { rows: 24, cols: 80 }
    }
}

impl WindowSize {
    pub(crate) fn to_winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// The host's end of a container process's terminal (given with
/// [`Spec::terminal`](super::Spec::terminal)): what the process writes to its stdout and
/// stderr is read here, what is written here is its input, as typed on a keyboard (`\x03` is
/// Ctrl-C, `\x04` Ctrl-D at the start of a line...). The line discipline inside the container
/// echoes and edits lines unless the program puts the terminal in raw mode.
///
/// Reading gives end of file (`Ok(0)`) once no process holds the terminal's other end any more
/// (the kernel says `EIO`, which here means just that). Dropping it hangs the terminal up: the
/// container's session gets `SIGHUP`.
#[derive(Debug)]
pub struct Terminal {
    master: File,
}

impl Terminal {
    pub(crate) fn new(master: OwnedFd) -> Terminal {
        Terminal {
            master: File::from(master),
        }
    }

    /// Set the window size: the container's foreground process group gets `SIGWINCH`, and
    /// `stty size` shows it.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let size = WindowSize { rows, cols }.to_winsize();
        // SAFETY: `size` is a valid winsize living across the call.
        let ret = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The current window size.
    pub fn size(&self) -> io::Result<WindowSize> {
        // SAFETY: an all-zero winsize is valid.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: `size` is a valid winsize the kernel fills.
        let ret = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(WindowSize {
            rows: size.ws_row,
            cols: size.ws_col,
        })
    }

    /// Another handle to the same terminal (for a reader and a writer on two threads).
    pub fn try_clone(&self) -> io::Result<Terminal> {
        Ok(Terminal {
            master: self.master.try_clone()?,
        })
    }
}

/// `EIO` from the master means no process holds the slave any more: the end.
fn eof_on_eio(r: io::Result<usize>) -> io::Result<usize> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
        other => other,
    }
}

impl Read for Terminal {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        eof_on_eio(self.master.read(buf))
    }
}

impl Read for &Terminal {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        eof_on_eio((&self.master).read(buf))
    }
}

impl Write for Terminal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.master.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Terminal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.master).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Terminal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

impl AsRawFd for Terminal {
    fn as_raw_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }
}

impl From<Terminal> for OwnedFd {
    fn from(t: Terminal) -> OwnedFd {
        t.master.into()
    }
}
