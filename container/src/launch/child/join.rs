//! Joining a user namespace made elsewhere (the store's rootless network namespace's): the
//! child was made without namespaces of its own (an unprivileged process may make none
//! outside a user namespace of its own), joins the user namespace and the network namespace
//! made in it, makes its mount, UTS, IPC, cgroup and pid namespaces there, and forks. The
//! fork's child is pid 1 of the new pid namespace and goes on with the launch; the child
//! itself stays outside as its supervisor (forwarding signals, reaping it, exiting with its
//! status: `launch::init`).

use super::RootSetup;
use crate::launch::error::Stage;
use crate::launch::failure::step;
use crate::launch::{init, sys};

/// Join `r.userns` and `r.netns`, make the other namespaces and fork (see the module docs).
/// Returns in the fork's child, pid 1 of its pid namespace.
pub(super) fn join_user_namespace(err_w: i32, r: &RootSetup) {
    let p = err_w;
    // SAFETY: plain integer arguments.
    step!(
        p,
        Stage::JoinNamespace,
        2,
        sys::check(unsafe { libc::syscall(libc::SYS_setns, r.userns, libc::CLONE_NEWUSER) })
    );
    // SAFETY: plain integer arguments.
    step!(
        p,
        Stage::JoinNamespace,
        0,
        sys::check(unsafe { libc::syscall(libc::SYS_setns, r.netns, libc::CLONE_NEWNET) })
    );
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWPID;
    // SAFETY: plain integer argument.
    step!(
        p,
        Stage::JoinNamespace,
        2,
        sys::check(unsafe { libc::syscall(libc::SYS_unshare, flags) })
    );
    init::fork_and_supervise(err_w);
    // A parent-death signal does not pass a fork: pid 1 dies with its supervisor, which the
    // caller's Process kills.
    step!(
        p,
        Stage::DeathSignal,
        0,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
    );
}
