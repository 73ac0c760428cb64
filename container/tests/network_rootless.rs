//! Rootless networking, through pasta: this test binary, copied where `nobody` can run it,
//! re-runs its helper as uid/gid 65534 (setpriv(1)), one id mapped, and as `molde-rootless`,
//! with subordinate ranges; the helper starts busybox httpd
//! containers publishing 8080 and reaches each from the host at its port, and on a user
//! network (in the store's rootless network namespace) reaches a server from another
//! container by IP and by name and from the host at its published port, then checks that
//! nothing is left (holder, pasta, veths, addresses).

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
    if ready() {
        run_helper(65534, 65534, "--clear-groups");
    }
}

/// The same as `molde-rootless`, a user with subordinate ranges: the rootless network
/// namespace's user namespace is mapped through newuidmap/newgidmap.
#[test]
fn rootless_networks_with_subordinate_ids() {
    if !ready() {
        return;
    }
    let user = nix::unistd::User::from_name("molde-rootless")
        .ok()
        .flatten();
    if common::require(
        user.is_some(),
        "needs the user molde-rootless with subordinate ranges (cargo xtask test makes it: \
         useradd -m molde-rootless)",
    ) {
        let user = user.unwrap();
        run_helper(user.uid.as_raw(), user.gid.as_raw(), "--init-groups");
    }
}

/// Whether the tools are here (and this is root, who can become another user).
fn ready() -> bool {
    if !common::require(common::have_tool("setpriv"), "needs setpriv(1)")
        || !common::require(common::privileged(), "needs root to become another user")
        || !common::require(
            common::have_tool("pasta"),
            "needs pasta (Debian package passt)",
        )
        || !common::require(
            molde_container::image::base::static_busybox().is_some(),
            "needs a static busybox (Debian package busybox-static)",
        )
    {
        return false;
    }
    true
}

/// Run [`rootless_helper`] as `uid`:`gid` (setpriv's `groups` option); it must pass.
fn run_helper(uid: u32, gid: u32, groups: &str) {
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
    common::settle(&exe, &["--list"]);
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let work = base.join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(uid), Some(gid)).unwrap();
    let output = std::process::Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args([groups, "--inh-caps=-all"])
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

