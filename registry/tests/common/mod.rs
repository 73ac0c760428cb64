//! A real `docker-registry` (Debian's distribution 2.8) for tests: a config of the test's
//! own, storage in a temp dir, a free port on 127.0.0.1, optionally htpasswd auth and TLS
//! from a CA the test makes with `openssl`; stopped (by pid) when dropped.
#![allow(dead_code)]

pub mod standin;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use molde_image::{Image, ImageBuilder, Layer, Store};

/// Whether a test that needs `ok` can run; fails under `MOLDE_REQUIRE_ALL=1`.
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("MOLDE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("MOLDE_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn registry_or_skip() -> bool {
    require(
        have("docker-registry"),
        "docker-registry is not installed (Debian package docker-registry)",
    )
}

pub struct Tls {
    pub ca_pem: Vec<u8>,
}

pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub tls: Option<Tls>,
}

#[derive(Default)]
pub struct RegistryConfig {
    /// (user, password) for htpasswd auth.
    pub user: Option<(String, String)>,
    pub tls: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
fn make_tls(dir: &Path) -> Tls {
    let o = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    o(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=molde test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    o(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    o(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    Tls {
        ca_pem: std::fs::read(dir.join("ca.pem")).unwrap(),
    }
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistryConfig::default())
    }

    pub fn start_with(config: RegistryConfig) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let tls = config.tls.then(|| make_tls(dir.path()));
        if tls.is_some() {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            );
        }
        if let Some((user, password)) = &config.user {
            run(Command::new("htpasswd").args([
                "-Bbc",
                &dir.path().join("htpasswd").display().to_string(),
                user,
                password,
            ]));
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: molde-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            addr,
            dir,
            tls,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Pseudo-random (incompressible) bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image of gzip layers, one per entry of `layers` (each a file `/l<i>` with its bytes).
pub fn image_of(store: &Store, layers: &[Vec<u8>], tag: &str) -> Image {
    let mut b = ImageBuilder::new().cmd(["/bin/sh"]);
    let _pin = store.pin().unwrap();
    for (i, bytes) in layers.iter().enumerate() {
        let name = format!("l{i}");
        let tar = gzip(&layer_tar(&[(name.as_str(), bytes.as_slice())]));
        let l: Layer = store.add_layer(&tar[..]).unwrap().layer;
        b = b.layer(l, format!("ADD {name}"));
    }
    let image = store.commit(b).unwrap();
    store.tag(&image, tag).unwrap();
    image
}

pub fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").args(args));
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn tmp_store() -> Store {
    Store::temporary().unwrap()
}

pub fn blob_path(store: &Store, d: &molde_image::layerfs::Digest) -> PathBuf {
    store.layout().blob(d)
}
