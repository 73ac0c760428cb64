//! Bridge networks: named objects of the store on which containers get their own IPv4
//! address, find each other by name, and from which ports are published to the host.
//!
//! This module knows nothing of containers: an address is allocated to an *owner* (a
//! container id, with the names it answers to and the hosts file to keep current), and
//! `container/` asks for it. Its parts:
//!
//! - [`Network`] (here): create, open, list, remove; the default network.
//! - `ipam`: addresses, allocated as files under the networks' lock, persisted, released;
//!   `allocation`: those files (who holds which address), read and deleted.
//! - `hosts`: the `/etc/hosts` and `/etc/resolv.conf` a container sees.
//! - `attach`: per start, a network namespace with a veth pair on the bridge.
//! - `bridge`: what keeps a bridge the same for its containers (its hardware address).
//! - `publish`: published ports (a userspace forwarder); `pasta`: rootless networking.
//! - `rootless`: the bridges of rootless containers, in a user and network namespace of the
//!   store's own, kept by a holder process.
//! - `netlink`: the link, address and route requests (rtnetlink, no `ip` command).
//!
//! ```text
//! <store>/molde/networks/lock                     flock around every change of network state
//! <store>/molde/networks/<name>/network.json      name, id, subnet, gateway, bridge
//! <store>/molde/networks/<name>/ips/<a.b.c.d>     one allocation: owner, names, hosts file
//! <store>/molde/networks/rootless-netns           the rootless holder's pid and start time
//! ```

mod ahead;
mod allocation;
pub(crate) mod attach;
mod bridge;
mod error;
pub(crate) mod hosts;
pub(crate) mod ipam;
mod netlink;
pub(crate) mod pasta;
pub mod publish;
pub(crate) mod rootless;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use molde_image::Store;
use molde_image::lock::{FileLock, LockKind};
use serde::{Deserialize, Serialize};

pub use allocation::Allocation;
pub use error::NetworkError;
use error::{io_err, nl_err};
pub use publish::{Protocol, PublishedPort};

/// The name of the default network, which containers join when they publish ports without
/// naming a network.
pub const DEFAULT_NETWORK: &str = "molde";

/// Host-wide lock around choosing a subnet and making a bridge: stores of one host share its
/// routes.
const HOST_LOCK: &str = "/run/molde-networks.lock";

/// A bridge network of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    name: String,
    id: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    bridge: String,
    created: String,
}

/// Options of a new network.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    subnet: Option<String>,
}

impl NetworkOptions {
    /// Default options: a free private subnet is chosen.
    pub fn new() -> NetworkOptions {
        NetworkOptions::default()
    }
    /// The network's IPv4 subnet, e.g. `"10.200.0.0/24"`: a private range (RFC 1918),
    /// prefix 8 to 29, overlapping no route of the host and no other network.
    pub fn subnet(mut self, subnet: impl Into<String>) -> NetworkOptions {
        self.subnet = Some(subnet.into());
        self
    }
}

pub(crate) fn networks_dir(store: &Store) -> PathBuf {
    store.layout().state().join("networks")
}