/// Runs as `nobody` or `molde-rootless` for the tests above.
#[test]
#[ignore = "helper: run as nobody and as molde-rootless by the two tests above"]
fn rootless_helper() {
    let work = std::env::var_os(ROOTLESS_ENV)
        .map(PathBuf::from)
        .expect("a helper: started by the rootless network test, which sets its environment");
    assert!(!common::privileged(), "must run unprivileged");
    let (_dir, store, image) = common::web::setup();
    let _ = Store::open(work.join("unused"));
    user_networks(&store, &image);
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

/// A user network, rootless: a server reached from another container by IP and by name and
/// from the host at its published port; then nothing left once all is removed.
fn user_networks(store: &Store, image: &molde_image::Image) {
    use molde_container::network::Network;
    let links_before = host_links();
    let net = Network::create(store, "backend").unwrap();
    let holder_file = store.layout().state().join("networks/rootless-netns");
    assert!(!holder_file.exists(), "no holder before a container starts");
    let server = common::web::httpd(store, image)
        .hostname("web")
        .alias("db")
        .join(&net)
        .publish(8080)
        .start()
        .unwrap();
    let ip = server.ip().expect("an address on the network");
    assert!(net.subnet().contains(&ip), "{ip} in {}", net.subnet());
    let holder = holder_pid(&holder_file);
    assert!(std::path::Path::new(&format!("/proc/{holder}")).exists());
    // From the host, at the published port (pasta into the server's namespace).
    let published = server.host_addr(8080).unwrap();
    let body = common::web::get(published, Duration::from_secs(10));
    assert!(body.contains("hello from molde"), "{body}");
    assert_eq!(pastas().len(), 1, "the server's pasta: {:?}", pastas());
    // From another container on the network: by IP, by hostname and by alias.
    let client = Container::builder(store, image)
        .command("/bin/sleep")
        .arg("60")
        .join(&net)
        .start()
        .unwrap();
    assert_ne!(client.ip(), Some(ip));
    for host in [ip.to_string(), "web".into(), "db".into()] {
        let url = format!("http://{host}:8080/");
        let mut last = String::new();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = client
                .exec("/bin/wget")
                // (busybox's `-T` crashes it: its default timeout it is.)
                .args(["-q", "-O", "-", &url])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body.contains("hello from molde") {
                break;
            }
            last = format!("{out:?}");
            assert!(
                std::time::Instant::now() < end,
                "{url} from a container: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = last;
    }
    // The host's network namespace got nothing: the bridge and veths are in the holder's.
    assert_eq!(host_links(), links_before, "links in the host's namespace");
    // In use: refused, naming the containers.
    match Network::open(store, "backend").unwrap().remove(store) {
        Err(molde_container::network::NetworkError::InUse { containers, .. }) => {
            assert_eq!(containers.len(), 2, "{containers:?}")
        }
        other => panic!("removing a network in use: {other:?}"),
    }
    server.remove().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{holder}")).exists(),
        "the holder stays while a container is on a network"
    );
    client.remove().unwrap();
    // The last container gone: the holder (its namespaces, bridge and veths) went too.
    assert!(!holder_file.exists(), "holder file left");
    wait_gone(holder);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    // pasta went with its container.
    while std::net::TcpStream::connect(published).is_ok() {
        assert!(
            std::time::Instant::now() < end,
            "pasta outlived its container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(net.allocations(store).unwrap().is_empty());
    while !pastas().is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "pasta left: {:?}",
            pastas()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    killed_owner(store, image);
    // A holder that died (a crash, a reboot) is made again by the next start.
    let mut again = common::web::httpd(store, image)
        .join(&net)
        .publish(8080)
        .start()
        .unwrap();
    let first = holder_pid(&holder_file);
    again.stop(Duration::from_millis(100)).unwrap();
    // SAFETY: a plain kill of the holder this process started.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    wait_gone(first);
    again.start().unwrap();
    let second = holder_pid(&holder_file);
    assert_ne!(first, second, "a new holder");
    let body = common::web::get(again.host_addr(8080).unwrap(), Duration::from_secs(10));
    assert!(body.contains("hello from molde"), "{body}");
    again.remove().unwrap();
    assert!(!holder_file.exists(), "holder file left");
    wait_gone(second);
    Network::open(store, "backend")
        .unwrap()
        .remove(store)
        .unwrap();
    assert!(Network::list(store).unwrap().is_empty());
    assert_eq!(host_links(), links_before);
}

/// The names of the links of this process's network namespace.
fn host_links() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The pids of this process's pasta children (pasta is spawned by a thread of this process).
fn pastas() -> Vec<u32> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((comm, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            // pasta is a link to passt (or passt.avx2), whose name it runs under.
            let named = comm.contains("(pasta") || comm.contains("(passt");
            named && rest.split(' ').nth(1) == Some(me.as_str())
        })
        .collect()
}

/// The holder's pid, from its file.
fn holder_pid(file: &std::path::Path) -> u32 {
    fs::read_to_string(file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Wait (5 s at most) until process `pid` is gone, reaped too: a holder this process started
/// and another stopped must not stay a zombie here.
fn wait_gone(pid: u32) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "process {pid} outlived its use"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const OWNER_ENV: &str = "MOLDE_TEST_NETWORK_ROOTLESS_OWNER";

/// A process that started a container on `backend` is SIGKILLed: its container and pasta
/// die with it, the holder stays while the container's record holds its address; the next
/// open of the store marks the container exited, and its removal stops the holder.
fn killed_owner(store: &Store, image: &molde_image::Image) {
    use std::io::BufRead;
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["rootless_owner", "--exact", "--ignored", "--nocapture"])
        .env(
            OWNER_ENV,
            format!("{}\n{}", store.root().display(), image.id()),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(owner.stdout.take().unwrap());
    while !line.starts_with("started ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the owner ended");
    }
    let mut words = line.split_whitespace().skip(1);
    let (id, port): (String, std::net::SocketAddr) = (
        words.next().unwrap().to_owned(),
        words.next().unwrap().parse().unwrap(),
    );
    let holder_file = store.layout().state().join("networks/rootless-netns");
    let holder = holder_pid(&holder_file);
    owner.kill().unwrap();
    owner.wait().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(port).is_ok() {
        assert!(std::time::Instant::now() < end, "pasta outlived its owner");
        std::thread::sleep(Duration::from_millis(20));
    }
    molde_container::recover(store).unwrap();
    let mut c = Container::open(store, &id).unwrap();
    assert!(
        matches!(c.status().unwrap(), molde_container::Status::Exited { .. }),
        "{:?}",
        c.status()
    );
    assert_eq!(
        holder_pid(&holder_file),
        holder,
        "the holder stays for the record"
    );
    c.remove().unwrap();
    assert!(!holder_file.exists(), "holder file left");
    wait_gone(holder);
}

/// Run by [`killed_owner`]: start a container on `backend`, say so, wait to be killed.
#[test]
#[ignore = "helper: run by rootless_helper, then killed"]
fn rootless_owner() {
    let env = std::env::var(OWNER_ENV).expect("a helper: started by rootless_helper");
    let (root, image) = env.split_once('\n').unwrap();
    let store = Store::open(root).unwrap();
    let image = store.resolve(image).unwrap();
    let net = molde_container::network::Network::open(&store, "backend").unwrap();
    let c = common::web::httpd(&store, &image)
        .join(&net)
        .publish(8080)
        .start()
        .unwrap();
    println!("started {} {}", c.id(), c.host_addr(8080).unwrap());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
