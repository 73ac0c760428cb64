//! Rootless networking: pasta (Debian's `passt`) attached to the container's network
//! namespace, as podman does. The launcher calls [`attach`] while the child waits for its
//! go-ahead (its user and network namespaces exist, its program has not run): pasta joins
//! them as this user, makes a tap device with the host's address and routes
//! (`--config-net`), binds the published ports on the host and forks into the background
//! once ready. It exits by itself when the container's namespace goes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// The address pasta gives the container (its `--address`, and the one its hosts file
/// names): the host's address on the interface of its first IPv4 default route, as pasta
/// itself would pick it. `None` where the host has no default route (or netlink cannot be
/// read): pasta is then left to its own choice.
pub(crate) fn outbound() -> Option<(Ipv4Addr, u8)> {
    super::netlink::Rtnl::open()
        .and_then(|mut r| r.outbound_v4())
        .ok()
        .flatten()
}

/// The namespaces pasta attaches to.
#[derive(Debug)]
pub(crate) enum Target<'a> {
    /// Those of this process (a container's, waiting for its go-ahead): its user and network
    /// namespaces.
    Pid(u32),
    /// A network namespace made for a container on rootless networks (see the `rootless` module),
    /// with the user namespace that owns it, both handed to pasta as descriptors it inherits.
    /// Its tap is `tap0`: `eth<n>` are the networks' veths.
    Netns {
        /// The user namespace.
        user: BorrowedFd<'a>,
        /// The network namespace.
        net: BorrowedFd<'a>,
    },
}

/// A running pasta; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Pasta {
    pidfd: std::os::fd::OwnedFd,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let _ = crate::launch::pidfd::send_signal(self.pidfd.as_raw_fd(), libc::SIGTERM);
    }
}

/// Attach pasta to the namespaces of `target` with `ports` published at `hosts`, the container's
/// address `address` (see [`outbound`]), and wait until it is ready (its pid file written).
///
/// pasta runs in the foreground as the child of a thread of its own (`molde-pasta`), which
/// waits for it: its parent-death signal (SIGKILL) is armed against that thread, so a killed
/// host takes it along; [`Pasta`]'s drop stops it when the container ends. (pasta left to
/// daemonize keeps the namespace open itself, and so never sees it go.)
pub(crate) fn attach(
    pasta: &std::path::Path,
    target: &Target<'_>,
    ports: &[PublishedPort],
    hosts: &[SocketAddr],
    address: Option<(Ipv4Addr, u8)>,
    pid_file: &std::path::Path,
) -> Result<Pasta, NetworkError> {
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
    let _ = std::fs::remove_file(pid_file);
    let mut cmd = Command::new(pasta);
    cmd.args(["--config-net", "--quiet", "--foreground", "--no-map-gw"])
        .args(["-t", &spec(Protocol::Tcp), "-u", &spec(Protocol::Udp)])
        .args(["-T", "none", "-U", "none"]);
    if let Some((ip, prefix)) = address {
        cmd.args(["-a", &ip.to_string(), "-n", &prefix.to_string()]);
    }
    cmd.arg("-P").arg(pid_file);
    match target {
        Target::Pid(pid) => {
            cmd.arg(pid.to_string());
        }
        Target::Netns { user, net } => {
            let path = |fd: &BorrowedFd<'_>| format!("/proc/self/fd/{}", fd.as_raw_fd());
            cmd.args(["--ns-ifname", "tap0", "--no-netns-quit", "--userns"])
                .arg(path(user))
                .arg("--netns")
                .arg(path(net));
        }
    }
    let inherited: Vec<i32> = match target {
        Target::Pid(_) => Vec::new(),
        Target::Netns { user, net } => vec![user.as_raw_fd(), net.as_raw_fd()],
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl and fcntl are async-signal-safe; they set this child's parent-death
    // signal and let it inherit the namespaces' descriptors (this child's copies only).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &inherited {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let file = pid_file.to_owned();
    std::thread::Builder::new()
        .name("molde-pasta".into())
        .spawn(move || run(cmd, &file, &tx))
        .map_err(|e| NetworkError::Pasta {
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    rx.recv().unwrap_or_else(|_| {
        Err(NetworkError::Pasta {
            status: "lost".into(),
            stderr: String::new(),
        })
    })
}

/// The `molde-pasta` thread: start pasta, report when it is ready (or how it failed), then
/// wait for its end.
fn run(
    mut cmd: Command,
    pid_file: &std::path::Path,
    tx: &std::sync::mpsc::Sender<Result<Pasta, NetworkError>>,
) {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(match e.kind() {
                std::io::ErrorKind::NotFound => NetworkError::PastaMissing,
                _ => NetworkError::Pasta {
                    status: "not started".into(),
                    stderr: e.to_string(),
                },
            }));
            return;
        }
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            let _ = tx.send(Err(NetworkError::Pasta {
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            }));
            return;
        }
        if pid_file.exists() || std::time::Instant::now() > end {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pidfd = match crate::launch::pidfd::open(child.id()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = tx.send(Err(NetworkError::Pasta {
                status: "lost".into(),
                stderr: e.to_string(),
            }));
            return;
        }
    };
    let _ = tx.send(Ok(Pasta { pidfd }));
    let _ = child.wait();
}
