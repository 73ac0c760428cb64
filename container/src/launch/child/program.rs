//! The program's own setup and its exec: stdio, every other descriptor closed, the
//! credentials (`credentials`), the working directory, no_new_privs, the seccomp filters,
//! (init: fork and supervise), the terminal's session, the signal mask emptied, `execve`.

use super::{Prepared, credentials};
use crate::launch::error::Stage;
use crate::launch::failure::{fail, step};
use crate::launch::{init, sys};

/// From stdio to `execve` (see the module docs). Never returns.
pub(super) fn run(p: &Prepared) -> ! {
    for (target, &source) in p.stdio.iter().enumerate() {
        if source >= 0 {
            // SAFETY: plain integer arguments.
            step!(
                p,
                Stage::Stdio,
                target,
                sys::check(unsafe { libc::syscall(libc::SYS_dup3, source, target as i32, 0) })
            );
        }
    }
    // Every other descriptor is closed now, not merely at exec: a host directory leaked by the
    // caller without O_CLOEXEC must not serve as the working directory or in the program's
    // path (`/proc/self/fd/<n>/..`, the CVE-2024-21626 shape). Only the error channel stays; it is
    // close-on-exec and its closing tells the parent the exec happened.
    step!(p, Stage::CloseFds, 0, sys::close_all_but(p.err_w));
    credentials::bound(p);
    if !p.no_new_privs {
        // Without no_new_privs the kernel installs a filter only for a holder of
        // CAP_SYS_ADMIN: now, before the ids change (what follows is in every profile's
        // reach: setgroups, setres[ug]id, capset, prctl, chdir, execve).
        seccomp(p);
    }
    credentials::change_ids(p);
    step!(p, Stage::Chdir, 0, sys::chdir(&p.cwd));
    // The working directory must be inside the root: the kernel names one outside it
    // "(unreachable)/..." rather than "/...".
    let mut cwd = [0u8; libc::PATH_MAX as usize];
    // SAFETY: `cwd` is valid for writes of its length.
    let got = sys::check(unsafe { libc::syscall(libc::SYS_getcwd, cwd.as_mut_ptr(), cwd.len()) });
    match got {
        Ok(_) if cwd[0] == b'/' => {}
        Ok(_) => fail(p.err_w, Stage::Chdir, libc::EXDEV, 0),
        Err(e) => fail(p.err_w, Stage::Chdir, e, 0),
    }
    if p.no_new_privs {
        step!(
            p,
            Stage::NoNewPrivs,
            0,
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
        );
        seccomp(p);
    }
    if p.init {
        init::fork_and_supervise(p.err_w);
    }
    exec(p)
}

/// Install the seccomp filters, if any.
fn seccomp(p: &Prepared) {
    if let Some(programs) = &p.seccomp {
        step!(p, Stage::Seccomp, 0, crate::seccomp::install(programs));
    }
}

/// Try each candidate path in order; report the most telling error.
fn exec(p: &Prepared) -> ! {
    if p.console.is_some() {
        crate::launch::console::take_control(p.err_w);
    }
    // The program starts with no signal blocked.
    step!(p, Stage::Signals, 0, sys::sigprocmask(libc::SIG_SETMASK, 0));
    let mut report = (libc::ENOENT, 0u32);
    for (i, path) in p.candidates.iter().enumerate() {
        // SAFETY: `path`, `argv` and `envp` are NUL-terminated and NULL-terminated, prepared
        // before clone and alive in this copy of the address space.
        unsafe {
            libc::syscall(
                libc::SYS_execve,
                path.as_ptr(),
                p.argv.as_ptr(),
                p.envp.as_ptr(),
            )
        };
        let errno = sys::errno();
        match errno {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => report = (libc::EACCES, i as u32),
            other => fail(p.err_w, Stage::Exec, other, i as u32),
        }
    }
    fail(p.err_w, Stage::Exec, report.0, report.1)
}
