//! Network figures: a start on a bridge network against one with loopback only (molde's own
//! floor) and against podman on its default bridge, the time from start to the first HTTP
//! answer through a published port (molde's forwarder, podman's `-p`), and what the forwarder
//! costs a transfer and a request against a direct connection to the container's address.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use molde::container::network::Network;
use molde::container::{Container, ContainerBuilder, Stdio};
use molde::image::{Image, ImageBuilder, Store};

use super::{Figure, interleave, peak_rss_kib, run_peer};

/// podman on private storage (`dir`: its runroot, which podman wants under 50 characters, is
/// `dir`'s short name under /tmp), runc (crun 1.8 refuses hybrid cgroups) and rlimits within
/// this host's hard limits (DESIGN.md, "Peers here").
pub fn podman(dir: &Path) -> Command {
    let mut cmd = Command::new("podman");
    let run = Path::new("/tmp").join(dir.file_name().unwrap_or_default());
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(run)
        .args(["--runtime", "runc"]);
    cmd
}

const PODMAN_RUN: &[&str] = &[
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
];

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    image: Image,
    net: Network,
    /// podman's storage, with the same image loaded from an oci-archive (if podman runs).
    podman: Option<std::path::PathBuf>,
}

/// A busybox image (httpd serving /www on 8080, /bin/true) in a store on `disk`, a network,
/// and the same image in podman.
fn fixture(disk: &Path) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("net-")
        .tempdir_in(disk)
        .expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("store");
    let busybox = molde::image::base::static_busybox().expect("busybox-static is installed");
    let base = molde::image::base::from_host(&store, &[busybox.as_path()]).expect("base");
    let real = std::fs::canonicalize(&busybox).unwrap();
    let bin = real.parent().unwrap().strip_prefix("/").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for applet in ["sh", "httpd", "true", "dd"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, bin.join(applet), "busybox")
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "www/index.html", &b"hi\n"[..])
        .unwrap();
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).expect("layer").layer;
    let image = store
        .commit(
            ImageBuilder::from_image(&base)
                .layer(layer, "applets")
                .expose("8080/tcp"),
        )
        .expect("commit");
    store.tag(&image, "molde-bench-net:1").expect("tag");
    let net = Network::create(&store, "bench").expect("network");
    let podman_dir = dir.path().join(format!("mpb-{}", std::process::id()));
    let archive = dir.path().join("image.oci.tar");
    let file = std::fs::File::create(&archive).unwrap();
    molde::image::archive::oci::export_archive(&store, &["molde-bench-net:1"], file)
        .expect("export");
    let loaded = match podman(&podman_dir)
        .args(["load", "-q", "-i"])
        .arg(&archive)
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "podman cannot load the image ({}): its figures are left out",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("podman cannot run ({e}): its figures are left out");
            false
        }
    };
    Fixture {
        _dir: dir,
        store,
        image,
        net,
        podman: loaded.then_some(podman_dir),
    }
}

