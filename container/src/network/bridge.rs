//! What keeps a bridge the same, seen from its containers, while ports come and go.
//!
//! Its hardware address. Linux gives a bridge whose address was never set the lowest address
//! of its ports, computed again whenever one joins or leaves: each veth made ahead (a random
//! address) and each container that goes can move it. A container learns its gateway's
//! address (ARP) when it first talks to the host; once the bridge's address has moved, what
//! the container sends to the gateway is addressed to no one (`PACKET_OTHERHOST` on the
//! bridge) and dropped, until its ARP entry goes stale and is probed again, 15-45 s later. A
//! connection from the host is accepted and its request acknowledged, but the answer never
//! arrives: the forwarder and its client hung on that (docs/ARCHITECTURE.md, "Networks").
//! A bridge given an address keeps it whatever its ports (the kernel's `NET_ADDR_SET`): molde
//! makes its bridges with their gateway's `02:42:` address, and a bridge an older molde made
//! gets its current address set, once per process.

use std::sync::Mutex;

use super::netlink::Rtnl;

/// The kernel's `NET_ADDR_SET`: the address was set by the user, and stays.
const NET_ADDR_SET: &str = "3";

/// Bridges (name, index) seen with an address of their own in this process.
static STEADY: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// Make sure the bridge `name` (link `index`) keeps its hardware address: give it its
/// current one if it was never set (a bridge an older molde made).
pub(crate) fn keep_mac(rtnl: &mut Rtnl, name: &str, index: u32) -> std::io::Result<()> {
    let seen = |steady: &Vec<(String, u32)>| steady.iter().any(|(n, i)| n == name && *i == index);
    if STEADY.lock().is_ok_and(|s| seen(&s)) {
        return Ok(());
    }
    let sys = std::path::Path::new("/sys/class/net").join(name);
    let kind = std::fs::read_to_string(sys.join("addr_assign_type"))?;
    if kind.trim() != NET_ADDR_SET {
        let text = std::fs::read_to_string(sys.join("address"))?;
        let mac = parse_mac(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{name} has the hardware address {text:?}"),
            )
        })?;
        rtnl.set_mac(index, mac)?;
    }
    if let Ok(mut steady) = STEADY.lock()
        && !seen(&steady)
    {
        steady.push((name.to_owned(), index));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` as six bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_addresses_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:01"),
            Some([0x02, 0x42, 0xac, 0x11, 0, 1])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:01:02",
            "zz:42:ac:11:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
