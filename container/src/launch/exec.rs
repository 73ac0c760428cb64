//! Exec a further process into a running container: join its namespaces through a pidfd
//! (`setns(pidfd, flags)`, one atomic step, the user namespace first where there is one), its
//! root, then fork so that the process lands in its pid namespace.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;

use super::child::Enter;
use super::error::{LaunchError, Stage};
use super::pidfd;
use super::prepare::{self, io_errno};
use super::process::Process;
use super::report::{conclude, next_report, report_error, with_terminal};
use super::spawn::clone_child;
use super::spec::ExecSpec;

/// Namespaces to join, by the name of their `/proc/<pid>/ns` file.
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
];

/// Run `spec` inside the running container whose PID 1 has the host pid `target_pid`.
pub fn exec(target_pid: u32, spec: &ExecSpec) -> Result<Process, LaunchError> {
    let proc_dir = std::path::PathBuf::from(format!("/proc/{target_pid}"));
    let target_pidfd =
        pidfd::open(target_pid).map_err(|e| LaunchError::at(Stage::Setns, e, &proc_dir))?;
    let mut ns_flags = 0;
    let mut joins_user = false;
    for (name, flag) in NAMESPACES {
        let theirs = std::fs::metadata(proc_dir.join("ns").join(name)).map_err(|e| {
            LaunchError::at(Stage::Setns, io_errno(&e), proc_dir.join("ns").join(name))
        })?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).map_err(|e| {
            LaunchError::at(Stage::Setns, io_errno(&e), format!("/proc/self/ns/{name}"))
        })?;
        if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
            ns_flags |= flag;
            joins_user |= flag == libc::CLONE_NEWUSER;
        }
    }
    let root_fd = nix::fcntl::open(
        &proc_dir.join("root"),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| LaunchError::at(Stage::Setns, e, proc_dir.join("root")))?;
    // Against pid reuse: if the pid still names the process that started at `target_start`,
    // that process held it since before the pidfd was opened and `/proc/<pid>` was read.
    if let Some(start) = spec.target_start
        && !matches!(crate::record::pid_info(target_pid), Some((s, false)) if s == start)
    {
        return Err(LaunchError::at(Stage::Setns, Errno::ESRCH, &proc_dir));
    }
    let setgroups_denied = joins_user
        && std::fs::read_to_string(proc_dir.join("setgroups")).is_ok_and(|s| s.trim() == "deny");
    if setgroups_denied && !spec.groups.is_empty() {
        return Err(LaunchError::new(Stage::Setgroups, Errno::EPERM));
    }

    let run = prepare::Run {
        stdio: [&spec.stdin, &spec.stdout, &spec.stderr],
        program: &spec.program,
        arg0: spec.arg0.as_deref(),
        args: &spec.args,
        env: &spec.env,
        path_dirs: &spec.path_dirs,
        capabilities: &spec.capabilities,
        ambient_capabilities: &spec.ambient_capabilities,
        new_userns: joins_user,
        cwd: &spec.cwd,
        uid: spec.uid,
        gid: spec.gid,
        groups: &spec.groups,
        setgroups_denied,
        no_new_privs: spec.no_new_privs,
        seccomp: &spec.seccomp,
        landlock: spec.landlock.as_ref(),
        init: false,
        terminal: spec.terminal,
    };
    let enter = Enter {
        pidfd: target_pidfd.as_raw_fd(),
        ns_flags,
        root_fd: root_fd.as_raw_fd(),
        cgroup_procs: spec.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect(),
    };
    let (mut prepared, mut side) = prepare::common(run, |_| Ok((None, Some(enter))))?;

    let child_ends = std::mem::take(&mut side.child_ends);
    // SAFETY: `cloning` is finished at once, before `prepared` goes.
    let cloning = unsafe { clone_child(&mut prepared, 0, child_ends, side.sync_w.take())? };
    // Made fork-style (no handshake: nothing to write for it): `clone` returned at once. The
    // intermediate: reaped whatever happens.
    let (_, intermediate_fd) = cloning.finish()?;
    drop(prepared);
    let mut intermediate = Process::new(0, intermediate_fd, None, None, None);
    // The process's terminal (its master) may come before or after the intermediate's report.
    let mut terminal = None;
    let first = next_report(&side.err_r, &mut terminal);
    let _ = intermediate.wait();
    let pid = match first?.map(|(report, _)| report) {
        Some((0, pid, _)) => pid as u32,
        Some((stage, errno, index)) => {
            let e = report_error(&side, stage, errno, index);
            // The process (our child, by CLONE_PARENT) may fail and report before the
            // intermediate reports its pid: that report comes next. Reap the process, or its
            // zombie stays in the container's pid namespace and the container's init can
            // never finish exiting (seen under load: a wait on the container hung).
            if let Ok(Some(((0, pid, _), _))) = next_report(&side.err_r, &mut terminal) {
                reap(pid as libc::pid_t);
            }
            return Err(e);
        }
        None => return Err(LaunchError::new(Stage::InitFork, Errno::ECHILD)),
    };
    // The process is our child (CLONE_PARENT), so its pid stays its own until we reap it.
    let pidfd = pidfd::open(pid).map_err(|e| LaunchError::new(Stage::Setns, e))?;
    let mut process = Process::new(
        pid,
        pidfd,
        side.stdin.take(),
        side.stdout.take(),
        side.stderr.take(),
    );
    let report = next_report(&side.err_r, &mut terminal).map(|r| r.map(|(report, _)| report));
    conclude(&mut process, &side, report)?;
    with_terminal(&mut process, spec.terminal.is_some(), terminal)?;
    Ok(process)
}

/// Kill and reap `pid`, a child of this process that nothing else will reap (its pid stays
/// its own until then, so the signal cannot reach another process).
fn reap(pid: libc::pid_t) {
    // SAFETY: plain system calls on our own unreaped child; `status` is a local out-param.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, libc::__WALL) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
    }
}