fn quiet(b: ContainerBuilder) -> ContainerBuilder {
    b.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// create + start + wait + remove of /bin/true, on `net` or with loopback only.
fn molde_true(fx: &Fixture, bridge: bool) -> (Duration, u64) {
    let start = Instant::now();
    let mut b = quiet(Container::builder(&fx.store, &fx.image).command("/bin/true"));
    if bridge {
        b = b.join(&fx.net);
    }
    let mut c = b.create().expect("create");
    c.start().expect("start");
    let status = c.wait().expect("wait");
    c.remove().expect("remove");
    let took = start.elapsed();
    assert!(
        matches!(
            status,
            molde::container::Status::Exited { code: Some(0), .. }
        ),
        "/bin/true failed: {status:?}"
    );
    (took, peak_rss_kib())
}

/// GET /index.html from `addr` every 0.2 ms until httpd answers 200; the time since `since`.
/// (A connect alone would not do: a forwarder's socket, molde's or docker-proxy's, accepts
/// before the server in the container listens.)
fn first_answer(addr: SocketAddr, since: Instant) -> Duration {
    let limit = since + Duration::from_secs(30);
    loop {
        let answered = (|| -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            // A connection that hangs (see the analysis: a reply that never comes) is given
            // up and tried again, as a client with a deadline would.
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.set_write_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut got = String::new();
            s.read_to_string(&mut got)?;
            Ok(got.contains(" 200 "))
        })();
        match answered {
            Ok(true) => return since.elapsed(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                eprintln!("publish-ready: a connection to {addr} hung for 1 s ({e}); retried");
            }
            _ => {}
        }
        assert!(Instant::now() < limit, "nothing answered on {addr}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// httpd publishing 8080: from `start()` to its first HTTP answer through its published port.
fn molde_publish_ready(fx: &Fixture) -> (Duration, u64) {
    let mut c = quiet(Container::builder(&fx.store, &fx.image))
        .command("/bin/httpd")
        .args(["-f", "-p", "8080", "-h", "/www"])
        .join(&fx.net)
        .publish(8080)
        .create()
        .expect("create");
    let since = Instant::now();
    c.start().expect("start");
    let took = first_answer(c.host_addr(8080).unwrap(), since);
    c.remove().expect("remove");
    (took, peak_rss_kib())
}

/// The same with `podman run -d -p 127.0.0.1:PORT:8080`, then `podman rm -f` (not timed).
fn podman_publish_ready(dir: &Path) -> Duration {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let since = Instant::now();
    let out = podman(dir)
        .args(&PODMAN_RUN[..1])
        .args(["-d"])
        .args(&PODMAN_RUN[2..])
        .args(["-p", &format!("127.0.0.1:{port}:8080")])
        .args([
            "molde-bench-net:1",
            "/bin/httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ])
        .output()
        .expect("podman run");
    assert!(out.status.success(), "podman run -d: {out:?}");
    let took = first_answer(SocketAddr::from(([127, 0, 0, 1], port)), since);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let _ = podman(dir).args(["rm", "-f", "-t", "0", &id]).output();
    took
}

/// An httpd container on the network publishing 8080, with a 64 MiB `/www/big` written in
/// its writable layer, answering.
fn forwarder_server(fx: &Fixture) -> Container {
    let c = quiet(Container::builder(&fx.store, &fx.image))
        .command("/bin/httpd")
        .args(["-f", "-p", "8080", "-h", "/www"])
        .join(&fx.net)
        .publish(8080)
        .start()
        .expect("start");
    let out = c
        .exec("/bin/dd")
        .args(["if=/dev/zero", "of=/www/big", "bs=1M", "count=64"])
        .output()
        .expect("dd");
    assert!(out.success(), "dd in the container: {out:?}");
    first_answer(c.host_addr(8080).unwrap(), Instant::now());
    c
}

/// GET `path` from `addr` on a new connection, reading the whole answer: its time and size.
fn fetch(addr: SocketAddr, path: &str, buf: &mut [u8]) -> (Duration, usize) {
    let since = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("send");
    let mut total = 0;
    loop {
        match s.read(buf).expect("read") {
            0 => break,
            n => total += n,
        }
    }
    (since.elapsed(), total)
}

/// The 64 MiB file from `addr`.
fn transfer(addr: SocketAddr) -> Duration {
    let mut buf = vec![0u8; 256 << 10];
    let (took, n) = fetch(addr, "/big", &mut buf);
    assert!(n > 64 << 20, "short answer from {addr}: {n} bytes");
    took
}

/// 100 requests for a 3-byte file from `addr`, each on a new connection.
fn requests(addr: SocketAddr) -> Duration {
    let mut buf = vec![0u8; 4096];
    let since = Instant::now();
    for _ in 0..100 {
        let (_, n) = fetch(addr, "/index.html", &mut buf);
        assert!(n > 3, "short answer from {addr}");
    }
    since.elapsed()
}

/// The forwarder's cost: a transfer and small requests through the published port, against
/// the same at the container's own address.
fn forwarder_figures(fx: &Fixture, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let c = forwarder_server(fx);
    let published = c.host_addr(8080).unwrap();
    let direct = SocketAddr::new(c.ip().unwrap().into(), 8080);
    let mut out = Vec::new();
    let note = "busybox httpd in a container on a bridge network, its file in the writable \
                layer (page cache); the client in this process; the forwarder is molde's \
                (a thread per connection and direction, io::copy)";
    if wanted("publish-throughput") {
        transfer(published);
        let mut f = figure(
            "publish-throughput",
            "direct to the container's address",
            2.0,
            pairs,
            || (transfer(published), peak_rss_kib()),
            || transfer(direct),
            "GET of a 64 MiB file through the published port (127.0.0.1:PORT)",
            "the same GET at the container's own address (IP:8080)",
        );
        f.note = note.into();
        out.push(f);
    }
    if wanted("publish-latency") {
        requests(published);
        let mut f = figure(
            "publish-latency",
            "direct to the container's address",
            3.0,
            pairs,
            || (requests(published), peak_rss_kib()),
            || requests(direct),
            "100 GETs of a 3-byte file through the published port, each on a new connection",
            "the same at the container's own address",
        );
        f.note = note.into();
        out.push(f);
    }
    c.remove().expect("remove");
    out
}

fn podman_true(dir: &Path) -> Duration {
    run_peer(podman(dir).args(PODMAN_RUN).args([
        "--network",
        "bridge",
        "molde-bench-net:1",
        "/bin/true",
    ]))
}

#[allow(clippy::too_many_arguments)]
fn figure(
    name: &'static str,
    peer: &'static str,
    goal: f64,
    pairs: usize,
    molde: impl FnMut() -> (Duration, u64),
    peer_run: impl FnMut() -> Duration,
    molde_cmd: &str,
    peer_cmd: &str,
) -> Figure {
    eprintln!("{name}: molde vs {peer} ({pairs} pairs)");
    let (ratios, m, p, rss) = interleave(pairs, molde, peer_run);
    Figure {
        name,
        peer,
        goal,
        ratios,
        molde: m,
        peers: p,
        rss_kib: rss,
        molde_cmd: molde_cmd.into(),
        peer_cmd: peer_cmd.into(),
        note: "busybox image (static busybox, applet links); store on a fresh ext4; podman \
               4.3 with runc, its storage private to the run, the image loaded from an \
               oci-archive molde exported"
            .into(),
    }
}

/// The network figures wanted, each measured with `pairs` interleaved pairs.
pub fn figures(disk: &Path, pairs: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let names = [
        "start-bridge",
        "start-bridge-podman",
        "publish-ready",
        "publish-throughput",
        "publish-latency",
    ];
    if !names.iter().any(|n| wanted(n)) {
        return Vec::new();
    }
    let fx = fixture(disk);
    for _ in 0..3 {
        molde_true(&fx, true);
        molde_true(&fx, false);
    }
    let mut out = Vec::new();
    if wanted("start-bridge") {
        out.push(figure(
            "start-bridge",
            "molde, network none",
            1.5,
            pairs,
            || molde_true(&fx, true),
            || molde_true(&fx, false).0,
            "Container::builder(&store, &image).command(\"/bin/true\").join(&net): create, \
             start, wait, remove",
            "the same without join (loopback only: start-floor's molde side)",
        ));
    }
    out.extend(forwarder_figures(&fx, pairs, wanted));
    if let Some(dir) = fx.podman.clone() {
        if wanted("start-bridge-podman") {
            podman_true(&dir);
            out.push(figure(
                "start-bridge-podman",
                "podman",
                0.05,
                pairs,
                || molde_true(&fx, true),
                || podman_true(&dir),
                "Container::builder(&store, &image).command(\"/bin/true\").join(&net): create, \
                 start, wait, remove",
                "podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit \
                 nproc=1000:1000 --network bridge IMAGE /bin/true",
            ));
        }
        if wanted("publish-ready") {
            podman_publish_ready(&dir);
            out.push(figure(
                "publish-ready",
                "podman -p",
                0.1,
                pairs,
                || molde_publish_ready(&fx),
                || podman_publish_ready(&dir),
                "httpd container .join(&net).publish(8080): from start() to the first HTTP \
                 200 through its host port (a GET every 0.2 ms)",
                "podman run -d ... -p 127.0.0.1:PORT:8080 IMAGE httpd: from the command to \
                 the first HTTP 200",
            ));
        }
        let _ = podman(&dir).args(["rmi", "-af"]).output();
        let _ =
            std::fs::remove_dir_all(Path::new("/tmp").join(dir.file_name().unwrap_or_default()));
    }
    let _ = fx.net.clone().remove(&fx.store);
    out
}
