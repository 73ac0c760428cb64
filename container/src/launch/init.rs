//! The minimal init (the `init` option): PID 1 of the container forks the program, forwards
//! signals to it, reaps every zombie and exits with the program's status (`128 + signal` when a
//! signal killed it). Raw syscalls only: it runs in the child after `clone`.

use super::error::Stage;
use super::sys;

/// Signals init forwards to the program.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
];

/// Fork the program: returns in the child (which goes on to exec); the parent becomes the init
/// and never returns.
pub(crate) fn fork_and_supervise(err_w: i32) {
    // Block everything before forking so that no SIGCHLD or forwarded signal is lost.
    let old = match sys::sigprocmask(libc::SIG_SETMASK, sys::ALL_SIGNALS) {
        Ok(old) => old as u64,
        Err(e) => super::failure::fail(err_w, Stage::InitFork, e, 0),
    };
    // SAFETY: fork-like clone (no new stack): the child continues here with a copy.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        super::failure::fail(err_w, Stage::InitFork, sys::errno(), 0);
    }
    if pid == 0 {
        // The program: its own signal mask back, then exec.
        if let Err(e) = sys::sigprocmask(libc::SIG_SETMASK, old) {
            super::failure::fail(err_w, Stage::InitFork, e, 0);
        }
        // Report "forked" (stage 0): the kernel attaches this process's credentials, and the
        // parent learns its host pid, through which a later exec joins the container.
        let report = [0u8; super::failure::REPORT_LEN];
        if let Err(e) = sys::write(err_w, &report) {
            super::failure::fail(err_w, Stage::InitFork, e, 0);
        }
        return;
    }
    // The init keeps no descriptor: the program's exec (or failure) alone closes the error
    // pipe, and piped stdio ends when the program's copies close.
    // SAFETY: plain integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
    supervise(pid as libc::pid_t)
}

fn supervise(child: libc::pid_t) -> ! {
    let set: u64 = sys::ALL_SIGNALS;
    loop {
        // SAFETY: an all-zero siginfo_t is valid; the kernel fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `info` live across the call; NULL timeout waits forever.
        let sig = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set as *const u64,
                &mut info as *mut libc::siginfo_t,
                std::ptr::null::<libc::timespec>(),
                8usize,
            )
        };
        if sig < 0 {
            continue;
        }
        let sig = sig as libc::c_int;
        if sig == libc::SIGCHLD {
            reap(child);
        } else if FORWARDED.contains(&sig) {
            // SAFETY: plain integer arguments.
            unsafe { libc::syscall(libc::SYS_kill, child, sig) };
        }
    }
}

/// Reap every zombie; exit when the program is among them.
fn reap(child: libc::pid_t) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` lives across the call; NULL rusage.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_wait4,
                -1 as libc::pid_t,
                &mut status as *mut libc::c_int,
                libc::WNOHANG | libc::__WALL,
                std::ptr::null_mut::<libc::rusage>(),
            )
        };
        if pid <= 0 {
            return;
        }
        if pid as libc::pid_t == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            sys::exit(code);
        }
    }
}