/// Exclusive lock on every network of `store`.
pub(crate) fn lock(store: &Store) -> Result<FileLock, NetworkError> {
    let dir = networks_dir(store);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let p = dir.join("lock");
    FileLock::acquire(&p, LockKind::Exclusive).map_err(io_err("locking", p))
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    let bad = |reason| {
        Err(NetworkError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("length must be 1 to 64");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return bad("invalid character");
    }
    Ok(())
}

fn parse_subnet(s: &str) -> Result<Ipv4Net, NetworkError> {
    let bad = |reason| NetworkError::InvalidSubnet {
        subnet: s.to_owned(),
        reason,
    };
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| bad("not an IPv4 network a.b.c.d/n"))?;
    if net.network() != net.addr() {
        return Err(bad("host bits set: give the network's first address"));
    }
    if !(8..=29).contains(&net.prefix_len()) {
        return Err(bad("prefix must be 8 to 29"));
    }
    if !net.addr().is_private() {
        return Err(bad("not a private range (10/8, 172.16/12, 192.168/16)"));
    }
    Ok(net)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Candidates for a network's subnet: Docker's pool (172.17-31.0.0/16), then
/// 192.168.{0..255}.0/24 less the usual home ranges' start, then 10.{0..255}.0.0/16.
fn candidates() -> impl Iterator<Item = Ipv4Net> {
    let docker = (17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let small = (100..=255u8).map(|c| Ipv4Net::new(Ipv4Addr::new(192, 168, c, 0), 24));
    let ten = (90..=255u8).map(|b| Ipv4Net::new(Ipv4Addr::new(10, b, 0, 0), 16));
    docker.chain(small).chain(ten).filter_map(Result::ok)
}

/// A container's networking, as its record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachments {
    /// The bridge networks joined, in order (the first gives the default route), with the
    /// container's address on each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Attached>,
    /// The ports published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// Rootless: the network comes from the user-mode stack (pasta).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_mode: bool,
}

impl Attachments {
    /// No network beyond loopback (or the host's), nothing published.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.publish.is_empty() && !self.user_mode
    }
}

/// A container's place on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// The network's name.
    pub network: String,
    /// The container's address on it.
    pub ip: Ipv4Addr,
}

impl Network {
    /// Create the network `name` with a free private subnet and its bridge.
    pub fn create(store: &Store, name: &str) -> Result<Network, NetworkError> {
        Network::create_with(store, name, NetworkOptions::new())
    }

