//! A child forked without exec from a process busy launching containers can launch its own
//! (issue 11): it never waits on a lock that a thread of its parent (the launcher thread, the
//! namespace makers) held at the fork, nor on a launcher thread it does not have.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use molde_container::launch::{self, ExitStatus, Spec};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Forks made while the parent launches.
const FORKS: usize = 40;

/// In the forked child: launch `true` and `exit 3`, and exit 0 only if both ended as asked.
fn child_launches(root: &std::path::Path) -> i32 {
    let ok = |spec: &Spec, want: ExitStatus| {
        launch::spawn(spec).ok().and_then(|mut p| p.wait().ok()) == Some(want)
    };
    let mut t = common::busybox::spec(root, "true");
    t.stdout = launch::Stdio::Null;
    let e = common::busybox::sh(root, "exit 3");
    if ok(&t, ExitStatus::Exited(0)) && ok(&e, ExitStatus::Exited(3)) {
        0
    } else {
        1
    }
}

#[test]
fn a_forked_child_launches_while_its_parent_does() {
    let Some(root) = common::busybox::ready_rootless_too(&[]) else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Keep the launcher thread and the namespace makers busy, taking their locks often.
    let busy = {
        let stop = stop.clone();
        let root = root.path().to_owned();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut p = launch::spawn(&common::busybox::spec(&root, "true")).unwrap();
                assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
                n += 1;
            }
            n
        })
    };
    for i in 0..FORKS {
        std::thread::sleep(Duration::from_millis(3 + (i % 7) as u64));
        // SAFETY: the child only launches (prepared before its own clone, as in any process),
        // then leaves with _exit, running no destructor of its parent's state.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = child_launches(root.path());
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => {
                let end = Instant::now() + Duration::from_secs(30);
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        WaitStatus::StillAlive => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            let _ = waitpid(child, None);
                            panic!("fork {i}: the forked child hung launching");
                        }
                        other => break other,
                    }
                };
                assert_eq!(
                    status,
                    WaitStatus::Exited(child, 0),
                    "fork {i}: the forked child's launches"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let launched = busy.join().unwrap();
    assert!(launched > 0);
}
