//! How the captured interfaces are joined: bridges and their ports.
//!
//! On a container host a packet between a container and the host crosses the container's veth
//! (a bridge port) and the bridge itself; one between two containers on the same bridge crosses
//! two ports. Capturing every interface would see such packets two or three times. The rule that
//! sees each bridged packet exactly once: on a bridge port keep ingress only (what the attached
//! device sent into the bridge), on a bridge keep egress only (what the host sent into the
//! bridge). A packet leaving a container is taken at its port's ingress; one from the host at the
//! bridge's egress; the bridge's ingress and the ports' egress only repeat those. The programs
//! skip the repeated hooks (`iface::IGNORE_*` bits) and count them (`copies_skipped`).
//!
//! Read over rtnetlink (RTM_GETLINK dump) in the calling thread's network namespace.

use std::{
    collections::{HashMap, HashSet},
    io,
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use sensor_ebpf::iface;

use super::{AttachMode, Interface};

/// Bridges and the interfaces enslaved to them, by ifindex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    bridges: HashSet<u32>,
    /// Port -> the bridge it belongs to (only ports of bridges).
    bridge_of: HashMap<u32, u32>,
}

impl Topology {
    /// The bridges of the calling thread's network namespace.
    pub fn read() -> io::Result<Self> {
        let mut links = Vec::new();
        dump_links(&mut links)?;
        Ok(Self::of(&links))
    }

    /// [`Topology::read`], or no bridges (logged) if the links cannot be read.
    pub fn read_or_default() -> Self {
        Self::read().unwrap_or_else(|e| {
            log::warn!("reading bridges and their ports: {e}; bridged packets may be seen twice");
            Self::default()
        })
    }

    fn of(links: &[LinkMessage]) -> Self {
        let mut bridges = HashSet::new();
        let mut masters = Vec::new();
        for link in links {
            for attribute in &link.attributes {
                match attribute {
                    LinkAttribute::LinkInfo(infos)
                        if infos
                            .iter()
                            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))) =>
                    {
                        bridges.insert(link.header.index);
                    }
                    LinkAttribute::Controller(master) => {
                        masters.push((link.header.index, *master));
                    }
                    _ => {}
                }
            }
        }
        let bridge_of = masters
            .into_iter()
            .filter(|(_, master)| bridges.contains(master))
            .collect();
        Self { bridges, bridge_of }
    }

    /// Builds a topology from (port, bridge) pairs, for tests.
    pub fn from_ports(ports: &[(u32, u32)]) -> Self {
        Self {
            bridges: ports.iter().map(|&(_, bridge)| bridge).collect(),
            bridge_of: ports.iter().copied().collect(),
        }
    }

    /// The `IFACES` map value for `interface` when every interface in `captured` (ifindexes) is
    /// captured too.
    pub fn map_bits(&self, interface: &Interface, captured: &[u32], mode: AttachMode) -> u32 {
        let mut bits = interface.l2_len & iface::L2_LEN_MASK;
        // On `lo` in socket mode every segment shows twice (TC attaches ingress only there).
        if mode == AttachMode::Socket && interface.is_loopback {
            bits |= iface::IGNORE_EGRESS;
        }
        let index = interface.ifindex;
        if self
            .bridge_of
            .get(&index)
            .is_some_and(|bridge| captured.contains(bridge))
        {
            bits |= iface::IGNORE_EGRESS;
        }
        if self.bridges.contains(&index)
            && self
                .bridge_of
                .iter()
                .any(|(port, bridge)| *bridge == index && captured.contains(port))
        {
            bits |= iface::IGNORE_INGRESS;
        }
        bits
    }
}

/// Every link of the namespace, from one RTM_GETLINK dump.
fn dump_links(out: &mut Vec<LinkMessage>) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut offset = 0;
        while offset < n {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            if len == 0 {
                return Ok(());
            }
            offset += len;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    out.push(link);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(ifindex: u32) -> Interface {
        Interface {
            name: format!("if{ifindex}"),
            ifindex,
            is_loopback: false,
            l2_len: 14,
        }
    }

    #[test]
    fn bridge_keeps_egress_and_its_ports_keep_ingress_when_both_are_captured() {
        // 3 is the bridge; 4 and 5 its ports; 6 stands alone.
        let topology = Topology::from_ports(&[(4, 3), (5, 3)]);
        let all = [3, 4, 5, 6];
        let bits = |i| topology.map_bits(&interface(i), &all, AttachMode::Tcx);
        assert_eq!(bits(3), 14 | iface::IGNORE_INGRESS);
        assert_eq!(bits(4), 14 | iface::IGNORE_EGRESS);
        assert_eq!(bits(5), 14 | iface::IGNORE_EGRESS);
        assert_eq!(bits(6), 14);
        // Only the bridge captured: it keeps both directions (and misses port-to-port traffic).
        assert_eq!(topology.map_bits(&interface(3), &[3], AttachMode::Tcx), 14);
        // Only a port captured: both directions.
        assert_eq!(
            topology.map_bits(&interface(4), &[4, 6], AttachMode::Tcx),
            14
        );
    }

    #[test]
    fn this_namespace_can_be_read() {
        let topology = Topology::read().unwrap();
        let lo = Interface::by_name("lo").unwrap();
        assert_eq!(
            topology.map_bits(&lo, &[lo.ifindex], AttachMode::Socket),
            14 | iface::IGNORE_EGRESS
        );
    }
}
