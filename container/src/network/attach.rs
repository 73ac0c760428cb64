//! Per start of a container on bridge networks: a fresh network namespace, and for each
//! network a veth pair (the host end `mv<12 hex of the owner><n>` a port of the bridge, the
//! peer `eth<n>` made directly inside the namespace), the peer's address, up, and the
//! default route through the first network's gateway. The launcher then joins the namespace
//! (`setns`) instead of making one: the container's program starts with its network ready.
//!
//! Nothing here outlives the container without help: the namespace's only references are
//! the descriptor returned (dropped once the launch is done) and the container's processes;
//! when the last one ends, the kernel destroys the namespace, the peer with it, and a veth
//! pair dies with either end. A host process killed at any point leaves no veth behind.
//! The kernel does that teardown shortly after, on a work queue that batches namespaces (a
//! veth deleted by hand here costs the caller its RCU grace periods: 1-2 ms per container,
//! measured, against none); so a veth may be seen for some milliseconds after its container
//! ended, and a restart that finds its old host end still there replaces it.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use super::error::nl_err;
use super::netlink::{Rtnl, in_netns};
use super::{Network, NetworkError};

/// The name of the host end of `owner`'s veth on its `n`th network (15 bytes at most).
pub(crate) fn host_end(owner: &str, n: usize) -> String {
    let short: String = owner.chars().take(12).collect();
    format!("mv{short}{}", n % 10)
}

/// The hardware address of the container end for `ip`: `02:42:` and the address's four
/// bytes, as Docker does. An address keeps its MAC across restarts and reuse, so the host's
/// (and the other containers') ARP entries stay right: with a random MAC each start, a
/// restarted container is unreachable until the stale entry is probed again (seconds).
/// The bridge has its gateway's (see `bridge`), which no container is given.
pub(crate) fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// A network namespace with `owner`'s veths on `networks` (each with its address), made
/// ready for the container to join.
pub(crate) fn plumb(
    owner: &str,
    networks: &[(Network, Ipv4Addr)],
) -> Result<OwnedFd, NetworkError> {
    let inside = Inside::all(networks, true);
    // One network (the usual case): a namespace whose veth was made ahead, if one is ready.
    if let [(net, _)] = networks {
        let bridge = net.ensure_bridge()?;
        if let Some(mut ready) = super::ahead::take(net.bridge(), bridge) {
            // Its host end gets the owner's name (and goes up): veths are found by owner.
            let host = host_end(owner, 0);
            let mut rtnl = Rtnl::open().map_err(nl_err("opening netlink for", owner))?;
            match rename_live(&mut rtnl, ready.host, &host) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // Its previous run's, not torn down yet.
                    super::delete_link_named(&mut rtnl, &host)?;
                    rename_live(&mut rtnl, ready.host, &host)
                }
                other => other,
            }
            .map_err(nl_err("renaming veth", &host))?;
            configure(&mut ready.rtnl, &inside)
                .map_err(nl_err("configuring the network namespace of", owner))?;
            return Ok(ready.ns);
        }
    }
    let ns =
        crate::launch::netns::fresh().map_err(nl_err("making a network namespace for", owner))?;
    let mut rtnl = Rtnl::open().map_err(nl_err("opening netlink for", owner))?;
    for (n, (net, ip)) in networks.iter().enumerate() {
        let bridge = net.ensure_bridge()?;
        let host = host_end(owner, n);
        let peer = format!("eth{n}");
        let mac = mac_of(*ip);
        match rtnl.add_veth(&host, &peer, ns.as_fd(), (bridge, true), mac) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Left by an earlier start whose namespace is still held: replace it.
                super::delete_link_named(&mut rtnl, &host)?;
                rtnl.add_veth(&host, &peer, ns.as_fd(), (bridge, true), mac)
                    .map_err(nl_err("creating veth", &host))?;
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(NetworkError::NeedsRoot),
            other => other.map_err(nl_err("creating veth", &host))?,
        }
    }
    in_netns(ns.as_fd(), |r| configure(r, &inside))
        .map_err(nl_err("configuring the network namespace of", owner))?;
    Ok(ns)
}

/// Rename the host end of a veth made ahead (up, see `ahead`): where the kernel renames only
/// links that are down (before 6.2), it goes down and up again, and its port is of use only
/// once the kernel's link-state work has seen it (the first packets may wait a second).
fn rename_live(rtnl: &mut Rtnl, index: u32, name: &str) -> std::io::Result<()> {
    match rtnl.rename_up(index, name) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            rtnl.set_down(index)?;
            rtnl.rename_up(index, name)
        }
        other => other,
    }
}

/// What a container's end of one network gets inside its namespace.
pub(super) struct Inside {
    pub(super) name: String,
    pub(super) ip: Ipv4Addr,
    pub(super) prefix: u8,
    /// The default route's gateway (the first network's, where it gives the default route).
    pub(super) gateway: Option<Ipv4Addr>,
}

impl Inside {
    /// The container's ends on `networks`: `eth<n>` with its address, the first network's
    /// gateway the default route if `route`.
    pub(super) fn all(networks: &[(Network, Ipv4Addr)], route: bool) -> Vec<Inside> {
        networks
            .iter()
            .enumerate()
            .map(|(n, (net, ip))| Inside {
                name: format!("eth{n}"),
                ip: *ip,
                prefix: net.subnet().prefix_len(),
                gateway: route.then(|| net.gateway()),
            })
            .collect()
    }
}

/// Inside the namespace (`r` talks to it): each end gets its MAC and address and goes up;
/// the first network's gateway, if given, is the default route.
pub(super) fn configure(r: &mut Rtnl, inside: &[Inside]) -> std::io::Result<()> {
    for (n, end) in inside.iter().enumerate() {
        let index = r
            .link_index(&end.name)?
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        r.set_mac(index, mac_of(end.ip))?;
        r.add_address(index, end.ip, end.prefix)?;
        r.set_up(index)?;
        if let (0, Some(gateway)) = (n, end.gateway) {
            r.add_default_route(gateway)?;
        }
    }
    Ok(())
}
