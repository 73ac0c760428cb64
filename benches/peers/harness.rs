//! Harness figures: a fresh, ready PostgreSQL per test from a fixture.
//!
//! - `postgres-floor`: molde's per-test server (from the cached fixture: copy-on-write container,
//!   `postgres` started, ready, connected, `select 1` answered) against the host's own
//!   PostgreSQL 15 started on a copy of the same data directory (made before the clock starts)
//!   and polled until `select 1` answers. Goal <= 1.3.
//! - `postgres-ready` (pg_podman.rs): the same per-test server against podman's `run -d -p`
//!   of the same fixture image plus `pg_isready`. Goal <= 0.2.
//! - `postgres-testcontainers` (pg_testcontainers.rs): the same against testcontainers-rs over
//!   podman's Docker-compatible API; reported, no goal.
//! - `fixture-copy`: from the cached fixture to a running per-test container (no readiness),
//!   100 runs, against the 5 ms goal (the "peer" is the budget: a ratio <= 1 meets it); median
//!   and p99 in the note.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molde::image::Image;
use molde_harness::services::postgres::{self as pg, Postgres};
use molde_harness::{Harness, fixture_archive};

use super::{Figure, interleave, peak_rss_kib};

/// The fixture image (initdb + test settings, cached in `harness`).
fn fixture(harness: &Harness) -> Image {
    let archive = fixture_archive("services").expect("cargo xtask fixtures: services.oci.tar");
    pg::fixture(archive)
        .build(harness)
        .expect("building the postgres fixture")
}

/// Connect to the server whose socket is in `dir` and run `select 1`, retrying every 1 ms
/// until it answers.
fn first_query(dir: &Path, deadline: Duration) {
    let began = Instant::now();
    let conninfo = format!("host={} user=postgres dbname=postgres", dir.display());
    loop {
        if let Ok(mut c) = postgres::Client::connect(&conninfo, postgres::NoTls)
            && let Ok(row) = c.query_one("select 1", &[])
        {
            assert_eq!(row.get::<_, i32>(0), 1);
            return;
        }
        assert!(
            began.elapsed() < deadline,
            "no answer from {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The fixture's data directory as a host directory (the top layer of the image holds it whole:
/// initdb made every file), copied for the host's postgres and given to its user.
fn host_data_copy(harness: &Harness, image: &Image, dest: &Path) {
    let layers = molde::image::unpack::unpack(harness.store(), image).expect("unpack");
    let top = &layers.last().expect("a layer").path;
    let src = top.join(pg::DATA.trim_start_matches('/'));
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(dest)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "copying {}", src.display());
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dest)
        .status()
        .expect("chown")
        .success();
    assert!(ok, "chown postgres {}", dest.display());
}

/// The host's `postgres` on `data`, socket in `sock`, as the host's postgres user.
fn host_postgres(data: &Path, sock: &Path) -> Child {
    Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg("/usr/lib/postgresql/15/bin/postgres")
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(sock)
        .args(["-c", "listen_addresses="])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the host's postgres (apt-get install postgresql-15)")
}

/// Stop the host server we started (by its pid: SIGQUIT, immediate shutdown) and wait.
fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
    let _ = child.wait();
}

