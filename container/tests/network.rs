//! Bridge networks for real (root): busybox httpd and nc servers in containers, reached from
//! the host at their own addresses and published ports, and from other containers by address
//! and by name. Traffic goes only to loopback and to the namespaces these tests make. Every
//! test checks that nothing it made stays: links (`ip -o link`), addresses, allocations.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use molde_container::network::{Network, NetworkError, NetworkOptions};
use molde_container::{Container, ContainerError};
use molde_image::Store;

use common::web::{can_run, get, httpd, setup};

/// Lines of `ip -o <what>` mentioning `needle`.
fn ip_lines(what: &str, needle: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", what]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn veths_of(c: &Container) -> Vec<String> {
    ip_lines("link", &format!("mv{}", &c.id()[..12]))
}

/// Wait (5 s at most) until no link's line mentions `needle`: the kernel deletes a veth with
/// its container's namespace, shortly after the container's end.
fn links_gone(needle: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while !ip_lines("link", needle).is_empty() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn a_server_is_reached_from_the_host_by_address_and_published_port_and_from_another_container_by_address_and_name()
 {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let nft = || {
        Command::new("nft")
            .args(["--stateless", "list", "ruleset"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    let rules_before = nft();
    let net = Network::create(&store, "backend").unwrap();
    let bridge = net.bridge().to_owned();
    assert_eq!(ip_lines("link", &bridge).len(), 1, "the bridge exists");
    let mut server = httpd(&store, &image)
        .join(&net)
        .alias("web")
        .publish(8080)
        .create()
        .unwrap();
    server.start().unwrap();
    let ip = server.ip().unwrap();
    assert!(net.subnet().contains(&ip), "{ip} in {}", net.subnet());
    assert_ne!(ip, net.gateway());
    assert_eq!(veths_of(&server).len(), 1, "one veth on the host");
    // From the host: at its own address, and at the published port on 127.0.0.1.
    let body = get(SocketAddr::new(ip.into(), 8080), Duration::from_secs(5));
    assert!(body.contains("hello from molde"), "{body}");
    let published = server.host_addr(8080).unwrap();
    assert_eq!(published.ip(), Ipv4Addr::LOCALHOST);
    assert!(get(published, Duration::from_secs(5)).contains("hello from molde"));
    // From another container: by address and by name (hosts file kept current).
    let script = format!(
        "wget -q -O - http://{ip}:8080/ && wget -q -O - http://web:8080/ && cat /etc/hosts"
    );
    let out = Container::builder(&store, &image)
        .join(&net)
        .command("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status
            == molde_container::Status::Exited {
                code: Some(0),
                signal: None
            },
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("hello from molde").count(), 2, "{stdout}");
    assert!(stdout.contains(&format!("{ip}\t")), "{stdout}");
    // Teardown: no veth, no address left; the network refuses removal while in use.
    match net.clone().remove(&store) {
        Err(NetworkError::InUse { containers, .. }) => {
            assert_eq!(containers, [server.id().to_owned()]);
        }
        other => panic!("removing a network in use: {other:?}"),
    }
    let id = server.id().to_owned();
    server.remove().unwrap();
    assert!(links_gone(&format!("mv{}", &id[..12])), "its veth is gone");
    assert!(net.allocations(&store).unwrap().is_empty());
    net.remove(&store).unwrap();
    assert!(ip_lines("link", &bridge).is_empty(), "the bridge is gone");
    assert!(ip_lines("addr", &bridge).is_empty(), "its address too");
    assert_eq!(nft(), rules_before, "no firewall rule was touched");
    assert!(Network::list(&store).unwrap().is_empty());
}

#[test]
fn two_containers_of_one_image_both_serve_8080_each_at_its_own_address() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "seed").unwrap();
    let mut a = httpd(&store, &image)
        .join(&net)
        .publish_all()
        .start()
        .unwrap();
    // The image EXPOSEs 8080/tcp.
    let published = a
        .host_addr(8080)
        .expect("publish_all publishes EXPOSEd ports");
    assert!(get(published, Duration::from_secs(5)).contains("hello"));
    let b = httpd(&store, &image).join(&net).start().unwrap();
    let (ia, ib) = (a.ip().unwrap(), b.ip().unwrap());
    assert_ne!(ia, ib);
    for ip in [ia, ib] {
        assert!(get(SocketAddr::new(ip.into(), 8080), Duration::from_secs(5)).contains("hello"));
    }
    // The container sees its own address on eth0.
    let out = a
        .exec("/bin/ip")
        .args(["-o", "-4", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&ia.to_string()),
        "{out:?}"
    );
    a.stop(Duration::from_millis(100)).unwrap();
    assert!(
        links_gone(&format!("mv{}", &a.id()[..12])),
        "a stopped container has no veth"
    );
    // A restart keeps its address.
    a.start().unwrap();
    assert_eq!(a.ip(), Some(ia));
    assert!(get(SocketAddr::new(ia.into(), 8080), Duration::from_secs(5)).contains("hello"));
    a.remove().unwrap();
    b.remove().unwrap();
    net.remove(&store).unwrap();
}

#[test]
fn udp_echo_through_a_published_port() {
    if !can_run() {
        return;
    }
    if !common::require(
        Path::new("/usr/bin/socat").exists(),
        "needs socat (Debian package socat) for a UDP echo server",
    ) {
        return;
    }
    let (_dir, store, image) = setup();
    let c = Container::builder(&store, &image)
        .command("/usr/bin/socat")
        .args(["UDP4-RECVFROM:5353,fork", "PIPE"])
        .publish_udp(5353)
        .start()
        .unwrap();
    let port = c.host_port_udp(5353).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    let end = Instant::now() + Duration::from_secs(5);
    let n = loop {
        sock.send_to(b"ping\n", ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break n;
        }
        assert!(Instant::now() < end, "no UDP echo");
    };
    assert_eq!(&buf[..n], b"ping\n");
    c.remove().unwrap();
    Network::open(&store, molde_container::network::DEFAULT_NETWORK)
        .unwrap()
        .remove(&store)
        .unwrap();
}

#[test]
fn bad_input_is_a_typed_error_and_makes_nothing() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    assert!(matches!(
        Network::create(&store, "Bad Name"),
        Err(NetworkError::InvalidName { .. })
    ));
    assert!(matches!(
        Network::create_with(&store, "x", NetworkOptions::new().subnet("8.8.8.0/24")),
        Err(NetworkError::InvalidSubnet { .. })
    ));
    // The host's own route (loopback is always there).
    assert!(matches!(
        Network::create_with(&store, "lo", NetworkOptions::new().subnet("127.0.0.0/8")),
        Err(NetworkError::InvalidSubnet { .. })
    ));
    let small = Network::create_with(
        &store,
        "small",
        NetworkOptions::new().subnet("10.254.7.0/29"),
    )
    .unwrap();
    assert!(matches!(
        Network::create_with(
            &store,
            "over",
            NetworkOptions::new().subnet("10.254.7.0/24")
        ),
        Err(NetworkError::SubnetOverlaps { .. })
    ));
    assert!(matches!(
        Network::create(&store, "small"),
        Err(NetworkError::Exists { .. })
    ));
    // A /29 holds 6 hosts: the gateway and 5 containers.
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(
            Container::builder(&store, &image)
                .join(&small)
                .create()
                .unwrap(),
        );
    }
    let before = std::fs::read_dir(store.layout().state().join("containers"))
        .unwrap()
        .count();
    match Container::builder(&store, &image).join(&small).create() {
        Err(ContainerError::Network(NetworkError::PoolExhausted { .. })) => {}
        other => panic!("exhausted pool: {other:?}"),
    }
    let after = std::fs::read_dir(store.layout().state().join("containers"))
        .unwrap()
        .count();
    assert_eq!(before, after, "no container half made");
    // A port already bound on the host: the start fails, nothing stays (no veth).
    drop(made.pop());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = Container::builder(&store, &image)
        .command("/bin/sleep")
        .arg("30")
        .publish_port(molde_container::network::PublishedPort {
            container_port: 80,
            protocol: molde_container::network::Protocol::Tcp,
            host: taken.local_addr().unwrap(),
        })
        .join(&small)
        .create()
        .unwrap();
    match c.start() {
        Err(ContainerError::Network(NetworkError::PortUnavailable { .. })) => {}
        other => panic!("port taken: {other:?}"),
    }
    assert!(
        links_gone(&format!("mv{}", &c.id()[..12])),
        "no veth after a failed start"
    );
    drop(c);
    drop(made);
    small.remove(&store).unwrap();
}

