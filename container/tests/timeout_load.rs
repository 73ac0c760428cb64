//! A run's timeout under load (issue 11): with CPU hogs on every core, the timeout path runs
//! many times and its outcome is always the right one: a run alive at its deadline fails with
//! `TimedOut`, a run that ends by itself (an exit, or a SIGKILL it did not get for its
//! timeout, as an OOM kill) is its own status, and a run ending right at its deadline is one
//! or the other, never a plain SIGKILL. Once `lifecycle.rs`'s `timeout_kills_the_run` failed
//! 1 in 3 with two busy loops beside it (the watchdog killed before the waiter's deadline).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molde_container::{Container, ContainerError, Status};
use molde_image::{Image, Store};

/// Rounds of each case; each round's runs last ~100 ms.
const ROUNDS: usize = 25;
const LIMIT: Duration = Duration::from_millis(100);

/// CPU hogs, one more than the cores: shell busy loops bounded by `timeout(1)` (300 s), their
/// output to /dev/null, ended by pid when dropped (SIGTERM, which `timeout` passes on to its
/// loop; a SIGKILL would leave the loop running).
struct Hogs(Vec<Child>);

impl Hogs {
    fn start() -> Hogs {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("timeout")
                        .args(["300", "sh", "-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawning a CPU hog (sh, timeout)")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(hog.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = hog.wait();
        }
    }
}

fn setup() -> Option<(tempfile::TempDir, Store, Image)> {
    if !common::require(
        common::privileged(),
        "needs root to mount overlay writable layers",
    ) || !common::require(common::have_tool("timeout"), "needs timeout(1)")
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bins: Vec<&Path> = ["/bin/sh", "/bin/sleep", "/bin/true"]
        .iter()
        .map(Path::new)
        .collect();
    let image = molde_image::base::from_host(&store, &bins).unwrap();
    Some((dir, store, image))
}

fn run(store: &Store, image: &Image, script: &str) -> Result<Status, ContainerError> {
    Container::builder(store, image)
        .command("/bin/sh")
        .args(["-c", script])
        .timeout(LIMIT)
        .output()
        .map(|o| o.status)
}

const KILLED: Status = Status::Exited {
    code: None,
    signal: Some(9),
};

#[test]
fn timeout_outcome_is_decided_once_under_load() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let hogs = Hogs::start();
    let mut at_deadline = (0, 0);
    for round in 0..ROUNDS {
        // Alive at the deadline: timed out, never a plain SIGKILL.
        match run(&store, &image, "sleep 30") {
            Err(ContainerError::TimedOut { timeout, .. }) => assert_eq!(timeout, LIMIT),
            other => panic!("round {round}: a run alive at its deadline gave {other:?}"),
        }
        // Ended by itself before: its own status.
        assert_eq!(
            run(&store, &image, "exit 7").unwrap(),
            Status::Exited {
                code: Some(7),
                signal: None
            },
            "round {round}"
        );
        // Killed before its deadline, but not for it (as by the OOM killer): that SIGKILL,
        // no timeout. (A deadline far enough that a loaded start cannot pass it.)
        let mut c = Container::builder(&store, &image)
            .command("/bin/sh")
            .args(["-c", "sleep 30"])
            .timeout(Duration::from_secs(20))
            .start()
            .unwrap();
        c.kill().unwrap();
        assert_eq!(
            c.wait().unwrap(),
            KILLED,
            "round {round}: a SIGKILL before the deadline is no timeout"
        );
        c.remove().unwrap();
        // Ending right about its deadline: either, but a SIGKILL only as a timeout.
        match run(&store, &image, "sleep 0.1") {
            Ok(s) => {
                assert_eq!(
                    s,
                    Status::Exited {
                        code: Some(0),
                        signal: None
                    },
                    "round {round}"
                );
                at_deadline.0 += 1;
            }
            Err(ContainerError::TimedOut { .. }) => at_deadline.1 += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    drop(hogs);
    eprintln!(
        "ending at the deadline: {} exited, {} timed out",
        at_deadline.0, at_deadline.1
    );
    assert!(Container::list(&store).unwrap().is_empty(), "all removed");
}

#[test]
fn timeout_holds_for_every_way_of_waiting_under_load() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let hogs = Hogs::start();
    let start = |script: &str| {
        Container::builder(&store, &image)
            .command("/bin/sh")
            .args(["-c", script])
            .timeout(LIMIT)
            .start()
            .unwrap()
    };
    for round in 0..ROUNDS {
        // The watchdog alone (nobody waits until well after the deadline).
        let mut c = start("sleep 30");
        std::thread::sleep(LIMIT * 3);
        assert!(
            matches!(c.wait(), Err(ContainerError::TimedOut { .. })),
            "round {round}: wait after the watchdog"
        );
        assert_eq!(c.status().unwrap(), KILLED);
        c.remove().unwrap();
        // wait_timeout longer than the deadline.
        let mut c = start("sleep 30");
        let t0 = Instant::now();
        assert!(
            matches!(
                c.wait_timeout(Duration::from_secs(30)),
                Err(ContainerError::TimedOut { .. })
            ),
            "round {round}: wait_timeout"
        );
        assert!(t0.elapsed() < Duration::from_secs(20));
        c.remove().unwrap();
        // wait_timeout shorter than the deadline, then wait.
        let mut c = start("sleep 30");
        match c.wait_timeout(Duration::from_millis(10)) {
            Ok(None) => assert!(
                matches!(c.wait(), Err(ContainerError::TimedOut { .. })),
                "round {round}: wait after a short wait_timeout"
            ),
            // Loaded enough for the deadline to pass first: told once, then the status.
            Err(ContainerError::TimedOut { .. }) => assert_eq!(c.wait().unwrap(), KILLED),
            other => panic!("round {round}: short wait_timeout gave {other:?}"),
        }
        c.remove().unwrap();
    }
    drop(hogs);
    assert!(Container::list(&store).unwrap().is_empty(), "all removed");
}
