//! A container's networks and published ports, glued to its lifecycle: addresses allocated
//! at create and released at remove; at each start the network namespace plumbed (root) or
//! pasta attached (rootless), and the published ports bound before the program runs and
//! served while it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use molde_image::{Image, Store};

use super::builder::ContainerBuilder;
use crate::error::{ContainerError, io_err};
use crate::launch::{BeforeRun, ContainerMount, MountKind, Spec};
use crate::network::publish::{self, Bound, Forwarder};
use crate::network::{
    Allocation, Attached, Attachments, Network, NetworkError, Protocol, PublishedPort, attach,
    hosts, ipam, pasta,
};
use crate::record::ContainerPaths;

/// What the builder asked for.
#[derive(Debug, Default)]
pub(crate) struct Requested {
    pub(crate) joins: Vec<Network>,
    pub(crate) aliases: Vec<String>,
    pub(crate) publish: Vec<PublishedPort>,
    pub(crate) publish_all: bool,
}

/// The ports `image` EXPOSEs (`8080/tcp`, `53/udp`, `80`), published on 127.0.0.1.
fn exposed(image: &Image) -> Vec<PublishedPort> {
    image
        .exposed_ports()
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let protocol = match proto {
                "udp" => Protocol::Udp,
                _ => Protocol::Tcp,
            };
            Some(PublishedPort::local(port.parse().ok()?, protocol))
        })
        .collect()
}

/// At create, in the container's new directory: check what was asked, allocate an address
/// on each network, write the hosts and resolv.conf files. On error nothing stays allocated.
pub(crate) fn create(
    b: &ContainerBuilder,
    id: &str,
    paths: &ContainerPaths,
) -> Result<Attachments, ContainerError> {
    let req = &b.net;
    let mut publish = req.publish.clone();
    if req.publish_all {
        publish.extend(exposed(&b.image));
    }
    if req.joins.is_empty() && publish.is_empty() {
        return Ok(Attachments::default());
    }
    if b.network == crate::launch::Network::Host {
        return Err(NetworkError::HostNetwork.into());
    }
    if !molde_layerfs::privilege::is_privileged() {
        if !req.joins.is_empty() {
            return Err(NetworkError::NeedsRoot.into());
        }
        pasta::find()?;
        return Ok(Attachments {
            networks: Vec::new(),
            publish,
            user_mode: true,
        });
    }
    let joins = if req.joins.is_empty() {
        vec![Network::default_network(&b.store)?]
    } else {
        req.joins.clone()
    };
    let mut names: Vec<String> = b.hostname.iter().cloned().collect();
    names.push(id[..12].to_owned());
    names.extend(req.aliases.iter().cloned());
    let hosts_path = paths.dir().join("hosts");
    std::fs::write(&hosts_path, hosts::initial(&names)).map_err(io_err("writing", &hosts_path))?;
    let resolv = paths.dir().join("resolv.conf");
    std::fs::write(&resolv, hosts::resolv_conf()).map_err(io_err("writing", &resolv))?;
    let alloc = Allocation {
        owner: id.to_owned(),
        names,
        hosts: Some(hosts_path),
    };
    let mut networks = Vec::new();
    for net in &joins {
        match ipam::allocate(&b.store, net, &alloc) {
            Ok(ip) => networks.push(Attached {
                network: net.name().to_owned(),
                ip,
            }),
            Err(e) => {
                let _ = ipam::release(&b.store, id);
                return Err(e.into());
            }
        }
    }
    Ok(Attachments {
        networks,
        publish,
        user_mode: false,
    })
}

/// At remove: release the container's addresses.
pub(crate) fn release(store: &Store, id: &str) -> Result<(), ContainerError> {
    ipam::release(store, id).map_err(Into::into)
}

/// One start's networking, between the spec and the running process.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    bound: Vec<(PublishedPort, Bound, SocketAddr)>,
    target: Option<Ipv4Addr>,
    user_mode: Vec<(PublishedPort, SocketAddr)>,
    pasta_error: Arc<Mutex<Option<NetworkError>>>,
    pasta: Arc<Mutex<Option<pasta::Pasta>>>,
}

/// What a running container's networking holds: its published ports and their forwarders.
#[derive(Debug, Default)]
pub(crate) struct Running {
    pub(crate) ports: Vec<(PublishedPort, SocketAddr)>,
    _forwarders: Vec<Forwarder>,
    _pasta: Option<pasta::Pasta>,
}

