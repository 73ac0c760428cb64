//! What this process may do: root in the initial user namespace, or not.
//!
//! The differences between running as root and rootless are injected into apply, diff and mount
//! as options built here, not tested for all over the code.

use std::sync::atomic::{AtomicU64, Ordering};

/// The answer of [`in_initial_user_namespace`] for one process: `pid << 1 | answer`, 0 when not
/// asked yet (no process has pid 0).
static IN_INITIAL: AtomicU64 = AtomicU64::new(0);

/// Whether this process is in the initial user namespace (its uid map is the identity map of
/// the whole range).
///
/// Read from `/proc/self/uid_map` once per process: a process cannot change its user
/// namespace once it has a second thread (`unshare` and `setns` of a user namespace refuse a
/// multi-threaded caller), and a forked child (another pid) reads it again. A single-threaded
/// program that enters another user namespace itself after asking gets the answer of the one
/// it asked in.
pub fn in_initial_user_namespace() -> bool {
    let pid = u64::from(std::process::id());
    let cached = IN_INITIAL.load(Ordering::Relaxed);
    if cached != 0 && cached >> 1 == pid {
        return cached & 1 == 1;
    }
    let answer = read_in_initial_user_namespace();
    IN_INITIAL.store(pid << 1 | u64::from(answer), Ordering::Relaxed);
    answer
}

fn read_in_initial_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether this process can create device nodes and set any owner: it is root in the initial
/// user namespace.
pub fn is_privileged() -> bool {
    nix::unistd::geteuid().is_root() && in_initial_user_namespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_answer_is_the_uid_map_s() {
        let first = in_initial_user_namespace();
        assert_eq!(first, read_in_initial_user_namespace());
        assert_eq!(in_initial_user_namespace(), first, "cached");
        let cached = IN_INITIAL.load(Ordering::Relaxed);
        assert_eq!(cached >> 1, u64::from(std::process::id()));
    }

    /// A forked child that enters a new user namespace asks again: the answer is cached per
    /// process, not inherited.
    #[test]
    fn a_forked_child_asks_again() {
        if !is_privileged() {
            assert!(
                std::env::var_os("MOLDE_REQUIRE_ALL").is_none_or(|v| v != "1"),
                "MOLDE_REQUIRE_ALL=1 and this test cannot run: needs root in the initial user \
                 namespace"
            );
            eprintln!("skipping: needs root in the initial user namespace");
            return;
        }
        assert!(in_initial_user_namespace());
        // SAFETY: the child only makes system calls and reads a file, then `_exit`s; glibc's
        // allocator stays usable after fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                    Ok(()) if !in_initial_user_namespace() => 0,
                    Ok(()) => 1,
                    Err(_) => 2,
                };
                // SAFETY: ends the child at once, without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        assert!(in_initial_user_namespace(), "the parent's answer stands");
    }
}
