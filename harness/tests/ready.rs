//! Readiness against real containers (an image of host binaries), real sockets, real execs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use molde_harness::ready::{self, ReadyError, WaitFor};
use molde_harness::{Harness, TestContainer};

mod common;
use common::require;

/// A harness in a temp dir and an image of host binaries.
fn setup() -> Option<(tempfile::TempDir, Harness, molde_image::Image)> {
    if !require(
        nix::unistd::geteuid().is_root(),
        "needs root to mount overlay writable layers",
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::open(dir.path().join("h")).unwrap();
    let bins: Vec<&Path> = [
        "/bin/sh",
        "/bin/echo",
        "/bin/sleep",
        "/bin/touch",
        "/bin/test",
        "/bin/cat",
    ]
    .iter()
    .map(Path::new)
    .filter(|p| p.exists())
    .collect();
    let image = molde_image::base::from_host(harness.store(), &bins).unwrap();
    Some((dir, harness, image))
}

fn sh(harness: &Harness, image: &molde_image::Image, script: &str) -> TestContainer {
    harness
        .start(
            harness
                .container(image)
                .command("/bin/sh")
                .args(["-c", script]),
        )
        .unwrap()
}

#[test]
fn a_log_line_counted_from_the_start() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let mut c = sh(
        &harness,
        &image,
        "echo booting; echo 'ready to serve' >&2; sleep 0.3; echo 'ready to serve' >&2; sleep 30",
    );
    // The first line may well be written before the wait begins: it still counts.
    std::thread::sleep(Duration::from_millis(100));
    ready::wait(&mut c, &[WaitFor::log("^ready to serve$").unwrap()]).unwrap();
    let began = Instant::now();
    ready::wait(
        &mut c,
        &[WaitFor::log("ready to serve")
            .unwrap()
            .on(molde_container::Stream::Stderr)
            .times(2)],
    )
    .unwrap();
    assert!(
        began.elapsed() >= Duration::from_millis(100),
        "waited for the second line"
    );
    // Not on stdout.
    let e = ready::wait(
        &mut c,
        &[WaitFor::log("ready")
            .unwrap()
            .on(molde_container::Stream::Stdout)
            .timeout(Duration::from_millis(100))],
    )
    .unwrap_err();
    assert!(matches!(e, ReadyError::TimedOut { .. }), "{e}");
}

#[test]
fn an_exit_stops_the_wait_with_status_and_last_lines() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let mut c = sh(&harness, &image, "echo 'FATAL: config broken' >&2; exit 3");
    let began = Instant::now();
    let e = ready::wait(&mut c, &[WaitFor::log("never").unwrap()]).unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "stopped at the exit, not the timeout"
    );
    match &e {
        ReadyError::Exited { status, lines, .. } => {
            assert_eq!(
                *status,
                molde_container::Status::Exited {
                    code: Some(3),
                    signal: None
                }
            );
            assert_eq!(lines.0.last().unwrap().text(), "FATAL: config broken");
        }
        other => panic!("{other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("exited (3)") && text.contains("FATAL: config broken"),
        "{text}"
    );
}

#[test]
fn a_timeout_says_what_was_awaited_and_shows_the_logs() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let mut c = sh(&harness, &image, "echo still starting; sleep 30");
    let began = Instant::now();
    let e = ready::wait(
        &mut c,
        &[WaitFor::exec(["/bin/test", "-e", "/ready"]).timeout(Duration::from_millis(300))],
    )
    .unwrap_err();
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(began.elapsed() < Duration::from_secs(3));
    let text = e.to_string();
    assert!(text.contains("`/bin/test -e /ready` to exit 0"), "{text}");
    assert!(text.contains("stdout: still starting"), "{text}");
}

#[test]
fn an_exec_that_comes_to_succeed() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let mut c = sh(&harness, &image, "sleep 0.3; touch /ready; sleep 30");
    let took = ready::wait(&mut c, &[WaitFor::exec(["/bin/test", "-e", "/ready"])]).unwrap();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(1500), "polled often: {took:?}");
}

#[test]
fn tcp_and_http_on_real_sockets() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let mut c = sh(&harness, &image, "sleep 30");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // A server that comes up after 200 ms and answers 503 once, then 200.
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let l = TcpListener::bind(addr).unwrap();
        for status in ["503 Service Unavailable", "200 OK"] {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
        }
    });
    let e = ready::wait(
        &mut c,
        &[WaitFor::tcp(addr).timeout(Duration::from_millis(50))],
    );
    assert!(matches!(e, Err(ReadyError::TimedOut { .. })));
    ready::wait(&mut c, &[WaitFor::http(addr, "/health")]).unwrap();
    server.join().unwrap();
}

#[test]
fn a_unix_socket_in_a_bound_directory_and_no_healthcheck() {
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let sock = tempfile::tempdir().unwrap();
    let path = sock.path().join("s.sock");
    let p2 = path.clone();
    let mut c = sh(&harness, &image, "sleep 30");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let l = std::os::unix::net::UnixListener::bind(&p2).unwrap();
        let _ = l.accept();
    });
    ready::wait(&mut c, &[WaitFor::unix_socket(&path)]).unwrap();
    t.join().unwrap();
    let e = ready::wait(&mut c, &[WaitFor::healthcheck()]).unwrap_err();
    assert!(matches!(e, ReadyError::NoHealthcheck { .. }), "{e}");
}

#[test]
fn the_image_s_healthcheck() {
    use molde_container::build::{Build, Healthcheck};
    let Some((_d, harness, image)) = setup() else {
        return;
    };
    let check = |test: &[&str]| Healthcheck {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: 0,
        timeout: 0,
        start_period: 0,
        start_interval: 0,
        retries: 0,
    };
    let healthy = Build::from_image(&image)
        .healthcheck(check(&["CMD-SHELL", "test -e /healthy"]))
        .build(harness.store(), "with-health:1")
        .unwrap()
        .image;
    let mut c = sh(&harness, &healthy, "sleep 0.2; touch /healthy; sleep 30");
    let took = ready::wait(&mut c, &[WaitFor::healthcheck()]).unwrap();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    let none = Build::from_image(&image)
        .healthcheck(check(&["NONE"]))
        .build(harness.store(), "no-health:1")
        .unwrap()
        .image;
    let mut c = sh(&harness, &none, "sleep 30");
    let e = ready::wait(&mut c, &[WaitFor::healthcheck()]).unwrap_err();
    assert!(e.to_string().contains("HEALTHCHECK NONE"), "{e}");
}
