//! The parent's side of a launch: `clone` (on the launcher thread), id maps, cgroups, the
//! go-ahead, and reading the child's report from the error channel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::mpsc;

use nix::errno::Errno;

use super::child::{self, Prepared, REPORT_LEN};
use super::error::{LaunchError, Stage};
use super::prepare::{self, ParentSide, io_errno};
use super::process::Process;
use super::spec::{IdMap, Network, Spec};

type Job = Box<dyn FnOnce() + Send>;

/// The thread every `clone` happens on. `PR_SET_PDEATHSIG` fires when the *thread* that made
/// the child ends, so children must not be made on short-lived threads (a tokio blocking pool
/// retires idle threads): this one lives as long as the process. Made at the first launch (a
/// failure to make it is that launch's error, and the next launch tries again).
static LAUNCHER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Run `job` on the launcher thread.
fn on_launcher(job: Job) -> Result<(), LaunchError> {
    let mut launcher = LAUNCHER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tx = match launcher.as_ref() {
        Some(tx) => tx,
        None => {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("molde-launcher".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .map_err(|e| LaunchError::new(Stage::Clone, io_errno(&e)))?;
            launcher.insert(tx)
        }
    };
    if tx.send(job).is_err() {
        // The thread is gone: the next launch makes a new one.
        *launcher = None;
        return Err(LaunchError::new(Stage::Clone, Errno::EAGAIN));
    }
    Ok(())
}

/// The raw pointer to the prepared data, moved to the launcher thread while the caller waits.
struct SendPtr(*mut Prepared);
// SAFETY: the caller blocks until the job has run, so the pointee outlives its use there, and
// nothing else touches it meanwhile.
unsafe impl Send for SendPtr {}

/// `clone3` (or `clone`) with `flags | CLONE_PIDFD` on the launcher thread; the child runs
/// [`child::main`]. Returns the pid and the pidfd.
pub(crate) fn clone_child(
    prepared: &mut Prepared,
    flags: u64,
) -> Result<(u32, OwnedFd), LaunchError> {
    let ptr = SendPtr(prepared);
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let ptr = ptr;
        // SAFETY: see SendPtr.
        let prepared = unsafe { &mut *ptr.0 };
        let _ = tx.send(raw_clone(prepared, flags));
    });
    on_launcher(job)?;
    let (pid, pidfd) = rx
        .recv()
        .map_err(|_| LaunchError::new(Stage::Clone, Errno::EAGAIN))??;
    // SAFETY: CLONE_PIDFD gave us a new pidfd that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// `struct clone_args` of `clone3(2)`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn raw_clone(prepared: &mut Prepared, flags: u64) -> Result<(u32, i32), LaunchError> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: fork-like clone3 (no stack given): the child continues on a copy of this stack
    // and never returns from child::main.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 && Errno::last() == Errno::ENOSYS {
        // SAFETY: fork-like clone; with CLONE_PIDFD the pidfd is stored at the parent_tid
        // argument.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::CLONE_PIDFD as u64 | libc::SIGCHLD as u64) as libc::c_ulong,
                0usize,
                &mut pidfd as *mut libc::c_int,
                0usize,
                0usize,
            )
        };
    }
    match ret {
        0 => child::main(prepared),
        r if r < 0 => Err(LaunchError::new(Stage::Clone, Errno::last())),
        pid => Ok((pid as u32, pidfd)),
    }
}

/// One report from the error channel: `None` at EOF (the exec happened).
pub(crate) fn read_report(err_r: &OwnedFd) -> Result<Option<Report>, LaunchError> {
    Ok(read_report_from(err_r)?.map(|(report, _)| report))
}

/// A child's report: (stage, errno, index); stage 0 is not an error.
pub(crate) type Report = (u32, i32, u32);

