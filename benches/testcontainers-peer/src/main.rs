//! The testcontainers-rs side of `postgres-testcontainers`: a test suite's per-test PostgreSQL
//! the way testcontainers-rs users write it, against podman's Docker-compatible API
//! (`DOCKER_HOST`).
//!
//! `testcontainers-peer NAME TAG SCRIPT`: for each line read on stdin, one run: `SyncRunner`
//! start of image NAME:TAG with command `/bin/sh -c SCRIPT` as user `postgres`, port 5432
//! mapped to a free port of 127.0.0.1, ready by PostgreSQL's log line on stderr
//! (testcontainers' `WaitFor`), then a client connects over that port and `select 1` answers. It prints the time from the
//! start call to that answer in nanoseconds, one line per run; the container's removal (its
//! guard's drop) comes after the clock stops.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{GenericImage, ImageExt};

/// PostgreSQL's line once it accepts connections (what testcontainers-modules' Postgres waits
/// for too).
const READY: &str = "database system is ready to accept connections";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, tag, script] = args.as_slice() else {
        eprintln!("usage: testcontainers-peer NAME TAG SCRIPT (one run per line on stdin)");
        std::process::exit(2);
    };
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        let took = one_run(name, tag, script);
        writeln!(out, "{}", took.as_nanos()).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// One per-test server: start, ready, first query; removed after the clock stops.
fn one_run(name: &str, tag: &str, script: &str) -> Duration {
    // A free port, mapped explicitly: podman 4.3's API leaves ports published by
    // `PublishAllPorts` (testcontainers' default) out of its inspect answer, so testcontainers
    // cannot find them (`PortNotExposed`).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let began = Instant::now();
    let container = GenericImage::new(name, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(READY))
        .with_mapped_port(port, 5432.tcp())
        .with_user("postgres")
        // This host's hard limits are below podman's defaults (DESIGN.md, "Peers here").
        .with_ulimit("nofile", 1024, Some(1024))
        .with_ulimit("nproc", 1000, Some(1000))
        .with_cmd(["/bin/sh", "-c", script])
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .expect("testcontainers: start the postgres container");
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    loop {
        if let Ok(mut client) = postgres::Client::connect(&conninfo, postgres::NoTls)
            && let Ok(row) = client.query_one("select 1", &[])
        {
            assert_eq!(row.get::<_, i32>(0), 1);
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "no answer on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = began.elapsed();
    drop(container);
    took
}
