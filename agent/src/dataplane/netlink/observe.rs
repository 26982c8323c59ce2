//! `observe`: dumps links, addresses, FDB and neighbour tables and keeps what
//! belongs to us (devices named with the `ov` prefix).
//!
//! Masters are resolved through the full link dump, so a port of a foreign
//! bridge still reports its master's name. FDB destinations of AF_BRIDGE
//! entries come back as raw bytes (`NeighbourAddress::Other`), not `Inet`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use ovnet_ipam_store::Mac;

use super::{dump_links, link_kind, link_name};
use crate::dataplane::DataplaneError;
use crate::model::{DEVICE_PREFIX, FdbEntry, LinkKind, NeighEntry, Observed, ObservedLink};

/// Everything of ours in the namespace of `handle`.
pub(super) async fn observe(handle: &rtnetlink::Handle) -> Result<Observed, DataplaneError> {
    let links = dump_links(handle).await.map_err(|source| failed("ip link show", source))?;
    let names: HashMap<u32, &str> =
        links.iter().filter_map(|l| link_name(l).map(|n| (l.header.index, n))).collect();
    let mut observed = Observed::default();
    for link in &links {
        if let Some(ours) = observed_link(link, &names) {
            observed.links.insert(ours.name.clone(), ours);
        }
    }
    let by_index: HashMap<u32, String> = observed.links.values().map(|l| (l.index, l.name.clone())).collect();

    let addrs = ipv4_addrs(handle).await?;
    for (index, net) in addrs.iter().filter_map(ipv4_addr) {
        if let Some(link) = by_index.get(&index).and_then(|name| observed.links.get_mut(name)) {
            link.addrs.insert(net);
        }
    }

    let vxlans: HashMap<u32, String> = observed
        .links
        .values()
        .filter(|l| matches!(l.kind, LinkKind::Vxlan { .. }))
        .map(|l| (l.index, l.name.clone()))
        .collect();
    observed.fdb = fdb_entries(handle, &vxlans).await?;
    observed.neigh = neigh_entries(handle, &vxlans).await?;
    Ok(observed)
}

fn failed(what: &str, source: rtnetlink::Error) -> DataplaneError {
    DataplaneError::Netlink { what: what.to_string(), source }
}

/// The link as the planner sees it, if its name carries our prefix.
fn observed_link(link: &LinkMessage, names: &HashMap<u32, &str>) -> Option<ObservedLink> {
    let name = link_name(link)?;
    if !name.starts_with(DEVICE_PREFIX) {
        return None;
    }
    let mut mtu = 0;
    let mut mac = None;
    let mut master = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(bytes) => mac = mac_from(bytes),
            LinkAttribute::Controller(index) => master = names.get(index).map(|n| n.to_string()),
            _ => {}
        }
    }
    Some(ObservedLink {
        name: name.to_string(),
        index: link.header.index,
        kind: kind_of(link),
        mtu,
        mac,
        up: link.header.flags.contains(LinkFlags::Up),
        master,
        addrs: BTreeSet::new(),
    })
}

fn kind_of(link: &LinkMessage) -> LinkKind {
    match link_kind(link) {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Vxlan) => vxlan_kind(link),
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other(String::new()),
    }
}

/// `ip -d link show` of a VXLAN device: id, local, dstport, [no]learning, proxy.
fn vxlan_kind(link: &LinkMessage) -> LinkKind {
    let (mut vni, mut local, mut port, mut learning, mut proxy) = (0, None, 0, false, false);
    let infos = link.attributes.iter().filter_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    });
    for info in infos.flatten() {
        let LinkInfo::Data(InfoData::Vxlan(data)) = info else {
            continue;
        };
        for item in data {
            match item {
                InfoVxlan::Id(id) => vni = *id,
                InfoVxlan::Local(ip) => local = Some(*ip),
                InfoVxlan::Port(p) => port = *p,
                InfoVxlan::Learning(on) => learning = *on,
                InfoVxlan::Proxy(on) => proxy = *on,
                _ => {}
            }
        }
    }
    LinkKind::Vxlan { vni, local, port, learning, proxy }
}

fn mac_from(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

/// `ip -4 addr show`: every IPv4 address of the namespace.
pub(super) async fn ipv4_addrs(handle: &rtnetlink::Handle) -> Result<Vec<AddressMessage>, DataplaneError> {
    let mut request = handle.address().get();
    request.message_mut().header.family = AddressFamily::Inet;
    request.execute().try_collect().await.map_err(|source| failed("ip -4 addr show", source))
}

/// An IPv4 address with its prefix and link index (`IFA_LOCAL`, else `IFA_ADDRESS`).
pub(super) fn ipv4_addr(msg: &AddressMessage) -> Option<(u32, Ipv4Net)> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let pick = |want_local: bool| {
        msg.attributes.iter().find_map(|a| match (a, want_local) {
            (AddressAttribute::Local(IpAddr::V4(ip)), true) => Some(*ip),
            (AddressAttribute::Address(IpAddr::V4(ip)), false) => Some(*ip),
            _ => None,
        })
    };
    let ip = pick(true).or_else(|| pick(false))?;
    let net = Ipv4Net::new(ip, msg.header.prefix_len).ok()?;
    Some((msg.header.index, net))
}

/// `bridge fdb show`: the device's own (`self`) entries with a destination.
async fn fdb_entries(
    handle: &rtnetlink::Handle,
    vxlans: &HashMap<u32, String>,
) -> Result<BTreeMap<String, BTreeSet<FdbEntry>>, DataplaneError> {
    let mut out: BTreeMap<String, BTreeSet<FdbEntry>> = BTreeMap::new();
    if vxlans.is_empty() {
        return Ok(out);
    }
    let entries: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(|source| failed("bridge fdb show", source))?;
    for msg in &entries {
        let Some(dev) = vxlans.get(&msg.header.ifindex) else {
            continue;
        };
        let flags = msg.header.flags;
        if !flags.contains(NeighbourFlags::Own) || flags.contains(NeighbourFlags::Controller) {
            continue;
        }
        if let (Some(mac), Some(dst)) = (neigh_mac(msg), neigh_ipv4(msg)) {
            out.entry(dev.clone()).or_default().insert(FdbEntry { mac, dst });
        }
    }
    Ok(out)
}

/// `ip -4 neigh show nud permanent` on our VXLAN devices.
async fn neigh_entries(
    handle: &rtnetlink::Handle,
    vxlans: &HashMap<u32, String>,
) -> Result<BTreeMap<String, BTreeSet<NeighEntry>>, DataplaneError> {
    let mut out: BTreeMap<String, BTreeSet<NeighEntry>> = BTreeMap::new();
    if vxlans.is_empty() {
        return Ok(out);
    }
    let entries: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(|source| failed("ip -4 neigh show", source))?;
    for msg in &entries {
        let Some(dev) = vxlans.get(&msg.header.ifindex) else {
            continue;
        };
        if msg.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(mac), Some(ip)) = (neigh_mac(msg), neigh_ipv4(msg)) {
            out.entry(dev.clone()).or_default().insert(NeighEntry { ip, mac });
        }
    }
    Ok(out)
}

fn neigh_mac(msg: &NeighbourMessage) -> Option<Mac> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => mac_from(bytes),
        _ => None,
    })
}

/// `NDA_DST` as IPv4: parsed as `Inet` for AF_INET, raw bytes for AF_BRIDGE.
fn neigh_ipv4(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}