/// One report from the error channel and the host pid of its sender (from `SCM_CREDENTIALS`,
/// which the kernel attaches because the parent's end has `SO_PASSCRED`): `None` at EOF.
pub(crate) fn read_report_from(
    err_r: &OwnedFd,
) -> Result<Option<(Report, Option<u32>)>, LaunchError> {
    let mut buf = [0u8; REPORT_LEN];
    let mut got = 0;
    let mut sender = None;
    while got < REPORT_LEN {
        // Room for one SCM_CREDENTIALS message (CMSG_SPACE of a ucred, 8-byte aligned).
        let mut control = [0u64; 8];
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
        Stage::MaskPaths => child::MASKED
            .get(index)
            .map(|c| c.to_string_lossy().into_owned().into()),
        Stage::ReadonlyPaths => child::READ_ONLY
            .get(index)
            .map(|c| c.to_string_lossy().into_owned().into()),
        _ => None,
    };
    LaunchError { stage, errno, path }
}

fn map_lines(map: &[IdMap]) -> String {
    map.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

/// Start a container's first process as `spec` says. Returns once the program has been
/// exec'd (or the init has started it), or with the setup step that failed.
pub fn spawn(spec: &Spec) -> Result<Process, LaunchError> {
    let (mut prepared, mut side) = prepare::spawn(spec)?;
    let mut flags = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP) as u64;
    if spec.network == Network::Isolated {
        flags |= libc::CLONE_NEWNET as u64;
    }
    if spec.user_namespace.is_some() {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    let (pid, pidfd) = clone_child(&mut prepared, flags)?;
    drop(prepared);
    side.child_ends.clear();
    // From here on a failure must not leave the child behind: Process's Drop kills and reaps.
    let mut process = Process::new(
        pid,
        pidfd,
        side.stdin.take(),
        side.stdout.take(),
        side.stderr.take(),
    );
    let released = release(spec, pid, &side);
    if let Err(e) = released {
        return Err(abandon(&mut process, e));
    }
    // With init, the program (init's child) first reports that it forked (stage 0); the
    // credentials of that report give its host pid, the process an exec joins (the init is not
    // dumpable, so an unprivileged caller cannot open its namespaces).
    loop {
        match read_report_from(&side.err_r) {
            Ok(Some(((0, _, _), sender))) if spec.init => match sender {
                Some(program) => process.set_program_pid(program),
                None => {
                    let e = LaunchError::new(Stage::InitFork, Errno::ESRCH);
                    return Err(abandon(&mut process, e));
                }
            },
            other => {
                conclude(
                    &mut process,
                    &side,
                    other.map(|got| got.map(|(report, _)| report)),
                )?;
                return Ok(process);
            }
        }
    }
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

/// Kill and reap `process`, whose launch failed with `e`; returns `e`.
pub(crate) fn abandon(process: &mut Process, e: LaunchError) -> LaunchError {
    let _ = process.kill();
    let _ = process.wait();
    e
}

/// Write the id maps and cgroup membership, then let the child go.
fn release(spec: &Spec, pid: u32, side: &ParentSide) -> Result<(), LaunchError> {
    if let Some(maps) = &spec.user_namespace {
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        let write = |name: &str, content: &str, stage: Stage| {
            std::fs::write(proc_dir.join(name), content)
                .map_err(|e| LaunchError::at(stage, io_errno(&e), proc_dir.join(name)))
        };
        write("uid_map", &map_lines(&maps.uid_map), Stage::UidMap)?;
        if !molde_layerfs::privilege::is_privileged() {
            write("setgroups", "deny", Stage::GidMap)?;
        }
        write("gid_map", &map_lines(&maps.gid_map), Stage::GidMap)?;
    }
    let pid_text = pid.to_string();
    for fd in &spec.cgroup_procs {
        nix::unistd::write(fd, pid_text.as_bytes())
            .map_err(|e| LaunchError::new(Stage::Cgroup, e))?;
    }
    nix::unistd::write(&side.sync_w, b"g").map_err(|e| LaunchError::new(Stage::Sync, e))?;
    let _ = side.sync_w.as_raw_fd();
    Ok(())
}
