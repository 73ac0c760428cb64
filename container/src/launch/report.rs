//! The parent's side of the error channel: the child's reports (stage, errno, index) with the
//! sender's pid and any descriptor they bring (the terminal's master), turned into typed
//! [`LaunchError`]s, and the end of a launch.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

use super::child;
use super::console;
use super::error::{LaunchError, Stage};
use super::failure::REPORT_LEN;
use super::prepare::ParentSide;
use super::process::Process;

/// A child's report: (stage, errno, index); stage 0 is not an error.
pub(crate) type Report = (u32, i32, u32);

/// One report from the error channel and the host pid of its sender (from `SCM_CREDENTIALS`,
/// which the kernel attaches because the parent's end has `SO_PASSCRED`): `None` at EOF.
pub(crate) fn read_report_from(
    err_r: &OwnedFd,
) -> Result<Option<(Report, Option<u32>)>, LaunchError> {
    read_report_with_fds(err_r, &mut Vec::new())
}

/// The next report that is not the one carrying the terminal's master; a master met on the
/// way (the first only: a second one is closed) goes to `terminal`.
pub(crate) fn next_report(
    err_r: &OwnedFd,
    terminal: &mut Option<OwnedFd>,
) -> Result<Option<(Report, Option<u32>)>, LaunchError> {
    loop {
        let mut fds = Vec::new();
        let got = read_report_with_fds(err_r, &mut fds)?;
        match got {
            Some(((0, 0, console::MASTER_REPORT), _)) if fds.len() == 1 && terminal.is_none() => {
                *terminal = fds.pop();
            }
            other => return Ok(other),
        }
    }
}

/// [`read_report_from`], keeping the descriptors the report brought (`SCM_RIGHTS`) in `fds`.
fn read_report_with_fds(
    err_r: &OwnedFd,
    fds: &mut Vec<OwnedFd>,
) -> Result<Option<(Report, Option<u32>)>, LaunchError> {
    let mut buf = [0u8; REPORT_LEN];
    let mut got = 0;
    let mut sender = None;
    while got < REPORT_LEN {
        // Room for one SCM_CREDENTIALS message (CMSG_SPACE of a ucred, 8-byte aligned) and
        // one SCM_RIGHTS of a descriptor or two.
        let mut control = [0u64; 12];
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: REPORT_LEN - got,
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` describes valid buffers living across the call.
        let n = unsafe { libc::recvmsg(err_r.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let errno = Errno::last();
            if errno == Errno::EINTR {
                continue;
            }
            return Err(LaunchError::new(Stage::Sync, errno));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
        // SAFETY: `msg` was filled by recvmsg; its descriptors are new and ours.
        unsafe { console::received_fds(&msg, fds) };
        // SAFETY: `msg` was filled by recvmsg; the CMSG macros stay within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::ucred);
                    if sender.is_none() && cred.pid > 0 {
                        sender = Some(cred.pid as u32);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < REPORT_LEN {
        return Err(LaunchError::new(Stage::Sync, Errno::EPIPE));
    }
    let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
    Ok(Some((
        (
            u32::from_ne_bytes(word(0)),
            i32::from_ne_bytes(word(4)),
            u32::from_ne_bytes(word(8)),
        ),
        sender,
    )))
}

/// The typed error for a child's report, naming the path where the index tells one.
pub(crate) fn report_error(side: &ParentSide, stage: u32, errno: i32, index: u32) -> LaunchError {
    let stage = Stage::from_code(stage).unwrap_or(Stage::Sync);
    let errno = Errno::from_raw(errno);
    let index = index as usize;
    let path = match stage {
        Stage::Exec => side.candidates.get(index).cloned(),
        Stage::RootfsMount => side.rootfs_targets.get(index).cloned(),
        Stage::Mount => side.extra_targets.get(index).cloned(),
        Stage::Proc => Some("/proc".into()),
        Stage::Sys => Some("/sys".into()),
        Stage::Terminal => Some(console::step_name(index as u32).into()),
        Stage::MaskPaths => child::MASKED
            .get(index)
            .map(|c| c.to_string_lossy().into_owned().into()),
        Stage::ReadonlyPaths => child::READ_ONLY
            .get(index)
            .map(|c| c.to_string_lossy().into_owned().into()),
        _ => None,
    };
    let mut e = LaunchError::new(stage, errno);
    e.path = path;
    e
}

/// The end of a launch (spawn or exec), from the child's next report on the error channel:
/// EOF (`None`) means the program was exec'd; a report is the typed error of the step that
/// failed (the child exits by itself: it is reaped); a failure to read kills and reaps it.
pub(crate) fn conclude(
    process: &mut Process,
    side: &ParentSide,
    report: Result<Option<Report>, LaunchError>,
) -> Result<(), LaunchError> {
    match report {
        Ok(None) => Ok(()),
        Ok(Some((stage, errno, index))) => {
            let _ = process.wait();
            Err(report_error(side, stage, errno, index))
        }
        Err(e) => Err(abandon(process, e)),
    }
}

/// Give `process` the terminal's master its launch sent, if it asked for a terminal (a
/// launch that asked and got none is killed: `Stage::Terminal`, `EPROTO`).
pub(crate) fn with_terminal(
    process: &mut Process,
    asked: bool,
    master: Option<OwnedFd>,
) -> Result<(), LaunchError> {
    match (asked, master) {
        (true, Some(fd)) => {
            process.set_terminal(super::Terminal::new(fd));
            Ok(())
        }
        (true, None) => Err(abandon(
            process,
            LaunchError::new(Stage::Terminal, Errno::EPROTO),
        )),
        (false, _) => Ok(()),
    }
}

/// Kill and reap `process`, whose launch failed with `e`; returns `e`.
pub(crate) fn abandon(process: &mut Process, e: LaunchError) -> LaunchError {
    let _ = process.kill();
    let _ = process.wait();
    e
}
