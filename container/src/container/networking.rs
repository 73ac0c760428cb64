//! A container's networks and published ports, glued to its lifecycle: addresses allocated
//! at create and released at remove; at each start the network namespace plumbed (root) or
//! pasta attached (rootless), and the published ports bound before the program runs and
//! served while it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use molde_image::{Image, Store};

use super::builder::ContainerBuilder;
use super::published::{Running, Servers};
use crate::error::{ContainerError, io_err};
use crate::launch::{BeforeRun, ContainerMount, MountKind, Spec};
use crate::network::publish::{self, Bound};
use crate::network::{
    Allocation, Attached, Attachments, Network, NetworkError, Protocol, PublishedPort, attach,
    hosts, ipam, pasta, rootless,
};
use crate::record::ContainerPaths;

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
    // Rootless: pasta gives the way out and the published ports; networks joined are in
    // the store's rootless network namespace (`network::rootless`).
    let rootless = !molde_layerfs::privilege::is_privileged();
    if rootless {
        pasta::find()?;
        if req.joins.is_empty() {
            return Ok(Attachments {
                networks: Vec::new(),
                publish,
                user_mode: true,
            });
        }
    }
    let joins = if req.joins.is_empty() {
        vec![Network::default_network(&b.store)?]
    } else {
        req.joins.clone()
    };
    let mut names: Vec<String> = b.hostname.iter().cloned().collect();
    names.push(id[..12].to_owned());
    names.extend(req.aliases.iter().cloned());
    write_files(paths, &hosts::initial(&names))?;
    let hosts_path = paths.dir().join("hosts");
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
                let _ = crate::network::release(&b.store, id);
                return Err(e.into());
            }
        }
    }
    Ok(Attachments {
        networks,
        publish,
        user_mode: rootless,
    })
}

/// At remove: release the container's addresses.
pub(crate) fn release(store: &Store, id: &str) -> Result<(), ContainerError> {
    crate::network::release(store, id).map_err(Into::into)
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
    if att.user_mode && !att.networks.is_empty() {
        prepare_rootless(store, id, paths, att, spec, &mut pending)?;
        return Ok(pending);
    }
    if att.user_mode {
        let pasta = pasta::find()?;
        let hosts = pasta::choose_ports(&att.publish)?;
        // Its hosts file names it at the address pasta gives it (written at each start: the
        // host's address may have changed since the last).
        let address = pasta::outbound();
        let names: Vec<String> = spec
            .hostname
            .iter()
            .cloned()
            .chain([id[..12].to_owned()])
            .collect();
        write_files(paths, &hosts::user_mode(&names, address.map(|(ip, _)| ip)))?;
        bind_files(paths, spec);
        pending.user_mode = att.publish.iter().copied().zip(hosts.clone()).collect();
        let ports = att.publish.clone();
        let (stash, keep) = (pending.pasta_error.clone(), pending.pasta.clone());
        let pid_file = paths.dir().join("pasta.pid");
        spec.before_run = Some(BeforeRun(Box::new(move |pid| {
            let target = pasta::Target::Pid(pid);
            match pasta::attach(&pasta, &target, &ports, &hosts, address, &pid_file) {
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
    bind_files(paths, spec);
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

/// Before a rootless start on networks: a network namespace in the store's rootless one's
/// user namespace, with veths on the networks' bridges (`network::rootless`), pasta attached
/// to it (the way out, the published ports), and the launch set to join both.
fn prepare_rootless(
    store: &Store,
    id: &str,
    paths: &ContainerPaths,
    att: &Attachments,
    spec: &mut Spec,
    pending: &mut Pending,
) -> Result<(), ContainerError> {
    let pasta = pasta::find()?;
    let hosts = pasta::choose_ports(&att.publish)?;
    let nets = att
        .networks
        .iter()
        .map(|a| Ok((Network::open(store, &a.network)?, a.ip)))
        .collect::<Result<Vec<_>, NetworkError>>()?;
    bind_files(paths, spec);
    let (holder, netns) = {
        // Under the networks' lock: no other process stops the holder meanwhile.
        let _guard = crate::network::lock(store)?;
        let holder = rootless::holder(store)?;
        let netns = rootless::plumb(&holder, id, &nets)?;
        (holder, netns)
    };
    let target = pasta::Target::Netns {
        user: holder.user.as_fd(),
        net: netns.as_fd(),
    };
    let pid_file = paths.dir().join("pasta.pid");
    let running = pasta::attach(
        &pasta,
        &target,
        &att.publish,
        &hosts,
        pasta::outbound(),
        &pid_file,
    )?;
    pending.user_mode = att.publish.iter().copied().zip(hosts).collect();
    if let Ok(mut slot) = pending.pasta.lock() {
        *slot = Some(running);
    }
    spec.join_userns = Some(holder.user);
    spec.join_netns = Some(netns);
    Ok(())
}

/// Write the container's `hosts` (with `hosts`) and `resolv.conf` (the host's resolvers).
fn write_files(paths: &ContainerPaths, hosts: &str) -> Result<(), ContainerError> {
    let resolv = hosts::resolv_conf();
    for (file, content) in [("hosts", hosts), ("resolv.conf", resolv.as_str())] {
        let path = paths.dir().join(file);
        std::fs::write(&path, content).map_err(io_err("writing", &path))?;
    }
    Ok(())
}

/// Bind the container's `hosts` and `resolv.conf` over the image's.
fn bind_files(paths: &ContainerPaths, spec: &mut Spec) {
    for (file, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
        spec.mounts.push(ContainerMount {
            target: target.into(),
            kind: MountKind::Bind {
                source: paths.dir().join(file),
                read_only: false,
            },
        });
    }
}

impl Pending {
    /// After a failed launch: the typed error pasta left, if that is what failed.
    pub(crate) fn take_error(&self) -> Option<NetworkError> {
        self.pasta_error.lock().ok().and_then(|mut e| e.take())
    }

    /// Once the program (of `pidfd`) runs: serve the published ports, until it ends.
    pub(crate) fn serve(self, pidfd: BorrowedFd<'_>) -> Result<Running, ContainerError> {
        let watch_err = |source| NetworkError::Io {
            op: "watching the end of the process of",
            path: "its published ports".into(),
            source,
        };
        let pasta = self.pasta.lock().ok().and_then(|mut p| p.take());
        if !self.user_mode.is_empty() || pasta.is_some() {
            let servers = Servers {
                forwarders: Vec::new(),
                pasta,
            };
            return Ok(Running::new(self.user_mode, servers, pidfd).map_err(watch_err)?);
        }
        let Some(ip) = self.target else {
            return Ok(Running::default());
        };
        let (mut ports, mut servers) = (Vec::new(), Servers::default());
        for (p, bound, addr) in self.bound {
            let target = SocketAddr::new(ip.into(), p.container_port);
            let f = publish::serve(bound, target).map_err(|source| NetworkError::Io {
                op: "starting the forwarder of",
                path: addr.to_string().into(),
                source,
            })?;
            servers.forwarders.push(f);
            ports.push((p, addr));
        }
        Ok(Running::new(ports, servers, pidfd).map_err(watch_err)?)
    }
}

impl super::Container {
    /// The container's address on its first bridge network, if it joined one. Rootless, the
    /// network's other containers reach it there, the host does not (the bridge is in the
    /// store's rootless network namespace): the host reaches its published ports.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.record.run.network.networks.first().map(|a| a.ip)
    }

    /// The container's address on each of its bridge networks.
    pub fn addresses(&self) -> &[Attached] {
        &self.record.run.network.networks
    }
}
