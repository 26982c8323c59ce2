//! `underlay`: which interface and address this host's VTEP uses.
//!
//! With an advertise address, the interface holding it; without one, the
//! IPv4 default route of the main table (`ip -4 route show default`): its
//! `src`, else the first address of its output interface, like flannel's
//! `--iface` auto-detection.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::RouteMessageBuilder;

use super::link_name;
use super::observe::{ipv4_addr, ipv4_addrs};
use crate::dataplane::{DataplaneError, Underlay};

type Handle = rtnetlink::Handle;

/// The underlay for `addr`, or the default route's when `None`.
pub(super) async fn underlay(h: &Handle, addr: Option<Ipv4Addr>) -> Result<Underlay, DataplaneError> {
    let addrs: Vec<(u32, Ipv4Addr)> =
        ipv4_addrs(h).await?.iter().filter_map(ipv4_addr).map(|(i, net)| (i, net.addr())).collect();
    let (addr, index) = match addr {
        Some(want) => {
            let index = addrs.iter().find(|(_, ip)| *ip == want).map(|(i, _)| *i);
            let index = index.ok_or_else(|| other(format!("no interface holds advertise address {want}")))?;
            (want, index)
        }
        None => {
            let (index, src) = default_route(h).await?.ok_or_else(|| {
                other("no IPv4 default route in the main table; give the advertise address".into())
            })?;
            let first = || addrs.iter().find(|(i, _)| *i == index).map(|(_, ip)| *ip);
            let addr = src.or_else(first).ok_or_else(|| {
                other(format!("the default route's interface (index {index}) has no IPv4 address"))
            })?;
            (addr, index)
        }
    };
    let link = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|source| DataplaneError::Netlink { what: format!("ip link show index {index}"), source })?
        .ok_or_else(|| other(format!("no link with index {index}")))?;
    let ifname = link_name(&link).unwrap_or_default().to_string();
    let mtu = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    });
    Ok(Underlay { addr, ifname, mtu: mtu.unwrap_or(1500) })
}

fn other(msg: String) -> DataplaneError {
    DataplaneError::Other(msg)
}

/// `ip -4 route show table main default`: output interface and `src` of the
/// first unicast default route, if there is one.
async fn default_route(h: &Handle) -> Result<Option<(u32, Option<Ipv4Addr>)>, DataplaneError> {
    let routes = default_routes(h).await?;
    let unicast = routes.iter().filter(|r| r.header.kind == RouteType::Unicast);
    Ok(unicast.into_iter().find_map(|r| Some((output_interface(r)?, pref_source(r)))))
}

/// Every IPv4 default route (of any type) in the main table.
pub(super) async fn default_routes(h: &Handle) -> Result<Vec<RouteMessage>, DataplaneError> {
    let routes: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|source| DataplaneError::Netlink { what: "ip -4 route show".into(), source })?;
    let main = u32::from(RouteHeader::RT_TABLE_MAIN);
    Ok(routes.into_iter().filter(|r| r.header.destination_prefix_length == 0 && table(r) == main).collect())
}

fn table(route: &RouteMessage) -> u32 {
    let attr = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    attr.unwrap_or(u32::from(route.header.table))
}

/// `dev` of the route, or of its first next hop for a multipath route.
fn output_interface(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        RouteAttribute::MultiPath(hops) => hops.first().map(|hop| hop.interface_index),
        _ => None,
    })
}

fn pref_source(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}
