//! Launches made on the process's main thread, which clones the child itself (libtest would run
//! a `#[test]` on a worker thread, which hands the clone to the launcher thread): success,
//! a typed setup error, output, signal hygiene, and a launch from another thread meanwhile.

mod common;

use std::time::Duration;

use common::busybox::{ready, run, sh};
use molde_container::launch::{self, ExitStatus, Spec, Stage, Stdio};
use nix::errno::Errno;

fn main() {
    let Some(root) = ready(&[]) else { return };
    assert_eq!(
        nix::unistd::gettid(),
        nix::unistd::getpid(),
        "runs on the main thread"
    );
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    // Output and exit codes.
    let (status, out, _) = run(&sh(root.path(), "echo $$; exit 3"));
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(out, "1\n", "PID 1 of its own pid namespace");

    // A setup failure is the typed error of its stage, and the child is gone.
    let err = launch::spawn(&Spec::new(root.path(), "/no/such/program")).unwrap_err();
    assert_eq!(
        (err.stage, err.errno),
        (Stage::Exec, Errno::ENOENT),
        "{err}"
    );

    // The program starts with nothing blocked or ignored, whatever this thread's mask (and a
    // Rust program ignores SIGPIPE); the main thread's own mask is left as it was.
    let mut blocked = nix::sys::signal::SigSet::empty();
    blocked.add(nix::sys::signal::Signal::SIGUSR1);
    blocked.thread_block().unwrap();
    let mut spec = Spec::new(root.path(), "cat");
    spec.args = vec!["/proc/self/status".into()];
    spec.stdout = Stdio::Piped;
    let (status, out, _) = run(&spec);
    assert!(status.success());
    for field in ["SigBlk:", "SigIgn:"] {
        let line = out.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let mask = nix::sys::signal::SigSet::thread_get_mask().unwrap();
    assert!(mask.contains(nix::sys::signal::Signal::SIGUSR1));
    assert!(!mask.contains(nix::sys::signal::Signal::SIGUSR2));

    // Launches from another thread (through the launcher thread) while this one launches.
    let other_root = root.path().to_owned();
    let other = std::thread::spawn(move || {
        for i in 0..20 {
            let (status, out, _) = run(&sh(&other_root, &format!("echo other {i}")));
            assert!(status.success());
            assert_eq!(out, format!("other {i}\n"));
        }
    });
    for i in 0..20 {
        let (status, out, _) = run(&sh(root.path(), &format!("echo main {i}")));
        assert!(status.success());
        assert_eq!(out, format!("main {i}\n"));
    }
    other.join().unwrap();

    // A container of another user: its change of ids must not leave this process (whose
    // memory the child shared until its exec) non-dumpable.
    let mut other_user = sh(root.path(), "true");
    other_user.uid = 1000;
    other_user.gid = 1000;
    assert!(run(&other_user).0.success());
    // SAFETY: plain integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 1);

    // A long-running child outlives nothing it should not: killed, reaped.
    let mut p = launch::spawn(&sh(root.path(), "sleep 30")).unwrap();
    assert_eq!(p.wait_timeout(Duration::from_millis(50)).unwrap(), None);
    p.kill().unwrap();
    assert!(matches!(p.wait().unwrap(), ExitStatus::Signaled(_)));

    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        before,
        "no mount left behind"
    );
    println!("main_thread: every launch from the main thread behaved");
}
