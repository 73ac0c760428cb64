//! Published ports of a rootless container, through pasta: this test binary, copied where
//! `nobody` can run it, re-runs its helper as uid/gid 65534 (setpriv(1)); the helper starts
//! busybox httpd containers publishing 8080 and reaches each from the host at its port.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use molde_container::Container;
use molde_image::Store;

const ROOTLESS_ENV: &str = "MOLDE_TEST_NETWORK_ROOTLESS_DIR";

#[test]
fn rootless_published_ports_through_pasta_as_nobody() {
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become nobody")
        || !common::require(
            common::have_tool("pasta"),
            "needs pasta (Debian package passt)",
        )
        || !common::require(
            molde_container::image::base::static_busybox().is_some(),
            "needs a static busybox (Debian package busybox-static)",
        )
    {
        return;
    }
    // pasta opens /dev/net/tun as the user: Debian's udev makes it 0666; some VMs leave it
    // 0600 (root only). Give it udev's mode, as a host set up for rootless containers has.
    let tun = std::path::Path::new("/dev/net/tun");
    if fs::metadata(tun).is_ok_and(|m| m.permissions().mode() & 0o006 != 0o006) {
        fs::set_permissions(tun, fs::Permissions::from_mode(0o666)).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let exe = base.join("network_rootless");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let work = base.join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args([
            "rootless_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROOTLESS_ENV, &work)
        .env("TMPDIR", &work)
        .env_remove("MOLDE_REQUIRE_ALL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "helper failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("rootless network: checked"),
        "{stdout}\n{stderr}"
    );
}

/// Runs as `nobody` for [`rootless_published_ports_through_pasta_as_nobody`].
#[test]
#[ignore = "helper: run as nobody by rootless_published_ports_through_pasta_as_nobody"]
fn rootless_helper() {
    let work = std::env::var_os(ROOTLESS_ENV)
        .map(PathBuf::from)
        .expect("a helper: started by the rootless network test, which sets its environment");
    assert!(!common::privileged(), "must run unprivileged");
    let (_dir, store, image) = common::web::setup();
    let _ = Store::open(work.join("unused"));
    // Joining a bridge network needs root: a typed error.
    match molde_container::network::Network::create(&store, "n") {
        Err(molde_container::network::NetworkError::NeedsRoot) => {}
        other => panic!("a bridge network rootless: {other:?}"),
    }
    // Two containers of one image, both on 8080, each at its own published port.
    let a = common::web::httpd(&store, &image)
        .publish(8080)
        .start()
        .unwrap();
    let b = common::web::httpd(&store, &image)
        .publish(8080)
        .start()
        .unwrap();
    let (pa, pb) = (a.host_addr(8080).unwrap(), b.host_addr(8080).unwrap());
    assert_ne!(pa, pb);
    for addr in [pa, pb] {
        let body = common::web::get(addr, Duration::from_secs(10));
        assert!(body.contains("hello from molde"), "{body}");
    }
    a.remove().unwrap();
    b.remove().unwrap();
    // pasta went with its container: the port is free again.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(pa).is_ok() {
        assert!(
            std::time::Instant::now() < end,
            "pasta outlived its container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Container::list(&store).unwrap();
    eprintln!("rootless network: checked");
}
