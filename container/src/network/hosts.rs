//! The `/etc/hosts` and `/etc/resolv.conf` a container on bridge networks (or on pasta's
//! user-mode network) sees: files of its own, bound over the image's.
//!
//! Names resolve through the hosts file, kept current: whenever an address of a network is
//! allocated or released, the hosts file of every member of that network is rewritten with
//! the names of every container it shares a network with. No DNS server runs: nothing to
//! start, to leak or to keep alive, and every resolver (musl's, glibc's, busybox's) reads
//! `/etc/hosts`. The file is rewritten in place (the container sees it through a bind mount
//! of its inode): a reader racing a rewrite may see it short for a moment.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use molde_image::Store;

use super::allocation::{Allocation, allocations};
use super::error::io_err;
use super::{Network, NetworkError, networks_dir};

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The hosts file of a container not on any network yet (or of one just made).
pub(crate) fn initial(names: &[String]) -> String {
    let mut s = String::from(LOCALHOST);
    if !names.is_empty() {
        let _ = writeln!(s, "127.0.1.1\t{}", names.join(" "));
    }
    s
}

/// The hosts file of a container on a user-mode network (pasta): localhost, and its names at
/// the address pasta copies into its namespace (`127.0.1.1` where the host has none).
pub(crate) fn user_mode(names: &[String], address: Option<Ipv4Addr>) -> String {
    match address {
        Some(ip) => format!("{LOCALHOST}{ip}\t{}\n", names.join(" ")),
        None => initial(names),
    }
}

/// Rewrite the hosts file of every member of network `name` (caller holds the lock).
pub(crate) fn refresh(store: &Store, name: &str) -> Result<(), NetworkError> {
    // Every allocation of every network, once.
    let mut all: BTreeMap<String, Vec<(Ipv4Addr, Allocation)>> = BTreeMap::new();
    for net in Network::list_unlocked(store)? {
        let dir = networks_dir(store).join(&net.name);
        all.insert(net.name, allocations(&dir)?);
    }
    let Some(members) = all.get(name) else {
        return Ok(());
    };
    for (_, member) in members {
        let Some(path) = &member.hosts else { continue };
        let mut s = String::from(LOCALHOST);
        // Its own addresses first, then everyone it shares a network with.
        let shared: Vec<&Vec<(Ipv4Addr, Allocation)>> = all
            .values()
            .filter(|allocs| allocs.iter().any(|(_, a)| a.owner == member.owner))
            .collect();
        for allocs in &shared {
            for (ip, a) in allocs.iter().filter(|(_, a)| a.owner == member.owner) {
                let _ = writeln!(s, "{ip}\t{}", a.names.join(" "));
            }
        }
        for allocs in &shared {
            for (ip, a) in allocs.iter().filter(|(_, a)| a.owner != member.owner) {
                let _ = writeln!(s, "{ip}\t{}", a.names.join(" "));
            }
        }
        write_in_place(path, &s)?;
    }
    Ok(())
}

/// Rewrite `path` in place (same inode): a container has it bound. A missing file (its
/// container was removed meanwhile) is left missing.
pub(crate) fn write_in_place(path: &Path, content: &str) -> Result<(), NetworkError> {
    let f = fs::OpenOptions::new().write(true).truncate(true).open(path);
    match f {
        Ok(mut f) => f
            .write_all(content.as_bytes())
            .map_err(io_err("writing", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("writing", path)(e)),
    }
}

/// The host's resolvers for a container: the host's `resolv.conf` without loopback
/// nameservers (a stub resolver on the host's 127.0.0.53 is not reachable from a network
/// namespace; systemd-resolved's upstream list is used where it is). Falls back to no
/// nameserver at all: a container on an offline host resolves only its hosts file.
pub(crate) fn resolv_conf() -> String {
    let upstream = Path::new("/run/systemd/resolve/resolv.conf");
    let source: PathBuf = if upstream.exists() {
        upstream.into()
    } else {
        "/etc/resolv.conf".into()
    };
    let text = fs::read_to_string(source).unwrap_or_default();
    let mut out = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