    /// Create the network `name` with `options`. Nothing is made when this fails.
    ///
    /// As root the bridge is made now, in the host's network namespace. Unprivileged, the
    /// network is for rootless containers: its bridge is made when a container on it starts,
    /// in the store's rootless network namespace (see docs/rootless.md, "Networks"); its
    /// subnet still overlaps no route of the host (pasta gives the containers the host's).
    pub fn create_with(
        store: &Store,
        name: &str,
        options: NetworkOptions,
    ) -> Result<Network, NetworkError> {
        check_name(name)?;
        let asked = options.subnet.as_deref().map(parse_subnet).transpose()?;
        let privileged = molde_layerfs::privilege::is_privileged();
        let _guard = lock(store)?;
        let dir = networks_dir(store).join(name);
        if dir.join("network.json").exists() {
            return Err(NetworkError::Exists { name: name.into() });
        }
        // Rootless networks' bridges are the store's own: only the host's routes matter.
        let _host = privileged
            .then(|| FileLock::acquire(Path::new(HOST_LOCK), LockKind::Exclusive))
            .transpose()
            .map_err(io_err("locking", HOST_LOCK))?;
        let mut taken: Vec<(Ipv4Net, String)> = Network::list_unlocked(store)?
            .into_iter()
            .map(|n| (n.subnet, format!("network {:?}", n.name)))
            .collect();
        let mut rtnl = netlink::Rtnl::open().map_err(nl_err("opening netlink for", name))?;
        for (ip, prefix) in rtnl
            .ipv4_networks()
            .map_err(nl_err("listing the routes of the host for", name))?
        {
            if let Ok(net) = Ipv4Net::new(ip, prefix) {
                taken.push((net.trunc(), format!("the host's route to {}", net.trunc())));
            }
        }
        let subnet = match asked {
            Some(s) => {
                if let Some((_, with)) = taken.iter().find(|(t, _)| overlaps(t, &s)) {
                    return Err(NetworkError::SubnetOverlaps {
                        subnet: s.to_string(),
                        with: with.clone(),
                    });
                }
                s
            }
            None => candidates()
                .find(|c| !taken.iter().any(|(t, _)| overlaps(t, c)))
                .ok_or(NetworkError::NoFreeSubnet)?,
        };
        let id = crate::record::new_id().map_err(io_err("making a network id", "/dev/urandom"))?;
        let net = Network {
            name: name.to_owned(),
            bridge: format!("mb-{}", &id[..12]),
            id: id[..12].to_owned(),
            gateway: subnet.hosts().next().ok_or(NetworkError::InvalidSubnet {
                subnet: subnet.to_string(),
                reason: "no host addresses",
            })?,
            subnet,
            created: molde_image::builder::now_rfc3339(),
        };
        if privileged {
            net.ensure_bridge_with(&mut rtnl)?;
        }
        let written = (|| {
            fs::create_dir_all(dir.join("ips")).map_err(io_err("creating", &dir))?;
            net.write(&dir)
        })();
        if let Err(e) = written {
            if privileged {
                let _ = net.delete_bridge();
            }
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(net)
    }

    /// The default network ([`DEFAULT_NETWORK`]), created on first use.
    pub fn default_network(store: &Store) -> Result<Network, NetworkError> {
        match Network::open(store, DEFAULT_NETWORK) {
            Err(NetworkError::NotFound { .. }) => {}
            other => return other,
        }
        match Network::create(store, DEFAULT_NETWORK) {
            Err(NetworkError::Exists { .. }) => Network::open(store, DEFAULT_NETWORK),
            other => other,
        }
    }

    /// The network `name` of `store`.
    pub fn open(store: &Store, name: &str) -> Result<Network, NetworkError> {
        check_name(name)?;
        let path = networks_dir(store).join(name).join("network.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetworkError::NotFound { name: name.into() });
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| NetworkError::Record {
            path,
            reason: e.to_string(),
        })
    }

    /// Every network of `store`, by name.
    pub fn list(store: &Store) -> Result<Vec<Network>, NetworkError> {
        let _guard = lock(store)?;
        Network::list_unlocked(store)
    }

    pub(crate) fn list_unlocked(store: &Store) -> Result<Vec<Network>, NetworkError> {
        let dir = networks_dir(store);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if !entry.path().join("network.json").exists() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                out.push(Network::open(store, name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove the network and its bridge. Refused while containers are on it
    /// ([`NetworkError::InUse`] names them).
    pub fn remove(self, store: &Store) -> Result<(), NetworkError> {
        let _guard = lock(store)?;
        let dir = networks_dir(store).join(&self.name);
        let users: Vec<String> = allocation::allocations(&dir)?
            .into_iter()
            .map(|(_, a)| a.owner)
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                name: self.name,
                containers: users,
            });
        }
        if molde_layerfs::privilege::is_privileged() {
            self.delete_bridge()?;
        } else {
            rootless::delete_bridge(store, &self)?;
            rootless::stop_if_unused(store)?;
        }
        // The record first: a removal cut short leaves no network that half exists.
        let record = dir.join("network.json");
        fs::remove_file(&record).map_err(io_err("removing", &record))?;
        fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }
    /// Its gateway: the bridge's address, the host's address on the network.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
    /// The name of its bridge: in the host's network namespace (a network root made), or in
    /// the store's rootless network namespace (one made without root; see `rootless`).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
    /// The containers (ids) with an address on it, and their addresses.
    pub fn allocations(&self, store: &Store) -> Result<Vec<(Ipv4Addr, Allocation)>, NetworkError> {
        allocation::allocations(&networks_dir(store).join(&self.name))
    }

    fn write(&self, dir: &Path) -> Result<(), NetworkError> {
        let path = dir.join("network.json");
        let tmp = dir.join("network.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| NetworkError::Record {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming", &path))
    }

    /// Make the bridge (with the gateway address, up) if it is missing: after a reboot the
    /// store keeps its networks but the host has no bridges.
    pub(crate) fn ensure_bridge(&self) -> Result<u32, NetworkError> {
        let mut rtnl = netlink::Rtnl::open().map_err(nl_err("opening netlink for", &self.name))?;
        self.ensure_bridge_with(&mut rtnl)
    }

