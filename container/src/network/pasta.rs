//! Rootless networking: pasta (Debian's `passt`) attached to the container's network
//! namespace, as podman does. The launcher calls [`attach`] while the child waits for its
//! go-ahead (its user and network namespaces exist, its program has not run): pasta joins
//! them as this user, makes a tap device with the host's address and routes
//! (`--config-net`), binds the published ports on the host and forks into the background
//! once ready. It exits by itself when the container's namespace goes.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::NetworkError;
use super::publish::{Protocol, PublishedPort};

/// The pasta binary along `PATH`, or [`NetworkError::PastaMissing`].
pub(crate) fn find() -> Result<PathBuf, NetworkError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("pasta"))
        .find(|p| p.is_file())
        .ok_or(NetworkError::PastaMissing)
}

/// The host address each of `ports` will be published on: a port 0 is given an ephemeral
/// port now (bound and released: pasta binds it again when it starts). A port that cannot
/// be bound is [`NetworkError::PortUnavailable`].
pub(crate) fn choose_ports(ports: &[PublishedPort]) -> Result<Vec<SocketAddr>, NetworkError> {
    ports
        .iter()
        .map(|p| {
            let err = |source| NetworkError::PortUnavailable {
                addr: p.host,
                source,
            };
            match p.protocol {
                Protocol::Tcp => TcpListener::bind(p.host).and_then(|l| l.local_addr()),
                Protocol::Udp => UdpSocket::bind(p.host).and_then(|u| u.local_addr()),
            }
            .map_err(err)
        })
        .collect()
}

/// Attach pasta to the namespaces of `pid` with `ports` published at `hosts`.
pub(crate) fn attach(
    pasta: &std::path::Path,
    pid: u32,
    ports: &[PublishedPort],
    hosts: &[SocketAddr],
) -> Result<(), NetworkError> {
    let spec = |protocol| {
        let list: Vec<String> = ports
            .iter()
            .zip(hosts)
            .filter(|(p, _)| p.protocol == protocol)
            .map(|(p, h)| format!("{}/{}:{}", h.ip(), h.port(), p.container_port))
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(",")
        }
    };
    let out = Command::new(pasta)
        .args(["--config-net", "--quiet", "--no-map-gw"])
        .args(["-t", &spec(Protocol::Tcp), "-u", &spec(Protocol::Udp)])
        .args(["-T", "none", "-U", "none"])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NetworkError::PastaMissing,
            _ => NetworkError::Pasta {
                status: "not started".into(),
                stderr: e.to_string(),
            },
        })?;
    if !out.status.success() {
        return Err(NetworkError::Pasta {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
