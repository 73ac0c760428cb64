//! The container's terminal, made in the child after `clone` with raw syscalls (runc's and
//! crun's way): the pseudo-terminal is opened through the container's own devpts instance
//! (`/dev/pts/ptmx`), so that its slave is one of the container's `/dev/pts/N`, belongs to
//! the container's user namespace and is owned by the container's user; the window size is
//! set before the program runs; the master goes to the parent over the error channel
//! (`SCM_RIGHTS`) and is closed in the child. The slave becomes stdin, stdout and stderr,
//! `/dev/console` is bound to it (a container's first process), and right before `execve`
//! the process makes a session of its own (`setsid`) with the slave as its controlling
//! terminal (`TIOCSCTTY`).

use std::os::fd::{FromRawFd, OwnedFd};

use super::error::Stage;
use super::failure::{REPORT_LEN, fail};
use super::sys::{self, Sys};

/// The index of the stage-0 report that carries the terminal's master (the other stage-0
/// reports, a handshake's hello and an init's "forked", carry index 0).
pub(crate) const MASTER_REPORT: u32 = 1;

/// What the child needs to make the terminal, prepared before `clone`.
#[derive(Debug)]
pub(crate) struct ConsoleSetup {
    /// The window size, set before the program runs.
    pub size: libc::winsize,
    /// Bind `/dev/console` to the terminal (a container's first process; an exec'd one finds
    /// it made).
    pub bind_console: bool,
}

/// `ioctl(fd, request, arg)`.
fn ioctl(fd: i32, request: libc::c_ulong, arg: usize) -> Sys {
    // SAFETY: `arg` is an integer or a pointer to a live value of the type `request` expects.
    sys::check(unsafe { libc::syscall(libc::SYS_ioctl, fd, request, arg) })
}

/// Open the terminal in the container's devpts, send the master to the parent and return the
/// slave (close-on-exec; the caller makes it the standard streams). The slave is owned by
/// `uid`/`gid`, as runc does for a container's stdio. In the child after `clone`: raw
/// syscalls only. Fails the launch at [`Stage::Terminal`] (index: the step).
pub(crate) fn open(err_w: i32, c: &ConsoleSetup, uid: u32, gid: u32) -> i32 {
    macro_rules! at {
        ($index:expr, $call:expr) => {
            match $call {
                Ok(v) => v,
                Err(errno) => fail(err_w, Stage::Terminal, errno, $index),
            }
        };
    }
    // SAFETY: a valid NUL-terminated path.
    let master = at!(
        0,
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/dev/pts/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })
    ) as i32;
    let unlock: libc::c_int = 0;
    at!(
        1,
        ioctl(
            master,
            libc::TIOCSPTLCK,
            &unlock as *const libc::c_int as usize
        )
    );
    at!(
        2,
        ioctl(
            master,
            libc::TIOCSWINSZ,
            &c.size as *const libc::winsize as usize
        )
    );
    // The slave through the master (not by path: nothing in between can swap it).
    let slave = at!(
        3,
        ioctl(
            master,
            libc::TIOCGPTPEER,
            (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as usize
        )
    ) as i32;
    // SAFETY: plain integer arguments.
    at!(
        4,
        sys::check(unsafe { libc::syscall(libc::SYS_fchown, slave, uid, gid) })
    );
    if c.bind_console {
        let mut number: libc::c_uint = 0;
        at!(
            5,
            ioctl(
                master,
                libc::TIOCGPTN,
                &mut number as *mut libc::c_uint as usize
            )
        );
        let mut path = [0u8; 32];
        let len = pts_path(number, &mut path);
        let path = at!(
            5,
            std::ffi::CStr::from_bytes_with_nul(&path[..len]).map_err(|_| libc::EINVAL)
        );
        at!(5, sys::touch(c"/dev/console", 0o600));
        at!(
            5,
            sys::mount(Some(path), c"/dev/console", None, libc::MS_BIND, None)
        );
    }
    at!(6, send_fd(err_w, master));
    sys::close(master);
    slave
}

/// `/dev/pts/<number>` and its NUL into `buf`; the length with the NUL.
fn pts_path(number: u32, buf: &mut [u8; 32]) -> usize {
    const PREFIX: &[u8] = b"/dev/pts/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = number;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        buf[PREFIX.len() + i] = digits[count - 1 - i];
    }
    buf[PREFIX.len() + count] = 0;
    PREFIX.len() + count + 1
}

/// Send `fd` to the parent as the terminal's report (stage 0, [`MASTER_REPORT`]) with
/// `SCM_RIGHTS`. Stack buffers only.
fn send_fd(err_w: i32, fd: i32) -> Sys {
    let mut report = [0u8; REPORT_LEN];
    report[8..12].copy_from_slice(&MASTER_REPORT.to_ne_bytes());
    // CMSG_SPACE of one int, 8-byte aligned.
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: report.as_mut_ptr().cast(),
        iov_len: REPORT_LEN,
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    // SAFETY: the control buffer holds one header and one int (msg_controllen says so).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    }
    // SAFETY: `msg` describes valid buffers living across the call.
    let n = sys::check(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            err_w,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL,
        )
    })?;
    if n as usize == REPORT_LEN {
        Ok(n)
    } else {
        Err(libc::EPIPE)
    }
}

/// Right before `execve`: a session of the process's own, the terminal on stdin its
/// controlling terminal (the shell's job control, and Ctrl-C reaching only its foreground
/// job, rest on it).
pub(crate) fn take_control(err_w: i32) {
    // SAFETY: no arguments.
    if let Err(e) = sys::check(unsafe { libc::syscall(libc::SYS_setsid) }) {
        fail(err_w, Stage::Terminal, e, 7);
    }
    if let Err(e) = ioctl(0, libc::TIOCSCTTY, 0) {
        fail(err_w, Stage::Terminal, e, 8);
    }
}

/// What each step's index names, for the parent's error.
pub(crate) fn step_name(index: u32) -> &'static str {
    match index {
        0 => "/dev/pts/ptmx",
        1 => "unlocking the terminal (TIOCSPTLCK)",
        2 => "setting the window size (TIOCSWINSZ)",
        3 => "opening the terminal's slave (TIOCGPTPEER)",
        4 => "handing the terminal to the container's user (fchown)",
        5 => "/dev/console",
        6 => "sending the terminal to the host (SCM_RIGHTS)",
        7 => "setsid",
        _ => "making it the controlling terminal (TIOCSCTTY)",
    }
}

/// Take the descriptors an `SCM_RIGHTS` message brought (the parent's side), as owned.
///
/// # Safety
///
/// `msg` was filled by `recvmsg`, and its descriptors are owned by nothing else.
pub(crate) unsafe fn received_fds(msg: &libc::msghdr, out: &mut Vec<OwnedFd>) {
    // SAFETY: the CMSG macros stay within msg_controllen of a buffer recvmsg filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<i32>() {
                    let fd = std::ptr::read_unaligned(data.cast::<i32>().add(i));
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pts_paths() {
        let mut buf = [0u8; 32];
        for (n, text) in [
            (0, "/dev/pts/0"),
            (7, "/dev/pts/7"),
            (4096, "/dev/pts/4096"),
        ] {
            let len = pts_path(n, &mut buf);
            assert_eq!(&buf[..len - 1], text.as_bytes());
            assert_eq!(buf[len - 1], 0);
        }
        let len = pts_path(u32::MAX, &mut buf);
        assert_eq!(&buf[..len - 1], b"/dev/pts/4294967295");
    }
}
