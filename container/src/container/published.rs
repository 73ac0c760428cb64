//! A running container's published ports: who serves them, for how long, and the record that
//! lets any handle (of this or another process) say where they are.
//!
//! **Who serves them.** The process that started the container: a forwarder thread per port
//! (root, bridge networks) or the pasta process it spawned (rootless). They serve exactly as
//! long as the container's process runs: a `molde-publish-end` thread waits on its pidfd and
//! stops them at its end, whichever handle (of whichever process) stopped it, and also after
//! [`Container::keep`](super::Container::keep) has let the handle go. The container cannot
//! outlive that process (its parent-death signal), so neither can its ports: if the process
//! that published dies, the kernel closes its sockets (pasta follows by its own parent-death
//! signal), the container dies with it and the port is free again at once. Nothing is left
//! to reclaim but a record that says `running`, which the next `molde::open_store` (or any
//! handle that reads it) marks exited.
//!
//! **Where they are.** `<container dir>/ports` (JSON), written at each start that publishes
//! something: the host address of each published port and the pid (with its start time) of
//! the run it belongs to. A handle that did not start the run reads it, and believes it only
//! while that very process lives: a file left by an ended run names a dead process and is
//! ignored.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{ContainerError, io_err};
use crate::network::publish::Forwarder;
use crate::network::{Protocol, PublishedPort, pasta};
use crate::record::ContainerPaths;

/// What serves a run's published ports.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    pub(crate) forwarders: Vec<Forwarder>,
    pub(crate) pasta: Option<pasta::Pasta>,
}

impl Servers {
    fn is_empty(&self) -> bool {
        self.forwarders.is_empty() && self.pasta.is_none()
    }
}

/// What a running container's networking holds: its published ports and what serves them.
#[derive(Debug, Default)]
pub(crate) struct Running {
    pub(crate) ports: Vec<(PublishedPort, SocketAddr)>,
    /// Shared with the `molde-publish-end` thread; `None` once let go ([`Running::leave`]).
    servers: Option<Arc<Mutex<Option<Servers>>>>,
}

impl Running {
    /// `ports`, served by `servers` until the process of `pidfd` ends (or this is dropped).
    pub(crate) fn new(
        ports: Vec<(PublishedPort, SocketAddr)>,
        servers: Servers,
        pidfd: BorrowedFd<'_>,
    ) -> std::io::Result<Running> {
        if servers.is_empty() {
            return Ok(Running {
                ports,
                servers: None,
            });
        }
        let slot = Arc::new(Mutex::new(Some(servers)));
        let fd: OwnedFd = pidfd.try_clone_to_owned()?;
        let watched = slot.clone();
        std::thread::Builder::new()
            .name("molde-publish-end".into())
            .spawn(move || {
                crate::launch::pidfd::poll_exit(&fd, None);
                if let Ok(mut s) = watched.lock() {
                    s.take();
                }
            })?;
        Ok(Running {
            ports,
            servers: Some(slot),
        })
    }

    /// Let the handle go while the ports keep being served, until the process ends.
    pub(crate) fn leave(mut self) {
        self.servers = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(slot) = &self.servers
            && let Ok(mut s) = slot.lock()
        {
            s.take();
        }
    }
}

/// `<container dir>/ports`.
#[derive(Debug, Serialize, Deserialize)]
struct PortsFile {
    pid: u32,
    pid_start: Option<u64>,
    ports: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    port: PublishedPort,
    host: SocketAddr,
}

fn ports_path(paths: &ContainerPaths) -> std::path::PathBuf {
    paths.dir().join("ports")
}

/// Record where the run of `pid` (started at `pid_start`) publishes its ports. Nothing is
/// written for a run that publishes nothing.
pub(crate) fn persist(
    paths: &ContainerPaths,
    running: &Running,
    pid: u32,
    pid_start: Option<u64>,
) -> Result<(), ContainerError> {
    if running.ports.is_empty() {
        return Ok(());
    }
    let file = PortsFile {
        pid,
        pid_start,
        ports: running
            .ports
            .iter()
            .map(|&(port, host)| Entry { port, host })
            .collect(),
    };
    let path = ports_path(paths);
    let tmp = paths.dir().join("ports.tmp");
    let bytes = serde_json::to_vec(&file).map_err(|e| io_err("encoding", &path)(e.into()))?;
    std::fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("renaming", &path))
}

/// The published ports recorded for the run that is live now, if any.
fn recorded(paths: &ContainerPaths) -> Vec<(PublishedPort, SocketAddr)> {
    let Ok(bytes) = std::fs::read(ports_path(paths)) else {
        return Vec::new();
    };
    match serde_json::from_slice::<PortsFile>(&bytes) {
        Ok(f) if crate::record::alive(Some(f.pid), f.pid_start) => {
            f.ports.into_iter().map(|e| (e.port, e.host)).collect()
        }
        _ => Vec::new(),
    }
}

impl super::Container {
    /// The host address and port TCP `port` of the container is published on, while it
    /// runs: from any handle, of this process or another (see [`Self::published_ports`]).
    pub fn host_addr(&self, port: u16) -> Option<std::net::SocketAddr> {
        self.published(port, Protocol::Tcp)
    }

    /// The host port TCP `port` of the container is published on (see [`Self::host_addr`]).
    pub fn host_port(&self, port: u16) -> Option<u16> {
        self.host_addr(port).map(|a| a.port())
    }

    /// The host port UDP `port` of the container is published on.
    pub fn host_port_udp(&self, port: u16) -> Option<u16> {
        self.published(port, Protocol::Udp).map(|a| a.port())
    }

    /// Every published port of the current run, with its host address. The handle that
    /// started the run knows them; any other (opened by [`Container::open`](Self::open), here
    /// or in another process) reads them from the container's record, which it believes only
    /// while the run's process lives. Empty when it does not run.
    pub fn published_ports(&self) -> Vec<(PublishedPort, SocketAddr)> {
        match &self.net {
            Some(n) => n.ports.clone(),
            None => recorded(&self.paths),
        }
    }

    fn published(&self, port: u16, protocol: Protocol) -> Option<SocketAddr> {
        self.published_ports()
            .into_iter()
            .find(|(p, _)| p.container_port == port && p.protocol == protocol)
            .map(|(_, a)| a)
    }
}
