//! Published ports, the way docker-proxy and rootlesskit do it: a userspace forwarder in the
//! process that started the container. For each published port a socket is bound on the
//! host (127.0.0.1 and an ephemeral port unless told otherwise) *before* the container
//! starts, so a port already taken is a typed error and nothing is left half made; a thread
//! accepts and relays each connection (TCP) or datagram (UDP) to the container's address.
//!
//! Why not DNAT (nftables): publishing on 127.0.0.1 by DNAT needs `route_localnet=1` on the
//! bridge and a masquerade rule (the container cannot answer 127.0.0.1), a host-wide change
//! of the kernel's routing policy; rules live in the kernel and outlive a killed host process
//! (a sweep must find them), while a forwarder's sockets die with it. The forwarder costs a
//! thread per connection and a copy per byte: `publish-ready` and the figures in
//! docs/benchmarks.md measure it. Rootless containers get their ports from pasta instead.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NetworkError;

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A port of the container published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The host address and port to listen on; port 0 picks an ephemeral one at start.
    pub host: SocketAddr,
}

impl PublishedPort {
    /// `port`/`protocol` of the container on an ephemeral port of the host's 127.0.0.1.
    pub fn local(port: u16, protocol: Protocol) -> PublishedPort {
        PublishedPort {
            container_port: port,
            protocol,
            host: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        }
    }
}

/// The listening sockets of one start's published ports, bound but not yet serving.
#[derive(Debug)]
pub(crate) enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Bind the host side of `port`.
pub(crate) fn bind(port: &PublishedPort) -> Result<(Bound, SocketAddr), NetworkError> {
    let err = |source| NetworkError::PortUnavailable {
        addr: port.host,
        source,
    };
    let bound = match port.protocol {
        Protocol::Tcp => Bound::Tcp(TcpListener::bind(port.host).map_err(err)?),
        Protocol::Udp => Bound::Udp(UdpSocket::bind(port.host).map_err(err)?),
    };
    let addr = match &bound {
        Bound::Tcp(l) => l.local_addr(),
        Bound::Udp(u) => u.local_addr(),
    }
    .map_err(err)?;
    Ok((bound, addr))
}

/// A running forwarder; dropping it stops it (open connections run to their end).
#[derive(Debug)]
pub(crate) struct Forwarder {
    stop: Arc<AtomicBool>,
    /// The TCP listener, shut down to wake its accept.
    listener: Option<Arc<TcpListener>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(l) = &self.listener {
            // Linux: shutting down a listening socket makes a blocked accept return.
            // SAFETY: a plain syscall on a descriptor the Arc keeps open.
            unsafe {
                libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&**l), libc::SHUT_RDWR);
            }
        }
    }
}

/// Serve `bound`, relaying to `target`.
pub(crate) fn serve(bound: Bound, target: SocketAddr) -> io::Result<Forwarder> {
    let stop = Arc::new(AtomicBool::new(false));
    match bound {
        Bound::Tcp(l) => {
            let l = Arc::new(l);
            let (listener, flag) = (l.clone(), stop.clone());
            std::thread::Builder::new()
                .name("molde-publish".into())
                .spawn(move || accept_loop(&listener, target, &flag))?;
            Ok(Forwarder {
                stop,
                listener: Some(l),
            })
        }
        Bound::Udp(u) => {
            u.set_read_timeout(Some(Duration::from_millis(200)))?;
            let flag = stop.clone();
            std::thread::Builder::new()
                .name("molde-publish-udp".into())
                .spawn(move || udp_loop(u, target, flag))?;
            Ok(Forwarder {
                stop,
                listener: None,
            })
        }
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = std::thread::Builder::new()
            .name("molde-relay".into())
            .spawn(move || relay(client, target));
    }
}

/// Copy both ways between `client` and a new connection to `target` until both ends close.
fn relay(client: TcpStream, target: SocketAddr) {
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = std::thread::Builder::new()
        .name("molde-relay".into())
        .spawn(move || copy_then_close(u2, c2));
    copy_then_close(client, upstream);
    if let Ok(t) = back {
        let _ = t.join();
    }
}

/// Copy `from` to `to` until its end, then close `to` for writing. Through a 256 KiB buffer:
/// `io::copy`'s 8 KiB made a 64 MiB transfer 8192 reads and writes, each a wake-up of this
/// thread (`publish-throughput` in docs/benchmarks-analysis.md).
fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match io::Read::read(&mut from, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if io::Write::write_all(&mut to, &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One upstream socket per client address; a thread per upstream sends its replies back.
fn udp_loop(socket: UdpSocket, target: SocketAddr, stop: Arc<AtomicBool>) {
    let socket = Arc::new(socket);
    let mut peers: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let up = match peers.entry(client) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => match upstream(client, target, &socket, &stop) {
                Ok(up) => v.insert(up),
                Err(_) => continue,
            },
        };
        let _ = up.send(&buf[..n]);
    }
}

/// A socket connected to `target` for `client`, with a thread relaying its replies back
/// through `back` until `stop`.
fn upstream(
    client: SocketAddr,
    target: SocketAddr,
    back: &Arc<UdpSocket>,
    stop: &Arc<AtomicBool>,
) -> io::Result<UdpSocket> {
    let up = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))?;
    up.connect(target)?;
    let reader = up.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_millis(200)))?;
    let (back, stop) = (back.clone(), stop.clone());
    std::thread::Builder::new()
        .name("molde-publish-udp".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            // Until the forwarder stops: a refusal (nothing listened yet) or a quiet spell
            // does not end the relay.
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = reader.recv(&mut buf)
                    && back.send_to(&buf[..n], client).is_err()
                {
                    return;
                }
            }
        })?;
    Ok(up)
}
