//! A small synchronous rtnetlink client: the few link, address and route requests a bridge
//! network needs, over one `NETLINK_ROUTE` socket (`netlink-sys`), with messages built and
//! parsed by `netlink-packet-route`. No `ip` command, no async runtime.
//!
//! A netlink socket talks to the network namespace it was opened in: [`Rtnl::open`] in the
//! calling thread's, [`in_netns`] in another one (a short-lived thread joins it).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One rtnetlink socket, in the network namespace it was opened in.
pub(crate) struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Read replies to request `seq`, giving each inner message to `each`, until the ack
    /// (or the end of a dump). A kernel error is an `io::Error` of its errno.
    fn replies(&mut self, seq: u32, mut each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message of length 0",
                    ));
                }
                offset += len.next_multiple_of(4);
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }

    /// Send a request that changes something and wait for its ack.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.replies(seq, |_| {})
    }

    /// Every message a dump request returns.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut all = Vec::new();
        self.replies(seq, |m| all.push(m))?;
        Ok(all)
    }

    /// The index of the link named `name`, if there is one (one `RTM_GETLINK` by name, not
    /// a dump of every link).
    pub(crate) fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let seq = self.send(RouteNetlinkMessage::GetLink(m), NLM_F_ACK)?;
        let mut index = None;
        match self.replies(seq, |r| {
            if let RouteNetlinkMessage::NewLink(l) = r {
                index = Some(l.header.index);
            }
        }) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Ok(index),
        }
    }

    /// Make a bridge named `name` with the hardware address `mac` (`EEXIST` if a link has
    /// that name). An address given at creation is the bridge's for good: the kernel no
    /// longer makes it the lowest of its ports' addresses as ports come and go.
    pub(crate) fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Make a veth pair: `host` here, its port on the bridge `controller`, up if `up`;
    /// `peer` made directly in the network namespace `netns` (never visible here), with the
    /// hardware address `mac`.
    pub(crate) fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        netns: BorrowedFd<'_>,
        (controller, up): (u32, bool),
        mac: [u8; 6],
    ) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        p.attributes.push(LinkAttribute::Address(mac.to_vec()));
        p.attributes
            .push(LinkAttribute::NetNsFd(netns.as_fd().as_raw_fd()));
        let mut m = LinkMessage::default();
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(host.into()));
        m.attributes.push(LinkAttribute::Controller(controller));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Bring the link `index` up.
    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Take the link `index` down.
    pub(crate) fn set_down(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Rename the link `index` to `name`, and bring it up (`EBUSY` if it is up and the
    /// kernel, before 6.2, renames only links that are down).
    pub(crate) fn rename_up(&mut self, index: u32, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Give the link `index` (down, or a bridge) the hardware address `mac`.
    pub(crate) fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(m), 0)
    }

    /// Delete the link `index` (a veth takes its peer with it).
    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0)
    }

    /// Give link `index` the address `ip/prefix` (`EEXIST` if it has it).
    pub(crate) fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(ip.into()));
        m.attributes.push(AddressAttribute::Address(ip.into()));
        let bits = u32::from(ip) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0));
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(bits)));
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The default route through `gateway`.
    pub(crate) fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Every IPv4 network this namespace routes or has an address in: (network, prefix).
    pub(crate) fn ipv4_networks(&mut self) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut out = Vec::new();
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        for m in self.dump(RouteNetlinkMessage::GetRoute(r))? {
            if let RouteNetlinkMessage::NewRoute(r) = m
                && r.header.table == RouteHeader::RT_TABLE_MAIN
            {
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                });
                // The default route (no destination) overlaps nothing in particular.
                if let Some(dst) = dst {
                    out.push((dst, r.header.destination_prefix_length));
                }
            }
        }
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        for m in self.dump(RouteNetlinkMessage::GetAddress(a))? {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                for attr in &a.attributes {
                    if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = attr {
                        out.push((*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The address (and prefix) a user-mode stack copies into a container, as pasta picks
    /// it: the first address of the interface of the first IPv4 default route of the main
    /// table. `None` where there is no default route.
    pub(crate) fn outbound_v4(&mut self) -> io::Result<Option<(Ipv4Addr, u8)>> {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        let oif = self
            .dump(RouteNetlinkMessage::GetRoute(r))?
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN
                        && r.header.destination_prefix_length == 0 =>
                {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                }
                _ => None,
            });
        let Some(oif) = oif else { return Ok(None) };
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        Ok(self
            .dump(RouteNetlinkMessage::GetAddress(a))?
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == oif => {
                    a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Local(std::net::IpAddr::V4(ip)) => {
                            Some((*ip, a.header.prefix_len))
                        }
                        _ => None,
                    })
                }
                _ => None,
            }))
    }
}

/// Run `f` with a netlink socket in the network namespace `netns` (a thread joins it; the
/// caller's threads stay where they are).
pub(crate) fn in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce(&mut Rtnl) -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("molde-netlink".into())
            .spawn_scoped(s, || {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                f(&mut Rtnl::open()?)
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the netlink thread panicked")))
    })
}
