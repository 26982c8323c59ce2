//! `wire`: link and neighbour messages read in place, in the receive buffer.
//!
//! Dumps and notifications are read here instead of through
//! netlink-packet-route's owned messages, which decode every attribute (link
//! statistics, IPv6 settings, ...) into allocated values only to drop them.
//! Only the fields the agent looks at are read, and nothing is allocated.

use std::net::Ipv4Addr;

use netlink_packet_core::{NLA_TYPE_MASK, NlaBuffer, NlasIterator};
use netlink_packet_route::neighbour::NeighbourHeader;
use ovnet_ipam_store::Mac;

/// The attributes of `payload` from `offset` on, as (type, value).
fn attributes(payload: &[u8], offset: usize) -> impl Iterator<Item = (u16, &[u8])> {
    NlasIterator::new(payload.get(offset..).unwrap_or_default()).map_while(Result::ok).filter_map(value)
}

fn value(nla: NlaBuffer<&[u8]>) -> Option<(u16, &[u8])> {
    let (kind, len) = (nla.kind() & NLA_TYPE_MASK, usize::from(nla.length()));
    Some((kind, nla.into_inner().get(4..len)?))
}

fn u32_of(value: &[u8]) -> Option<u32> {
    value.get(..4)?.try_into().ok().map(u32::from_ne_bytes)
}

fn mac_of(value: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(value).ok().map(Mac)
}

fn str_of(value: &[u8]) -> Option<&str> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    std::str::from_utf8(&value[..end]).ok()
}

/// The parts of a neighbour message (`struct ndmsg` and its attributes)
/// that we keep: for AF_INET a neighbour, for AF_BRIDGE an FDB entry.
#[derive(Debug)]
pub(super) struct Entry {
    pub header: NeighbourHeader,
    pub mac: Option<Mac>,
    /// `NDA_DST` as IPv4: the neighbour's address, or an FDB entry's VTEP.
    pub ip: Option<Ipv4Addr>,
}

impl Entry {
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    /// `sizeof(struct ndmsg)`.
    const HEADER_LEN: usize = 12;

    pub(super) fn parse(payload: &[u8]) -> Option<Entry> {
        let header = NeighbourHeader::parse(payload).ok()?;
        let mut entry = Entry { header, mac: None, ip: None };
        for (kind, value) in attributes(payload, Self::HEADER_LEN) {
            match kind {
                Self::NDA_DST => entry.ip = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from),
                Self::NDA_LLADDR => entry.mac = mac_of(value),
                _ => {}
            }
        }
        Some(entry)
    }
}

/// The parts of a link message (`struct ifinfomsg` and its attributes) that
/// we keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Link<'a> {
    pub index: u32,
    pub up: bool,
    pub name: Option<&'a str>,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: "bridge", "vxlan", "veth", ...
    pub kind: Option<&'a str>,
    /// For a VXLAN device.
    pub vxlan: Option<Vxlan>,
}

/// What `ip -d link show` says of a VXLAN device.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Vxlan {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    pub proxy: bool,
}

impl<'a> Link<'a> {
    /// `sizeof(struct ifinfomsg)`.
    const HEADER_LEN: usize = 16;
    const IFF_UP: u32 = 1;
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    const IFLA_MASTER: u16 = 10;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;

    pub(super) fn parse(payload: &'a [u8]) -> Option<Link<'a>> {
        let index = u32_of(payload.get(4..8)?)?;
        let flags = u32_of(payload.get(8..12)?)?;
        let mut link = Link { index, up: flags & Self::IFF_UP != 0, ..Default::default() };
        for (kind, value) in attributes(payload, Self::HEADER_LEN) {
            match kind {
                Self::IFLA_ADDRESS => link.mac = mac_of(value),
                Self::IFLA_IFNAME => link.name = str_of(value),
                Self::IFLA_MTU => link.mtu = u32_of(value).unwrap_or(0),
                Self::IFLA_MASTER => link.master = u32_of(value),
                Self::IFLA_LINKINFO => link.info(value),
                _ => {}
            }
        }
        Some(link)
    }

    /// `IFLA_LINKINFO`: the kind, and for VXLAN its data.
    fn info(&mut self, linkinfo: &'a [u8]) {
        let mut data = None;
        for (kind, value) in attributes(linkinfo, 0) {
            match kind {
                Self::IFLA_INFO_KIND => self.kind = str_of(value),
                Self::IFLA_INFO_DATA => data = Some(value),
                _ => {}
            }
        }
        if let (Some("vxlan"), Some(data)) = (self.kind, data) {
            self.vxlan = Some(Vxlan::parse(data));
        }
    }
}

impl Vxlan {
    const ID: u16 = 1;
    const LOCAL: u16 = 4;
    const LEARNING: u16 = 7;
    const PROXY: u16 = 11;
    const PORT: u16 = 15;

    fn parse(data: &[u8]) -> Vxlan {
        let mut v = Vxlan::default();
        for (kind, value) in attributes(data, 0) {
            match kind {
                Self::ID => v.vni = u32_of(value).unwrap_or(0),
                Self::LOCAL => v.local = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from),
                Self::LEARNING => v.learning = value.first().is_some_and(|b| *b != 0),
                Self::PROXY => v.proxy = value.first().is_some_and(|b| *b != 0),
                Self::PORT => v.port = <[u8; 2]>::try_from(value).map(u16::from_be_bytes).unwrap_or(0),
                _ => {}
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::link::{
        InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    };
    use netlink_packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    };

    use super::*;

    fn bytes(msg: &impl Emitable) -> Vec<u8> {
        let mut out = vec![0; msg.buffer_len()];
        msg.emit(&mut out);
        out
    }

    #[test]
    fn neighbour_messages_are_read_in_place() {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = 42;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![2, 0x42, 10, 0, 0, 9]),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(192, 0, 2, 2))),
        ];
        let bytes = bytes(&msg);
        let e = Entry::parse(&bytes).expect("parses");
        let header = (e.header.ifindex, e.header.state, e.header.flags);
        assert_eq!(header, (42, NeighbourState::Permanent, NeighbourFlags::Own));
        assert_eq!(e.mac, Some(Mac([2, 0x42, 10, 0, 0, 9])));
        assert_eq!(e.ip, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert!(Entry::parse(&bytes[..8]).is_none());
    }

    #[test]
    fn link_messages_are_read_in_place() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        let vxlan = vec![
            InfoVxlan::Id(4096),
            InfoVxlan::Local(Ipv4Addr::new(192, 0, 2, 1)),
            InfoVxlan::Port(4789),
            InfoVxlan::Learning(false),
            InfoVxlan::Proxy(true),
        ];
        msg.attributes = vec![
            LinkAttribute::IfName("ovvx4096".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(6),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vxlan)),
            ]),
        ];
        let bytes = bytes(&msg);
        let link = Link::parse(&bytes).expect("parses");
        let want = Link {
            index: 7,
            up: true,
            name: Some("ovvx4096"),
            mtu: 1450,
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            master: Some(6),
            kind: Some("vxlan"),
            vxlan: Some(Vxlan {
                vni: 4096,
                local: Some(Ipv4Addr::new(192, 0, 2, 1)),
                port: 4789,
                learning: false,
                proxy: true,
            }),
        };
        assert_eq!(link, want);

        let mut bridge = LinkMessage::default();
        bridge.header.index = 6;
        bridge.attributes = vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)])];
        let bytes = super::tests::bytes(&bridge);
        let link = Link::parse(&bytes).expect("parses");
        assert_eq!((link.index, link.up, link.kind, link.vxlan), (6, false, Some("bridge"), None));
    }
}