/// Before a start: the network namespace plumbed and the ports bound (root), or pasta made
/// ready to attach (rootless), all set in `spec`.
pub(crate) fn prepare(
    store: &Store,
    id: &str,
    paths: &ContainerPaths,
    att: &Attachments,
    spec: &mut Spec,
) -> Result<Pending, ContainerError> {
    let mut pending = Pending::default();
    if att.user_mode {
        let pasta = pasta::find()?;
        let hosts = pasta::choose_ports(&att.publish)?;
        pending.user_mode = att.publish.iter().copied().zip(hosts.clone()).collect();
        let ports = att.publish.clone();
        let (stash, keep) = (pending.pasta_error.clone(), pending.pasta.clone());
        let pid_file = paths.dir().join("pasta.pid");
        spec.before_run = Some(BeforeRun(Box::new(move |pid| {
            match pasta::attach(&pasta, pid, &ports, &hosts, &pid_file) {
                Ok(p) => {
                    if let Ok(mut slot) = keep.lock() {
                        *slot = Some(p);
                    }
                    Ok(())
                }
                Err(e) => {
                    if let Ok(mut slot) = stash.lock() {
                        *slot = Some(e);
                    }
                    Err(std::io::Error::from_raw_os_error(libc::ENETUNREACH))
                }
            }
        })));
        return Ok(pending);
    }
    if att.networks.is_empty() {
        return Ok(pending);
    }
    for (file, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
        spec.mounts.push(ContainerMount {
            target: target.into(),
            kind: MountKind::Bind {
                source: paths.dir().join(file),
                read_only: false,
            },
        });
    }
    let nets = att
        .networks
        .iter()
        .map(|a| Ok((Network::open(store, &a.network)?, a.ip)))
        .collect::<Result<Vec<_>, NetworkError>>()?;
    for p in &att.publish {
        let (bound, addr) = publish::bind(p)?;
        pending.bound.push((*p, bound, addr));
    }
    spec.join_netns = Some(attach::plumb(id, &nets)?);
    pending.target = nets.first().map(|(_, ip)| *ip);
    Ok(pending)
}

impl Pending {
    /// After a failed launch: the typed error pasta left, if that is what failed.
    pub(crate) fn take_error(&self) -> Option<NetworkError> {
        self.pasta_error.lock().ok().and_then(|mut e| e.take())
    }

    /// Once the program runs: serve the published ports.
    pub(crate) fn serve(self) -> Result<Running, ContainerError> {
        if !self.user_mode.is_empty() {
            let pasta = self.pasta.lock().ok().and_then(|mut p| p.take());
            return Ok(Running {
                ports: self.user_mode,
                _forwarders: Vec::new(),
                _pasta: pasta,
            });
        }
        let mut running = Running::default();
        let Some(ip) = self.target else {
            return Ok(running);
        };
        for (p, bound, addr) in self.bound {
            let target = SocketAddr::new(ip.into(), p.container_port);
            let f = publish::serve(bound, target).map_err(|source| NetworkError::Io {
                op: "starting the forwarder of",
                path: addr.to_string().into(),
                source,
            })?;
            running._forwarders.push(f);
            running.ports.push((p, addr));
        }
        Ok(running)
    }
}

impl super::Container {
    /// The host address and port TCP `port` of the container is published on, while it
    /// runs under this handle (the handle that started it serves its ports).
    pub fn host_addr(&self, port: u16) -> Option<SocketAddr> {
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

    /// Every published port of the current run, with its host address.
    pub fn published_ports(&self) -> Vec<(PublishedPort, SocketAddr)> {
        self.net
            .as_ref()
            .map(|n| n.ports.clone())
            .unwrap_or_default()
    }

    fn published(&self, port: u16, protocol: Protocol) -> Option<SocketAddr> {
        let net = self.net.as_ref()?;
        net.ports
            .iter()
            .find(|(p, _)| p.container_port == port && p.protocol == protocol)
            .map(|(_, a)| *a)
    }

    /// The container's address on its first bridge network, if it joined one.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.record.run.network.networks.first().map(|a| a.ip)
    }

    /// The container's address on each of its bridge networks.
    pub fn addresses(&self) -> &[Attached] {
        &self.record.run.network.networks
    }
}