#[test]
fn fifty_containers_on_one_network_have_fifty_addresses_each_answering() {
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "fifty").unwrap();
    let mut all = Vec::new();
    for _ in 0..50 {
        all.push(httpd(&store, &image).join(&net).start().unwrap());
    }
    let mut ips: Vec<Ipv4Addr> = all.iter().map(|c| c.ip().unwrap()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50);
    for ip in &ips {
        assert!(
            get(SocketAddr::new((*ip).into(), 8080), Duration::from_secs(10)).contains("hello")
        );
    }
    let ids: Vec<String> = all.iter().map(|c| c.id()[..12].to_owned()).collect();
    for c in all {
        c.remove().unwrap();
    }
    for id in ids {
        assert!(links_gone(&format!("mv{id}")), "veth of {id} left");
    }
    assert!(net.allocations(&store).unwrap().is_empty());
    net.remove(&store).unwrap();
}

const HOST_ENV: &str = "MOLDE_TEST_NET_HOST_STORE";

#[test]
fn a_sigkilled_host_leaves_no_veth_nor_port_and_recover_releases_what_nobody_holds() {
    if let Some(root) = std::env::var_os(HOST_ENV) {
        let store = Store::open(std::path::PathBuf::from(root)).unwrap();
        let image = store
            .resolve(&std::env::var("MOLDE_TEST_NET_IMAGE").unwrap())
            .unwrap();
        let net = Network::open(&store, "killed").unwrap();
        let c = httpd(&store, &image)
            .join(&net)
            .publish(8080)
            .start()
            .unwrap();
        println!("CONTAINER {} {}", c.id(), c.host_port(8080).unwrap());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "killed").unwrap();
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_sigkilled_host_leaves_no_veth_nor_port_and_recover_releases_what_nobody_holds",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_ENV, store.root())
        .env("MOLDE_TEST_NET_IMAGE", image.id().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    let (id, port) = loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "host ended"
        );
        if let Some(at) = line.find("CONTAINER ") {
            let rest = line[at + "CONTAINER ".len()..].trim();
            let (id, port) = rest.split_once(' ').unwrap();
            break (id.to_owned(), port.parse::<u16>().unwrap());
        }
    };
    let published = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(get(published, Duration::from_secs(5)).contains("hello"));
    assert_eq!(ip_lines("link", &format!("mv{}", &id[..12])).len(), 1);
    // This process did not start it, and knows where its port is.
    let seen = Container::open(&store, &id).unwrap();
    assert_eq!(seen.host_port(8080), Some(port));
    assert_eq!(seen.published_ports().len(), 1);
    host.kill().unwrap();
    host.wait().unwrap();
    // The kernel ends the container (parent-death signal), its namespace and so its veth;
    // the forwarder's sockets went with the host.
    let end = Instant::now() + Duration::from_secs(10);
    while !ip_lines("link", &format!("mv{}", &id[..12])).is_empty() {
        assert!(Instant::now() < end, "the veth outlived its container");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(TcpStream::connect(published).is_err(), "the port is free");
    assert_eq!(seen.host_port(8080), None, "its run ended: no port");
    // An allocation whose container is gone (a create cut short), and the container's own:
    // recover releases the first, the container keeps its address until removed.
    let ips = store
        .layout()
        .state()
        .join("networks/killed/ips/")
        .join(Ipv4Addr::from(u32::from(net.gateway()) + 199).to_string());
    std::fs::write(
        &ips,
        r#"{"owner":"0000000000000000000000000000000000000000000000000000000000000000","names":[],"hosts":null}"#,
    )
    .unwrap();
    assert_eq!(net.allocations(&store).unwrap().len(), 2);
    let again = Store::open(store.root()).unwrap();
    molde_container::recover(&again).unwrap();
    let left = net.allocations(&again).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.owner, id);
    Container::open(&again, &id).unwrap().remove().unwrap();
    assert!(net.allocations(&again).unwrap().is_empty());
    let bridge = net.bridge().to_owned();
    net.remove(&again).unwrap();
    assert!(ip_lines("link", &bridge).is_empty());
    assert!(ip_lines("addr", &bridge).is_empty());
}

