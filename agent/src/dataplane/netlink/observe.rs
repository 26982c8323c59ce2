//! `observe`: dumps links, addresses, FDB and neighbour tables and keeps what
//! belongs to us (devices named with the `ov` prefix).
//!
//! Masters are resolved through the full link dump, so a port of a foreign
//! bridge still reports its master's name. Links and the FDB and neighbour
//! tables (tens of thousands of entries at scale) are read over the
//! [`raw`](super::raw) socket: each message is looked at in the receive
//! buffer ([`wire`](super::wire)) and only what is ours becomes compact
//! `ObservedLink`/`FdbEntry`/`NeighEntry` values, so no decoded copy of a
//! dump exists at any time.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourMessage, NeighbourState};

use super::cache::DeviceEntries;
use super::changes::Subscriptions;
use super::raw::{Raw, RawError};
use super::wire::{Entry, Link};
use crate::dataplane::DataplaneError;
use crate::model::{DEVICE_PREFIX, FdbEntry, LinkKind, NeighEntry, Observed, ObservedLink};

/// Everything of ours in the namespace of `handle`. With `cached`, the FDB
/// and neighbour entries come from the notification cache when it can vouch
/// for them; otherwise they are dumped (and refill the cache).
pub(super) async fn observe(
    handle: &rtnetlink::Handle,
    raw: &Raw,
    subs: &Subscriptions,
    cached: bool,
) -> Result<Observed, DataplaneError> {
    let (mut observed, vxlans) = links(raw, handle).await?;
    let entries = match cached.then(|| subs.cached(vxlans.keys().copied())).flatten() {
        Some(entries) => entries,
        None => {
            tracing::debug!(cached, "dumping the FDB and neighbour tables");
            subs.start_fill();
            match dump_entries(raw, &vxlans).await {
                Ok(entries) => {
                    subs.fill(&entries);
                    entries
                }
                Err(e) => {
                    subs.fill_failed();
                    return Err(e);
                }
            }
        }
    };
    for (index, dev) in entries {
        let Some(name) = vxlans.get(&index) else { continue };
        if !dev.fdb.is_empty() {
            observed.fdb.insert(name.clone(), dev.fdb);
        }
        if !dev.neigh.is_empty() {
            observed.neigh.insert(name.clone(), dev.neigh);
        }
    }
    Ok(observed)
}

/// Our links with their addresses, and our VXLAN devices' names by index.
async fn links(
    raw: &Raw,
    handle: &rtnetlink::Handle,
) -> Result<(Observed, HashMap<u32, String>), DataplaneError> {
    // Every link's name (a master may be a foreign bridge), ours in full.
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut ours: Vec<(ObservedLink, Option<u32>)> = Vec::new();
    let each = |_kind: u16, payload: &[u8]| {
        let Some(link) = Link::parse(payload) else { return };
        let Some(name) = link.name else { return };
        names.insert(link.index, name.to_string());
        if name.starts_with(DEVICE_PREFIX) {
            ours.push((observed_link(name, &link), link.master));
        }
    };
    raw.dump(get_links(), each).await.map_err(|e| dump_failed("ip link show", e))?;
    let mut observed = Observed::default();
    for (mut link, master) in ours {
        link.master = master.and_then(|m| names.get(&m).cloned());
        observed.links.insert(link.name.clone(), link);
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
    Ok((observed, vxlans))
}

/// An `RTM_GETLINK` dump request that spares the kernel the statistics.
fn get_links() -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg))
}

fn failed(what: &str, source: rtnetlink::Error) -> DataplaneError {
    DataplaneError::Netlink { what: what.to_string(), source }
}

/// One of our links as the planner sees it (its master still to be named).
fn observed_link(name: &str, link: &Link) -> ObservedLink {
    let kind = match (link.kind, &link.vxlan) {
        (Some("bridge"), _) => LinkKind::Bridge,
        (Some("veth"), _) => LinkKind::Veth,
        (Some("vxlan"), Some(v)) => {
            LinkKind::Vxlan { vni: v.vni, local: v.local, port: v.port, learning: v.learning, proxy: v.proxy }
        }
        (kind, _) => LinkKind::Other(kind.unwrap_or_default().to_string()),
    };
    ObservedLink {
        name: name.to_string(),
        index: link.index,
        kind,
        mtu: link.mtu,
        mac: link.mac,
        up: link.up,
        master: None,
        addrs: BTreeSet::new(),
    }
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

/// `bridge fdb show` and `ip -4 neigh show nud permanent` for our VXLAN
/// devices: their own (`self`) FDB entries with a destination and their
/// permanent IPv4 neighbours, by device index (every device, even empty).
async fn dump_entries(
    raw: &Raw,
    vxlans: &HashMap<u32, String>,
) -> Result<HashMap<u32, DeviceEntries>, DataplaneError> {
    let mut out: HashMap<u32, DeviceEntries> =
        vxlans.keys().map(|i| (*i, DeviceEntries::default())).collect();
    if out.is_empty() {
        return Ok(out);
    }
    let fdb = |_kind: u16, payload: &[u8]| {
        let Some(e) = Entry::parse(payload) else { return };
        let Some(dev) = out.get_mut(&e.header.ifindex) else { return };
        let flags = e.header.flags;
        if !flags.contains(NeighbourFlags::Own) || flags.contains(NeighbourFlags::Controller) {
            return;
        }
        if let (Some(mac), Some(dst)) = (e.mac, e.ip) {
            dev.fdb.insert(FdbEntry { mac, dst });
        }
    };
    raw.dump(get_neighbours(AddressFamily::Bridge), fdb)
        .await
        .map_err(|e| dump_failed("bridge fdb show", e))?;
    let neigh = |_kind: u16, payload: &[u8]| {
        let Some(e) = Entry::parse(payload) else { return };
        let Some(dev) = out.get_mut(&e.header.ifindex) else { return };
        if e.header.state != NeighbourState::Permanent {
            return;
        }
        if let (Some(mac), Some(ip)) = (e.mac, e.ip) {
            dev.neigh.insert(NeighEntry { ip, mac });
        }
    };
    raw.dump(get_neighbours(AddressFamily::Inet), neigh)
        .await
        .map_err(|e| dump_failed("ip -4 neigh show", e))?;
    Ok(out)
}

/// An `RTM_GETNEIGH` dump request for one address family.
fn get_neighbours(family: AddressFamily) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family;
    NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg))
}

fn dump_failed(what: &str, e: RawError) -> DataplaneError {
    match e {
        RawError::Netlink(source) => failed(what, source),
        RawError::Io(reason) => DataplaneError::OutcomeUnknown { what: what.to_string(), reason },
    }
}
