//! The code that runs in the child after `clone`, and the data prepared for it.
//!
//! Nothing here allocates, takes a lock or touches std's I/O: the host may be multi-threaded
//! and the child is a copy of one thread of it. Every string, pointer array and descriptor slot
//! is made before `clone` ([`Prepared`]); a failure is written to the error channel as
//! (stage, errno, index) and the child `_exit`s.
//!
//! The steps, in the order `main` runs them, live in modules named for what they do: the
//! root filesystem (`root`: the rootfs, `/proc`, `/sys`, the root switch), `/dev` (`dev`),
//! further mounts and Docker's masked and read-only paths (`mounts`), credentials and
//! capabilities (`credentials`) and the program's own setup and exec (`program`).

mod credentials;
mod dev;
mod join;
mod mounts;
mod prepared;
mod program;
mod root;

pub(crate) use dev::{DEVICE_NUMBERS, DEVICES};
pub(crate) use mounts::{MASKED, READ_ONLY};
pub(crate) use prepared::{Enter, ExtraKind, ExtraMount, Prepared, RootSetup};

use super::error::Stage;
use super::failure::{REPORT_LEN, fail, step};
use super::sys;

/// The child's whole life: set up, then exec (or become init). Never returns.
pub(crate) fn main(p: &mut Prepared) -> ! {
    sys::close(p.sync_w);
    // The launcher thread blocks every signal, so this child starts with all blocked: no host
    // handler can run here (the child may share the host's memory). Dispositions go back to
    // their defaults now; the mask is emptied right before `execve`.
    step!(p, Stage::Signals, 0, sys::default_signal_dispositions());
    step!(
        p,
        Stage::DeathSignal,
        0,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
    );
    if p.handshake {
        let hello = [0u8; REPORT_LEN];
        step!(p, Stage::Sync, 0, sys::write(p.err_w, &hello));
        // The parent writes one byte once the id maps and cgroups are in place; EOF means it
        // died or gave up.
        let mut go = [0u8; 1];
        match sys::read(p.sync_r, &mut go) {
            Ok(1) => {}
            Ok(_) => fail(p.err_w, Stage::Sync, libc::EPIPE, 0),
            Err(e) => fail(p.err_w, Stage::Sync, e, 0),
        }
    }
    sys::close(p.sync_r);
    // Not dumpable (until the program's exec makes it so again): container processes cannot
    // open this copy of the host binary, its memory or its descriptors through
    // /proc/<pid>/{exe,mem,fd} (the CVE-2019-5736 shape), nor ptrace it. After the go-ahead:
    // a non-dumpable process's /proc files belong to root, and an unprivileged parent could
    // not write the id maps. Dumpability belongs to the memory: a child sharing the host's
    // would make the host non-dumpable. Such a child is the first and only process of its new
    // pid namespace until its exec, so no container process can reach it meanwhile. (Its
    // change of ids below still makes the shared memory non-dumpable, as the kernel does for
    // any change of ids; the parent restores the host's setting when `clone` returns.)
    if !p.shares_memory {
        step!(
            p,
            Stage::DeathSignal,
            0,
            sys::prctl(libc::PR_SET_DUMPABLE, 0, 0)
        );
    }

    if let Some(enter) = &p.enter {
        enter_container(p.err_w, enter);
    }
    if let Some(root) = &mut p.root {
        root::setup_root(p.err_w, root);
    }
    if let Some(console) = &p.console {
        let slave = super::console::open(p.err_w, console, p.uid, p.gid);
        p.stdio = [slave; 3];
    }
    program::run(p)
}

/// Join a running container: cgroups, namespaces (by pidfd), its root; then fork so that the
/// process enters its pid namespace (the fork's child, made with `CLONE_PARENT`, is the
/// caller's child). The intermediate reports the new pid and exits.
fn enter_container(err_w: i32, e: &Enter) {
    for &fd in &e.cgroup_procs {
        step!(err_w, Stage::Cgroup, 0, sys::write(fd, b"0"));
    }
    // SAFETY: plain integer arguments.
    step!(
        err_w,
        Stage::Setns,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setns, e.pidfd, e.ns_flags) })
    );
    // SAFETY: plain integer argument.
    step!(
        err_w,
        Stage::Setns,
        1,
        sys::check(unsafe { libc::syscall(libc::SYS_fchdir, e.root_fd) })
    );
    // SAFETY: a valid NUL-terminated path.
    step!(
        err_w,
        Stage::Setns,
        1,
        sys::check(unsafe { libc::syscall(libc::SYS_chroot, c".".as_ptr()) })
    );
    // SAFETY: fork-like clone (no new stack): the child continues here with a copy.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        fail(err_w, Stage::InitFork, sys::errno(), 0);
    }
    if pid > 0 {
        // Tell the caller the pid (stage 0 = not an error), then leave.
        let mut buf = [0u8; REPORT_LEN];
        buf[4..8].copy_from_slice(&(pid as i32).to_ne_bytes());
        let _ = sys::write(err_w, &buf);
        sys::exit(0);
    }
    // SAFETY: plain integer arguments.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
}
