//! Addresses of a network: one file per allocated address (`ips/<a.b.c.d>`, made with
//! `O_EXCL` under the networks' lock), so an address is never handed out twice, even across
//! processes, and survives the process that took it until released.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use molde_image::Store;
use serde::{Deserialize, Serialize};

use super::error::io_err;
use super::{Network, NetworkError, networks_dir};

/// Who holds an address of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The owner: a container id.
    pub owner: String,
    /// The names it answers to on the network (name, aliases, hostname, short id).
    pub names: Vec<String>,
    /// Its hosts file, kept current with the names of the network's members.
    pub hosts: Option<PathBuf>,
}

/// Every allocation of the network whose directory is `dir`, by address.
pub(crate) fn allocations(dir: &Path) -> Result<Vec<(Ipv4Addr, Allocation)>, NetworkError> {
    let ips = dir.join("ips");
    let entries = match fs::read_dir(&ips) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &ips)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("listing", &ips))?;
        let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        match serde_json::from_slice::<Allocation>(&bytes) {
            Ok(a) => out.push((ip, a)),
            // Cut short by a crash between create and write: nobody holds it.
            Err(_) if bytes.is_empty() => {
                let _ = fs::remove_file(&path);
            }
            Err(e) => {
                return Err(NetworkError::Record {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    out.sort_by_key(|(ip, _)| *ip);
    Ok(out)
}

/// Allocate the lowest free address of `net` (after the gateway) to `alloc.owner`, or the
/// one it holds already. Refreshes the hosts files of the network's members.
pub(crate) fn allocate(
    store: &Store,
    net: &Network,
    alloc: &Allocation,
) -> Result<Ipv4Addr, NetworkError> {
    let _guard = super::lock(store)?;
    let dir = networks_dir(store).join(&net.name);
    if !dir.join("network.json").exists() {
        return Err(NetworkError::NotFound {
            name: net.name.clone(),
        });
    }
    let taken = allocations(&dir)?;
    if let Some((ip, _)) = taken.iter().find(|(_, a)| a.owner == alloc.owner) {
        return Ok(*ip);
    }
    let broadcast = net.subnet.broadcast();
    let ip = net
        .subnet
        .hosts()
        .filter(|ip| *ip != net.gateway && *ip != broadcast)
        .find(|ip| taken.binary_search_by_key(ip, |(t, _)| *t).is_err())
        .ok_or_else(|| NetworkError::PoolExhausted {
            name: net.name.clone(),
            subnet: net.subnet.to_string(),
        })?;
    let ips = dir.join("ips");
    fs::create_dir_all(&ips).map_err(io_err("creating", &ips))?;
    let path = ips.join(ip.to_string());
    let bytes = serde_json::to_vec(alloc).map_err(|e| NetworkError::Record {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes));
    if let Err(e) = written {
        let _ = fs::remove_file(&path);
        return Err(io_err("allocating", &path)(e));
    }
    if let Err(e) = super::hosts::refresh(store, &net.name) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(ip)
}

/// Release every address `owner` holds on any network of `store`; the hosts files of the
/// networks' other members are rewritten.
pub(crate) fn release(store: &Store, owner: &str) -> Result<(), NetworkError> {
    if !networks_dir(store).exists() {
        return Ok(());
    }
    let _guard = super::lock(store)?;
    for net in Network::list_unlocked(store)? {
        let dir = networks_dir(store).join(&net.name);
        let mut changed = false;
        for (ip, a) in allocations(&dir)? {
            if a.owner == owner {
                release_ip(&dir, ip)?;
                changed = true;
            }
        }
        if changed {
            super::hosts::refresh(store, &net.name)?;
        }
    }
    Ok(())
}

/// Delete the allocation file of `ip`.
pub(crate) fn release_ip(dir: &Path, ip: Ipv4Addr) -> Result<(), NetworkError> {
    let path = dir.join("ips").join(ip.to_string());
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("releasing", path)(e)),
        _ => Ok(()),
    }
}
