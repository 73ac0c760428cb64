//! Addresses of a network: one file per allocated address (`ips/<a.b.c.d>`, made with
//! `O_EXCL` under the networks' lock), so an address is never handed out twice, even across
//! processes, and survives the process that took it until released. The records themselves
//! are read and deleted by `allocation`; this module chooses addresses and keeps the hosts files
//! current.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;

use molde_image::Store;

use super::allocation::{Allocation, allocations, release_ip};
use super::error::io_err;
use super::{Network, NetworkError, networks_dir};

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
