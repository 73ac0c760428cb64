//! Container logs: stdout and stderr kept in the store, read back, followed live, rotated,
//! printed when a test panics with a container alive.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use molde_container::{Container, LogConfig, Stream};
use molde_image::{Image, Store};

fn setup() -> Option<(tempfile::TempDir, Store, Image)> {
    // Root, or rootless with subordinate ids (the unprivileged pass).
    if !common::containers_or_skip() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bins: Vec<&Path> = ["/bin/sh", "/bin/echo", "/bin/sleep", "/bin/cat", "/bin/seq"]
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    let image = molde_image::base::from_host(&store, &bins).unwrap();
    Some((dir, store, image))
}

#[test]
fn both_streams_are_kept_in_order_and_across_restarts() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args(["-c", "echo one; echo two >&2; printf 'no newline'"])
        .logs(LogConfig::default())
        .start()
        .unwrap();
    c.wait().unwrap();
    let lines = c.logs().unwrap();
    let got: Vec<(Stream, String, bool)> = lines
        .iter()
        .map(|l| (l.stream, l.text().into_owned(), l.partial))
        .collect();
    assert_eq!(
        got,
        [
            (Stream::Stdout, "one".to_owned(), false),
            (Stream::Stderr, "two".to_owned(), false),
            (Stream::Stdout, "no newline".to_owned(), true),
        ]
    );
    assert!(lines.windows(2).all(|w| w[0].time <= w[1].time));
    // A restart appends; another handle reads the same.
    c.start().unwrap();
    c.wait().unwrap();
    assert_eq!(c.logs().unwrap().len(), 6);
    let other = Container::open(&store, c.id()).unwrap();
    let tail = other.log_tail(2).unwrap();
    assert_eq!(tail[0].text(), "two");
    assert_eq!(tail[1].text(), "no newline");
    c.close().unwrap();
}

#[test]
fn a_container_without_logs_says_so() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let c = Container::builder(&store, &image)
        .command("/bin/true")
        .create()
        .unwrap();
    let e = c.logs().unwrap_err();
    assert!(e.to_string().contains("ContainerBuilder::logs"), "{e}");
}

#[test]
fn follow_sees_lines_while_the_container_runs_and_ends_with_it() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args(["-c", "echo first; sleep 0.5; echo second; sleep 0.3"])
        .logs(LogConfig::default())
        .start()
        .unwrap();
    let started = Instant::now();
    let mut follow = c.follow_logs().unwrap();
    let first = follow.next().unwrap().unwrap();
    assert_eq!(first.text(), "first");
    // Seen live: long before the container ends.
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(follow.try_next().unwrap(), None);
    assert!(!follow.is_finished());
    let second = follow.next().unwrap().unwrap();
    assert_eq!(second.text(), "second");
    assert!(
        follow.next().is_none(),
        "the end comes with the container's"
    );
    assert!(started.elapsed() >= Duration::from_millis(750));
    assert!(follow.is_finished());
    c.close().unwrap();
}

#[test]
fn logs_are_rotated_and_bounded() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let config = LogConfig {
        max_bytes: 16 << 10,
        files: 3,
    };
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done",
        ])
        .logs(config)
        .start()
        .unwrap();
    c.wait().unwrap();
    let dir = molde_container::record::ContainerPaths::new(&store, c.id());
    let mut total = 0;
    for name in ["log", "log.1", "log.2"] {
        let len = std::fs::metadata(dir.dir().join(name)).unwrap().len();
        assert!(len <= config.max_bytes + (64 << 10), "{name}: {len}");
        total += len;
    }
    assert!(!dir.dir().join("log.3").exists());
    assert!(total <= 3 * (config.max_bytes + (64 << 10)));
    let lines = c.logs().unwrap();
    assert!(lines.len() < 5000, "older lines are dropped");
    assert_eq!(lines.last().unwrap().text(), "line 4999");
    // What is kept is a contiguous end of the output.
    let first: usize = lines[0].text()["line ".len()..].parse().unwrap();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l.text(), format!("line {}", first + i));
    }
    c.close().unwrap();
}

/// Run by `a_panicking_test_prints_the_container_s_last_lines` in a child process.
#[test]
#[ignore = "a helper: panics on purpose"]
fn helper_panics_with_a_container_alive() {
    let Some((_dir, store, image)) = setup() else {
        return;
    };
    let mut c = Container::builder(&store, &image)
        .command("/bin/sh")
        .args(["-c", "echo database is broken >&2; sleep 30"])
        .logs(LogConfig::default())
        .start()
        .unwrap();
    let mut follow = c.follow_logs().unwrap();
    follow.next().unwrap().unwrap();
    let _ = c.status();
    panic!("the test failed");
}

#[test]
fn a_panicking_test_prints_the_container_s_last_lines() {
    if setup().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_panics_with_a_container_alive",
            "--nocapture",
        ])
        .env_remove("MOLDE_REQUIRE_ALL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the test failed"), "{stderr}");
    assert!(
        stderr.contains("stderr: database is broken"),
        "the container's last lines are printed:\n{stderr}"
    );
}
