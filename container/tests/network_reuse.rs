//! An address handed out again at once: httpd containers on one bridge network, created,
//! asked through their published port and at their address, and removed, one after the
//! other, so each takes the address (and the MAC) its predecessor just left.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use molde_container::network::Network;

use common::web::{can_run, httpd, setup};

/// How long an answer may take before it counts as a hang. A lost answer never comes (15 s
/// and more). Packets sent to a container whose bridge port the kernel has not yet enabled
/// (its link-state work runs a little after the veth is up) are lost and sent again after
/// 1 s: molde's veths made ahead are up in time, but where the kernel (before 6.2) renames
/// only links that are down, a veth goes down and up again at start.
const HANG: Duration = Duration::from_secs(3);

/// One GET with `HANG` timeouts: Ok(true) on a 200, Ok(false) on anything else quick
/// (refused, reset, closed: the server is not up yet), Err on a hang.
fn get_once(addr: SocketAddr) -> Result<bool, std::io::Error> {
    let mut s = match TcpStream::connect_timeout(&addr, HANG) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Err(e),
        Err(_) => return Ok(false),
    };
    s.set_read_timeout(Some(HANG))?;
    s.set_write_timeout(Some(HANG))?;
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return Ok(false);
    }
    let mut got = String::new();
    match s.read_to_string(&mut got) {
        Ok(_) => Ok(got.contains(" 200 ")),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(e),
        Err(_) => Ok(false),
    }
}

fn show(cmd: &[&str]) -> String {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// GET `addr` until a 200 (10 s at most); the hangs met on the way, with what the host saw
/// at the first.
fn answered(addr: SocketAddr, what: &str, bridge: &str, hangs: &mut Vec<String>) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match get_once(addr) {
            Ok(true) => return true,
            Ok(false) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                let mut seen = format!("{what} {addr} hung: {e}\n");
                eprint!("{seen}");
                if hangs.is_empty() {
                    seen += &show(&["ip", "-o", "link", "show", "master", bridge]);
                    seen += &show(&["bridge", "fdb", "show", "br", bridge]);
                    seen += &show(&["ip", "neigh", "show", "dev", bridge]);
                    seen += &show(&["ss", "-tanoi", "( dport = :8080 )"]);
                }
                hangs.push(seen);
            }
        }
    }
    false
}

#[test]
fn an_address_taken_again_at_once_answers_every_time() {
    if !can_run() {
        return;
    }
    let cycles: usize = std::env::var("MOLDE_REUSE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "reuse").unwrap();
    let mut hangs = Vec::new();
    let mut silent = 0;
    let started = Instant::now();
    for n in 0..cycles {
        let mut c = httpd(&store, &image)
            .join(&net)
            .publish(8080)
            .create()
            .unwrap();
        c.start().unwrap();
        let ip = c.ip().unwrap();
        let before = hangs.len();
        let ok = answered(
            c.host_addr(8080).unwrap(),
            "published",
            net.bridge(),
            &mut hangs,
        ) && answered(
            SocketAddr::new(ip.into(), 8080),
            "direct",
            net.bridge(),
            &mut hangs,
        );
        if !ok {
            silent += 1;
        }
        if hangs.len() > before {
            eprintln!("cycle {n} ({ip}): {} hang(s)", hangs.len() - before);
        }

        c.remove().unwrap();
    }
    eprintln!(
        "{cycles} cycles in {:?}: {} hangs, {silent} never answered",
        started.elapsed(),
        hangs.len()
    );
    net.remove(&store).unwrap();
    assert!(
        hangs.is_empty() && silent == 0,
        "{} hung connection(s), {silent} container(s) never answered; first:\n{}",
        hangs.len(),
        hangs.first().map(String::as_str).unwrap_or("")
    );
}

/// The bridge's hardware address, as the kernel reports it.
fn bridge_mac(bridge: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Run `ip` with `args`, asserting it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// Connect to `addr` (retried while refused, 5 s at most) and read what comes until the end
/// (5 s at most).
fn read_from(addr: SocketAddr, port_leaves: impl FnOnce()) -> std::io::Result<String> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    port_leaves();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got = String::new();
    s.read_to_string(&mut got)?;
    Ok(got)
}

/// Ports that come and go leave the bridge's address alone, so a container that has talked
/// to its gateway goes on reaching it. (Linux gives a bridge whose address was never set the
/// lowest of its ports' addresses: here, that of a port which then leaves, as a veth made
/// ahead or a container's does. The container had learnt it for its gateway when the host
/// connected, and its answer, sent to an address no longer the bridge's, was lost: a hang.)
#[test]
fn ports_that_come_and_go_leave_the_bridges_address_and_an_answer_arrives() {
    if !can_run() || !common::require(common::have_tool("ip"), "needs ip (iproute2)") {
        return;
    }
    let (_dir, store, image) = setup();
    let net = Network::create(&store, "steady").unwrap();
    let bridge = net.bridge().to_owned();
    let before = bridge_mac(&bridge);
    // A port with an address lower than any other joins.
    let port = format!("mrt{}", std::process::id() % 1_000_000);
    let peer = format!("{port}p");
    ip(&[
        "link",
        "add",
        &port,
        "address",
        "00:00:00:00:00:02",
        "type",
        "veth",
        "peer",
        "name",
        &peer,
    ]);
    ip(&["link", "set", &port, "master", &bridge]);
    let joined = bridge_mac(&bridge);
    // A server that answers a second after a connection.
    let c = molde_container::Container::builder(&store, &image)
        .join(&net)
        .command("/bin/nc")
        .args([
            "-l",
            "-p",
            "8080",
            "-e",
            "/bin/sh",
            "-c",
            "sleep 1; echo pong",
        ])
        .stdout(molde_container::Stdio::null())
        .stderr(molde_container::Stdio::null())
        .start()
        .unwrap();
    let mut left = String::new();
    // Connected (the container has learnt its gateway's address), the port leaves.
    let got = read_from(SocketAddr::new(c.ip().unwrap().into(), 8080), || {
        ip(&["link", "del", &port]);
        left = bridge_mac(&bridge);
    });
    c.remove().unwrap();
    net.remove(&store).unwrap();
    assert_eq!(
        got.as_ref().ok().map(String::as_str),
        Some("pong\n"),
        "the answer was lost ({got:?}): the bridge's address was {before}, {joined} with the \
         port, {left} once it left"
    );
    assert_eq!(
        [&joined, &left],
        [&before, &before],
        "the bridge's address moved"
    );
}
