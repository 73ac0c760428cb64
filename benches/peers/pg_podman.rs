//! `postgres-ready`: from "the fixture exists" to the first successful query in a fresh
//! PostgreSQL per test. molde: the harness's copy-on-write container of the cached fixture
//! (`initdb` done), ready by its log line, `select 1` over its unix socket. podman: `podman run
//! -d -p 127.0.0.1:PORT:5432` of the same fixture image (exported by molde, `podman load`ed
//! before the clock starts), `pg_isready` polled until it answers, then `select 1` over TCP.
//! Goal <= 0.2.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use molde::image::Image;
use molde_harness::Harness;
use molde_harness::services::postgres::{DATA, Postgres};

use super::network::podman;
use super::{Figure, interleave, peak_rss_kib};

/// The host's `pg_isready` (Debian's postgresql-client-15; its wrapper in /usr/bin picks a
/// cluster, which the bench has none of).
const PG_ISREADY: &str = "/usr/lib/postgresql/15/bin/pg_isready";

/// What the podman container runs: the fixture's server, reachable over TCP from the host
/// (the fixture listens on no TCP address, and trusts loopback only: podman's port forward
/// comes from its bridge).
pub fn server_script() -> String {
    format!(
        "printf 'host all all all trust\\n' >> {DATA}/pg_hba.conf && exec postgres -D {DATA} \
         -c listen_addresses='*' -c unix_socket_directories=/tmp"
    )
}

/// The fixture image loaded into a podman storage of its own; `None` (saying why) where
/// podman cannot load it.
pub fn load(harness: &Harness, image: &Image, work: &Path) -> Option<(PathBuf, String)> {
    let tag = "molde-bench-pg:1";
    harness.store().tag(image, tag).expect("tag the fixture");
    let archive = work.join("pg.oci.tar");
    let file = std::fs::File::create(&archive).expect("archive");
    molde::image::archive::oci::export_archive(
        harness.store(),
        &[tag],
        std::io::BufWriter::new(file),
    )
    .expect("export the fixture");
    let dir = work.join(format!("mpg-{}", std::process::id()));
    let out = podman(&dir)
        .args(["load", "-q", "-i"])
        .arg(&archive)
        .output();
    let _ = std::fs::remove_file(&archive);
    match out {
        Ok(o) if o.status.success() => {
            // "Loaded image: localhost/molde-bench-pg:1" (or "Loaded image(s): ...").
            let text = String::from_utf8_lossy(&o.stdout);
            let name = text
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(_, n)| n.trim().to_owned()))
                .next_back()
                .unwrap_or_else(|| tag.to_owned());
            Some((dir, name))
        }
        Ok(o) => {
            eprintln!(
                "podman cannot load the fixture ({}): postgres-ready is left out",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("podman cannot run ({e}): postgres-ready is left out");
            None
        }
    }
}

/// Remove the images and the storage [`load`] made.
pub fn unload(dir: &Path) {
    let _ = podman(dir).args(["rmi", "-af"]).output();
    // podman leaves its storage's overlay mounted: unmount it, then remove the storage.
    let _ = nix::mount::umount2(&dir.join("root/overlay"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(Path::new("/tmp").join(dir.file_name().unwrap_or_default()));
    let _ = std::fs::remove_dir_all(dir);
}

/// `podman run -d -p` of the fixture, `pg_isready` every 5 ms until it answers, then the first
/// `select 1` over TCP; `podman rm -f` after (not timed).
fn podman_ready(dir: &Path, image: &str) -> Duration {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let began = Instant::now();
    let out = podman(dir)
        .args(["run", "-d", "--ulimit", "nofile=1024:1024"])
        .args(["--ulimit", "nproc=1000:1000", "--user", "postgres"])
        .args(["-p", &format!("127.0.0.1:{port}:5432"), image])
        .args(["/bin/sh", "-c", &server_script()])
        .output()
        .expect("podman run");
    assert!(out.status.success(), "podman run -d: {out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let port_s = port.to_string();
    loop {
        let ready = Command::new(PG_ISREADY)
            .args(["-q", "-h", "127.0.0.1", "-p", &port_s, "-U", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_isready (apt-get install postgresql-client-15)")
            .success();
        if ready {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "podman's postgres never ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
    let one: i32 = client.query_one("select 1", &[]).expect("select 1").get(0);
    assert_eq!(one, 1);
    let took = began.elapsed();
    drop(client);
    let _ = podman(dir).args(["rm", "-f", "-t", "0", &id]).output();
    took
}

/// One molde run of the postgres figures: a per-test server from the fixture to its first
/// query, then dropped; the time and this process's peak RSS.
pub fn molde_ready(
    harness: &Harness,
    image: &Image,
    first_query: fn(&Path, Duration),
) -> (Duration, u64) {
    let began = Instant::now();
    let server = Postgres::start(harness, image).expect("postgres per test");
    first_query(server.socket_dir(), Duration::from_secs(30));
    let took = began.elapsed();
    drop(server);
    (took, peak_rss_kib())
}

/// The figure: molde's per-test server against podman's, `pairs` interleaved pairs.
pub fn postgres_ready(
    harness: &Harness,
    image: &Image,
    work: &Path,
    pairs: usize,
    first_query: fn(&Path, Duration),
) -> Option<Figure> {
    let (dir, name) = load(harness, image, work)?;
    eprintln!("postgres-ready: molde vs podman run -d -p + pg_isready ({pairs} pairs)");
    podman_ready(&dir, &name);
    let molde = || molde_ready(harness, image, first_query);
    let (ratios, m, p, rss) = interleave(pairs, molde, || podman_ready(&dir, &name));
    unload(&dir);
    Some(Figure {
        name: "postgres-ready",
        peer: "podman -p + pg_isready",
        goal: 0.2,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: "Postgres::start(&harness, &fixture) (copy-on-write container of the \
                    initdb'd fixture, ready by its log line), then connect over its unix socket \
                    + `select 1`"
            .into(),
        peer_cmd: "podman --runtime runc run -d --ulimit nofile=1024:1024 --ulimit \
                   nproc=1000:1000 --user postgres -p 127.0.0.1:PORT:5432 FIXTURE sh -c '<trust \
                   the bridge> && exec postgres -D ... -c listen_addresses=*', pg_isready every \
                   5 ms until it answers, then connect over TCP + `select 1`"
            .into(),
        note: "the same fixture image on both sides (PostgreSQL 15, Debian bookworm, initdb \
               done, fsync off): molde's from its harness store, podman's loaded from an \
               oci-archive molde exported; podman 4.3 with runc, its storage private to the run, \
               its default bridge"
            .into(),
    })
}
