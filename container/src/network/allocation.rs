//! The allocation records of a network: `ips/<a.b.c.d>`, one JSON file per address held,
//! naming its owner, the names it answers to and its hosts file. Read by `ipam` (to choose a
//! free address) and by `hosts` (to write the members' names); depends on neither.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetworkError;
use super::error::io_err;

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

/// Delete the allocation file of `ip`.
pub(crate) fn release_ip(dir: &Path, ip: Ipv4Addr) -> Result<(), NetworkError> {
    let path = dir.join("ips").join(ip.to_string());
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("releasing", path)(e)),
        _ => Ok(()),
    }
}