const OPEN_ENV: &str = "MOLDE_TEST_NET_OPEN";

#[test]
fn published_ports_are_known_to_every_handle_and_process_and_end_with_the_run() {
    if let Some(spec) = std::env::var_os(OPEN_ENV) {
        // The other process: opens the container by id and goes through its published port.
        let spec = spec.into_string().unwrap();
        let (root, id) = spec.split_once('\n').unwrap();
        let store = Store::open(std::path::PathBuf::from(root)).unwrap();
        let c = Container::open(&store, id).unwrap();
        let addr = c.host_addr(8080).expect("the port of a running container");
        let body = get(addr, Duration::from_secs(5));
        println!(
            "OPENED {} {}",
            addr.port(),
            body.contains("hello from molde")
        );
        return;
    }
    if !can_run() {
        return;
    }
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "ports").unwrap();
    let c = httpd(&store, &image)
        .join(&net)
        .publish(8080)
        .start()
        .unwrap();
    let port = c.host_port(8080).unwrap();
    // The handle that started it lets it go: its port is still served, by this process.
    let id = c.keep();
    let published = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(get(published, Duration::from_secs(5)).contains("hello"));
    let mut again = Container::open(&store, &id).unwrap();
    assert_eq!(again.host_port(8080), Some(port));
    // Another process opens it and finds the same port, which answers it.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "published_ports_are_known_to_every_handle_and_process_and_end_with_the_run",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OPEN_ENV, format!("{}\n{id}", store.root().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("OPENED {port} true")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopped through another handle: the forwarder ends with the run, and no handle names
    // a port any more.
    again.stop(Duration::from_millis(100)).unwrap();
    assert_eq!(again.host_port(8080), None);
    assert_eq!(Container::open(&store, &id).unwrap().host_port(8080), None);
    let end = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(published).is_ok() {
        assert!(Instant::now() < end, "the forwarder outlived the run");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A restart publishes again, on a new ephemeral port, known to every handle.
    again.start().unwrap();
    let port2 = again.host_port(8080).unwrap();
    assert_eq!(
        Container::open(&store, &id).unwrap().host_port(8080),
        Some(port2)
    );
    assert!(
        get(
            SocketAddr::from(([127, 0, 0, 1], port2)),
            Duration::from_secs(5)
        )
        .contains("hello")
    );
    again.remove().unwrap();
    net.remove(&store).unwrap();
}