    fn ensure_bridge_with(&self, rtnl: &mut netlink::Rtnl) -> Result<u32, NetworkError> {
        let name = &self.bridge;
        if let Some(index) = rtnl
            .link_index(name)
            .map_err(nl_err("looking for bridge", name))?
        {
            bridge::keep_mac(rtnl, name, index).map_err(nl_err("fixing the address of", name))?;
            return Ok(index);
        }
        match rtnl.add_bridge(name, attach::mac_of(self.gateway)) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(NetworkError::NeedsRoot);
            }
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(nl_err("creating bridge", name)(e));
            }
            _ => {}
        }
        let made = (|| {
            let index = rtnl
                .link_index(name)?
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
            match rtnl.add_address(index, self.gateway, self.subnet.prefix_len()) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
            rtnl.set_up(index)?;
            Ok(index)
        })();
        made.map_err(|e| {
            let _ = self.delete_bridge();
            nl_err("setting up bridge", name)(e)
        })
    }

    fn delete_bridge(&self) -> Result<(), NetworkError> {
        ahead::forget(&self.bridge);
        let mut rtnl = netlink::Rtnl::open().map_err(nl_err("opening netlink for", &self.name))?;
        delete_link_named(&mut rtnl, &self.bridge)
    }
}

/// Delete the link `name` if it exists.
pub(crate) fn delete_link_named(rtnl: &mut netlink::Rtnl, name: &str) -> Result<(), NetworkError> {
    if let Some(index) = rtnl.link_index(name).map_err(nl_err("looking for", name))? {
        match rtnl.delete_link(index) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                return Err(nl_err("deleting", name)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Clear what killed processes left: allocations whose owner `is_live` denies are released
/// (and the hosts files of the others rewritten), and the store's rootless network
/// namespace's holder is stopped if no container holds an address any more. (Veths go with
/// their namespaces: nothing to delete.) Called by `molde_container::recover`.
pub(crate) fn sweep(store: &Store, is_live: &dyn Fn(&str) -> bool) -> Result<(), NetworkError> {
    if !networks_dir(store).exists() {
        return Ok(());
    }
    let _guard = lock(store)?;
    for net in Network::list_unlocked(store)? {
        let dir = networks_dir(store).join(&net.name);
        let mut changed = false;
        for (ip, a) in allocation::allocations(&dir)? {
            if !is_live(&a.owner) {
                allocation::release_ip(&dir, ip)?;
                changed = true;
            }
        }
        if changed {
            hosts::refresh(store, &net.name)?;
        }
    }
    rootless::stop_if_unused(store)
}

/// Release every address `owner` holds (see `ipam::release`); the store's rootless network
/// namespace is stopped when no container holds one any more.
pub(crate) fn release(store: &Store, owner: &str) -> Result<(), NetworkError> {
    ipam::release(store, owner)?;
    if networks_dir(store).exists() {
        let _guard = lock(store)?;
        rootless::stop_if_unused(store)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subnets_are_checked() {
        assert!(check_name("backend").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        for bad in ["", "-x", "Upper", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_subnet("10.200.0.0/24").is_ok());
        assert!(parse_subnet("10.200.0.1/24").is_err(), "host bits");
        assert!(parse_subnet("10.200.0.0/30").is_err(), "too small");
        assert!(parse_subnet("8.8.8.0/24").is_err(), "public");
        assert!(parse_subnet("nonsense").is_err());
    }

    #[test]
    fn overlap_either_way_and_candidates_are_private_and_distinct() {
        let a: Ipv4Net = "172.17.0.0/16".parse().unwrap();
        let b: Ipv4Net = "172.17.5.0/24".parse().unwrap();
        let c: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(!overlaps(&a, &c));
        let all: Vec<Ipv4Net> = candidates().collect();
        assert!(all.iter().all(|n| n.addr().is_private()));
        for (i, x) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|y| !overlaps(x, y)), "{x}");
        }
    }
}