/// A work directory, a harness store in it, and the fixture built there.
fn setup() -> (tempfile::TempDir, Harness, Image) {
    let dir = tempfile::Builder::new()
        .prefix("molde-bench-harness-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let harness = Harness::open(dir.path().join("store")).expect("harness");
    let image = fixture(&harness);
    (dir, harness, image)
}

/// `postgres-testcontainers`, if wanted: a group of its own, since it builds and runs a peer
/// (testcontainers-rs over podman's API) that may fail where the other harness figures do not.
pub fn testcontainers_figures(pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    if !wanted("postgres-testcontainers") {
        return Vec::new();
    }
    let (dir, harness, image) = setup();
    let figure = super::pg_testcontainers::postgres_testcontainers(
        &harness,
        &image,
        dir.path(),
        pairs,
        first_query,
    );
    vec![figure.expect("podman could not load the fixture (its error is above)")]
}

/// The harness figures wanted.
pub fn figures(pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let mut out = Vec::new();
    if !(wanted("postgres-floor") || wanted("fixture-copy") || wanted("postgres-ready")) {
        return out;
    }
    let (dir, harness, image) = setup();
    if wanted("postgres-floor") {
        out.push(postgres_floor(&harness, &image, dir.path(), pairs));
    }
    if wanted("fixture-copy") {
        out.push(fixture_copy(&harness, &image));
    }
    if wanted("postgres-ready") {
        out.extend(super::pg_podman::postgres_ready(
            &harness,
            &image,
            dir.path(),
            pairs,
            first_query,
        ));
    }
    out
}

fn postgres_floor(harness: &Harness, image: &Image, work: &Path, pairs: usize) -> Figure {
    eprintln!("postgres-floor: molde vs host postgres ({pairs} pairs)");
    let mut n = 0;
    let mut molde = || {
        let began = Instant::now();
        let server = Postgres::start(harness, image).expect("postgres per test");
        first_query(server.socket_dir(), Duration::from_secs(30));
        let took = began.elapsed();
        drop(server);
        (took, peak_rss_kib())
    };
    let mut host = || {
        n += 1;
        let data = work.join(format!("host-data-{n}"));
        let sock: PathBuf = work.join(format!("host-sock-{n}"));
        host_data_copy(harness, image, &data);
        std::fs::create_dir(&sock).unwrap();
        let _ = Command::new("chown").arg("postgres").arg(&sock).status();
        let began = Instant::now();
        let child = host_postgres(&data, &sock);
        first_query(&sock, Duration::from_secs(30));
        let took = began.elapsed();
        stop(child);
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_dir_all(&sock);
        took
    };
    let (ratios, m, p, rss) = interleave(pairs, &mut molde, &mut host);
    Figure {
        name: "postgres-floor",
        peer: "host postgres",
        goal: 1.3,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: "Postgres::start(&harness, &fixture) (copy-on-write container of the initdb'd \
                    fixture, `postgres -D`, ready by its log line), then postgres::Client::connect \
                    over its unix socket + `select 1`"
            .into(),
        peer_cmd: "setpriv --reuid=postgres postgres -D <copy of the same data dir> -k <dir> \
                   (copy made before the clock starts), then connect + `select 1` retried every 1 ms"
            .into(),
        note: "PostgreSQL 15 from Debian bookworm (fixture image services.oci.tar) vs the host's \
               PostgreSQL 15 package; same settings (fsync off), unix sockets on both sides"
            .into(),
    }
}

fn fixture_copy(harness: &Harness, image: &Image) -> Figure {
    const RUNS: usize = 100;
    const GOAL: Duration = Duration::from_millis(5);
    eprintln!("fixture-copy: {RUNS} per-test containers from the cached fixture");
    let mut times = Vec::with_capacity(RUNS);
    let mut rss = 0;
    for _ in 0..RUNS {
        let began = Instant::now();
        let c = harness
            .start(harness.container(image).command("/bin/sleep").arg("60"))
            .expect("per-test container");
        times.push(began.elapsed());
        rss = rss.max(peak_rss_kib());
        drop(c);
        eprint!(".");
    }
    eprintln!();
    let mut sorted = times.clone();
    sorted.sort();
    let p99 = sorted[(RUNS * 99) / 100 - 1];
    let median = sorted[RUNS / 2];
    eprintln!(
        "fixture-copy: median {:.2} ms, p99 {:.2} ms over {RUNS}",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    Figure {
        name: "fixture-copy",
        peer: "the 5 ms goal",
        goal: 1.0,
        ratios: times
            .iter()
            .map(|t| t.as_secs_f64() / GOAL.as_secs_f64())
            .collect(),
        molde: times,
        peers: vec![GOAL; RUNS],
        rss_kib: rss,
        molde_cmd:
            "harness.start(harness.container(&fixture).command(\"/bin/sleep\").arg(\"60\")) \
                    (create + mark + start; removal not timed)"
                .into(),
        peer_cmd: "none: the figure is the time against the 5 ms goal".into(),
        note: format!(
            "{RUNS} runs: median {:.2} ms, p99 {:.2} ms; writable layer on tmpfs (the harness's \
             default), store on /var/tmp",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
    }
}
