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
    // A network of the store (as root would have made it): joining it rootless is a typed
    // error naming it, and nothing is made.
    let dir = store.layout().state().join("networks/rootnet");
    fs::create_dir_all(dir.join("ips")).unwrap();
    fs::write(
        dir.join("network.json"),
        r#"{"name":"rootnet","id":"0123456789ab","subnet":"10.253.0.0/24","gateway":"10.253.0.1","bridge":"mb-0123456789ab","created":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let rootnet = molde_container::network::Network::open(&store, "rootnet").unwrap();
    let before = Container::list(&store).unwrap().len();
    match common::web::httpd(&store, &image).join(&rootnet).create() {
        Err(molde_container::ContainerError::Network(
            molde_container::network::NetworkError::RootlessJoin { network },
        )) => assert_eq!(network, "rootnet"),
        other => panic!("a rootless container joining a network: {other:?}"),
    }
    assert_eq!(
        Container::list(&store).unwrap().len(),
        before,
        "nothing made"
    );
    assert!(rootnet.allocations(&store).unwrap().is_empty());
    // Two containers of one image, both on 8080, each at its own published port.
    let a = common::web::httpd(&store, &image)
        .hostname("uno")
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
    // Another handle knows where the ports are.
    let other = Container::open(&store, a.id()).unwrap();
    assert_eq!(other.host_addr(8080), Some(pa));
    // Its own /etc/hosts: localhost, and its names at the address pasta gave it.
    let out = a.exec("/bin/cat").arg("/etc/hosts").output().unwrap();
    let hosts = String::from_utf8_lossy(&out.stdout);
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    let own = hosts
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "uno"))
        .unwrap_or_else(|| panic!("no line names the container: {hosts}"));
    assert!(own.contains(&a.id()[..12]), "{hosts}");
    let seen = a
        .exec("/bin/ip")
        .args(["-o", "-4", "addr"])
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    let address = own.split_whitespace().next().unwrap();
    assert!(
        address == "127.0.1.1" || seen.contains(&format!(" {address}/")),
        "hosts names {address}, the container has {seen}"
    );
    let resolv = a.exec("/bin/cat").arg("/etc/resolv.conf").output().unwrap();
    assert!(resolv.success(), "{resolv:?}");
    drop(other);
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
