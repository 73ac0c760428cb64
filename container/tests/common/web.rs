//! A busybox web image for the network tests: httpd on 8080 serving "hello from molde",
//! socat for UDP where installed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use molde_container::{Container, ContainerBuilder};
use molde_image::{Image, ImageBuilder, Store};

pub const APPLETS: &[&str] = &[
    "sh", "httpd", "nc", "wget", "sleep", "cat", "echo", "hostname", "ip", "true",
];

/// Whether the network tests can run here: root (bridges and veths in the host's network
/// namespace) and a static busybox; when not, says why (and fails under MOLDE_REQUIRE_ALL=1).
pub fn can_run() -> bool {
    super::require(
        super::privileged(),
        "needs root for bridges and veths in the host's network namespace",
    ) && super::require(
        molde_container::image::base::static_busybox().is_some(),
        "needs a static busybox (Debian package busybox-static)",
    )
}

/// A store and a busybox image serving `/www/index.html` ("hello from molde") on `httpd`.
pub fn setup() -> (tempfile::TempDir, Store, Image) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let busybox = molde_container::image::base::static_busybox().unwrap();
    // socat (where installed) serves UDP: busybox's nc has no UDP.
    let socat = Path::new("/usr/bin/socat");
    let mut bins = vec![busybox.as_path()];
    if socat.exists() {
        bins.push(socat);
    }
    let base = molde_image::base::from_host(&store, &bins).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    // Beside busybox's real path (/bin may be a link to usr/bin in the image, as on the host).
    let real = std::fs::canonicalize(&busybox).unwrap();
    let bin = real.parent().unwrap().strip_prefix("/").unwrap();
    for applet in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, bin.join(applet), "busybox")
            .unwrap();
    }
    let body = b"hello from molde\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "www/index.html", &body[..])
        .unwrap();
    let bytes = tar.into_inner().unwrap();
    let layer = store.add_layer(&bytes[..]).unwrap().layer;
    let image = store
        .commit(
            ImageBuilder::from_image(&base)
                .layer(layer, "applets")
                .expose("8080/tcp"),
        )
        .unwrap();
    (dir, store, image)
}

/// httpd on 8080 in the foreground.
pub fn httpd(store: &Store, image: &Image) -> ContainerBuilder {
    Container::builder(store, image)
        .command("/bin/httpd")
        .args(["-f", "-p", "8080", "-h", "/www"])
        .stdout(molde_container::Stdio::null())
        .stderr(molde_container::Stdio::null())
}

/// GET / from `addr`, retried until `limit` (the server may still be starting).
pub fn get(addr: SocketAddr, limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match got {
            Ok(body) if body.contains("200") => return body,
            _ if Instant::now() > end => panic!("no answer from {addr}: {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
