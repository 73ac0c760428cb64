//! `postgres-testcontainers`: from "the fixture exists" to the first successful query in a fresh
//! PostgreSQL per test, molde's harness against testcontainers-rs (0.28, `SyncRunner`) talking
//! to podman's Docker-compatible API. A reported figure, no goal (issue 14 asks for it where it
//! can be made to run here).
//!
//! The testcontainers side is a program of its own (benches/testcontainers-peer, outside the
//! workspace so that its Docker client stack is compiled only for this figure), built here with
//! `cargo build --release` (into target/testcontainers-peer) and driven over its stdin: one
//! line, one run, its time on stdout. It runs the same fixture image as `postgres-ready`,
//! `podman load`ed before the clock starts into a storage private to the run, which `podman
//! system service` (runc, the same storage) serves on a unix socket given to testcontainers as
//! `DOCKER_HOST`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use molde::image::Image;
use molde_harness::Harness;

use super::network::podman;
use super::pg_podman;
use super::{Figure, interleave};

/// The helper's package, and the target directory it is built into: one of its own, since
/// sharing the workspace's made each of the two builds rebuild the crates both use (ring,
/// rustls, hyper) for the other, minutes per bench run.
fn helper_paths() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (
        root.join("benches/testcontainers-peer/Cargo.toml"),
        root.join("target/testcontainers-peer"),
    )
}

/// Build the testcontainers program (release); its path.
fn build_helper() -> PathBuf {
    let (manifest, target) = helper_paths();
    eprintln!("postgres-testcontainers: building benches/testcontainers-peer (release)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo build of benches/testcontainers-peer");
    assert!(
        status.success(),
        "cargo build of benches/testcontainers-peer failed: {status}"
    );
    target.join("release/testcontainers-peer")
}

/// `podman system service` on `sock`, serving the storage `dir`; stopped (by its pid) on drop.
struct Service(Child);

impl Service {
    fn start(dir: &Path, sock: &Path) -> Service {
        let child = podman(dir)
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let service = Service(child);
        let began = Instant::now();
        while UnixStream::connect(sock).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "podman system service never listened on {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// The running testcontainers program: a line in, one run, its nanoseconds out.
struct Peer {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Peer {
    fn spawn(bin: &Path, sock: &Path, image: &str) -> Peer {
        let (name, tag) = image.rsplit_once(':').expect("NAME:TAG");
        let mut child = Command::new(bin)
            .args([name, tag, &pg_podman::server_script()])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("benches/testcontainers-peer");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Peer {
            child,
            input,
            output,
        }
    }

    fn run(&mut self) -> Duration {
        let input = self.input.as_mut().expect("stdin");
        writeln!(input, "run").expect("to testcontainers-peer");
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("from testcontainers-peer");
        let nanos: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("testcontainers-peer failed (its stderr is above)"));
        Duration::from_nanos(nanos)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The end of its input ends it; its last container is already removed.
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

/// The figure: molde's per-test server against testcontainers-rs over podman's API.
pub fn postgres_testcontainers(
    harness: &Harness,
    image: &Image,
    work: &Path,
    pairs: usize,
    first_query: fn(&Path, Duration),
) -> Option<Figure> {
    let bin = build_helper();
    let (dir, name) = pg_podman::load(harness, image, work)?;
    let sock = work.join("podman.sock");
    let figure = {
        let _service = Service::start(&dir, &sock);
        let mut peer = Peer::spawn(&bin, &sock, &name);
        eprintln!("postgres-testcontainers: molde vs testcontainers-rs on podman ({pairs} pairs)");
        // A first run outside the figure: the client's connection, podman's first container.
        peer.run();
        let molde = || pg_podman::molde_ready(harness, image, first_query);
        let (ratios, m, p, rss) = interleave(pairs, molde, || peer.run());
        figure(ratios, m, p, rss)
    };
    pg_podman::unload(&dir);
    Some(figure)
}

fn figure(ratios: Vec<f64>, molde: Vec<Duration>, peers: Vec<Duration>, rss: u64) -> Figure {
    Figure {
        name: "postgres-testcontainers",
        peer: "testcontainers-rs on podman",
        goal: f64::INFINITY,
        ratios,
        molde,
        peers,
        rss_kib: rss,
        molde_cmd: "Postgres::start(&harness, &fixture) (copy-on-write container of the \
                    initdb'd fixture, ready by its log line), then connect over its unix socket \
                    + `select 1`"
            .into(),
        peer_cmd: "testcontainers 0.28 SyncRunner: GenericImage::new(FIXTURE).with_exposed_port\
                   (5432).with_wait_for(WaitFor::message_on_stderr(\"database system is ready to \
                   accept connections\")).with_user(\"postgres\").with_ulimit(nofile, nproc)\
                   .with_cmd(sh -c '<trust the bridge> && exec postgres ...').start(), then \
                   connect to the published port + `select 1` (DOCKER_HOST = podman system \
                   service --runtime runc)"
            .into(),
        note: "reported, no goal; the same fixture image as postgres-ready (PostgreSQL 15, \
               Debian bookworm, initdb done, fsync off), podman 4.3's Docker-compatible API on \
               a unix socket, runc, storage private to the run, its default bridge; the \
               container's removal is not timed on either side"
            .into(),
    }
}
