//! Endpoint plumbing: a veth pair between a container namespace and the
//! network's bridge (the CNI bridge plugin's job), in two steps so that a
//! connect can make and raise the pair while etcd is still writing the
//! endpoint, and give it its address once the write is done.
//!
//! The design decision: the pair is made by ONE request in which the
//! container end is born inside the namespace (`IFLA_NET_NS_FD` in the peer's
//! message) under its final name, MAC and MTU, and the host end is already a
//! port of the bridge, up. Moving a device into another namespace afterwards
//! waits for RCU grace periods (12-18 ms measured); creating it there does
//! not, and the reconciler never sees the host end outside its bridge. The
//! container end is then configured through the socket the connect opened
//! inside the namespace ([`NetnsHandle`]), and `configure_veth` answers only
//! once the host end forwards (see [`wait_forwarding`]). Deleting the host
//! end removes the whole pair, so cleanup is one call. Each change is logged
//! once at info, after it succeeded, as the iproute2 command it equals.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures::StreamExt;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoPortData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
    State,
};
use nix::errno::Errno;
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ops::{delete_existing_link, delete_link, without_ipv6};
use super::underlay::default_routes;
use super::{dump_links, index_of, is_errno, link_by_name, link_name, ok_if_exists};
use crate::dataplane::{AttachSpec, DataplaneError};
use crate::netns::NetnsHandle;

type Handle = rtnetlink::Handle;

/// How long `configure_veth` waits for the host end to forward before it
/// answers anyway (with a warning): a bridge with STP on takes seconds.
const FORWARDING_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two looks at the host end while it is not forwarding yet.
const FORWARDING_POLL: Duration = Duration::from_millis(1);

/// `ip -n NS link show`: the names of the links in the namespace.
pub(super) async fn links(ns: &NetnsHandle) -> Result<Vec<String>, DataplaneError> {
    let links =
        dump_links(ns.handle()).await.map_err(netlink(format!("ip -n {} link show", ns.path().display())))?;
    Ok(links.iter().filter_map(link_name).map(str::to_string).collect())
}

/// Makes the pair and brings the container end (and `lo`) up, without an
/// address; on failure nothing is left. A pair left with the same host name
/// by an interrupted attach of the same endpoint is replaced, so a retried
/// attach succeeds.
pub(super) async fn create_veth(
    h: &Handle,
    ns: &NetnsHandle,
    spec: &AttachSpec,
) -> Result<(), DataplaneError> {
    let bridge = index_of(h, &spec.bridge).await.map_err(netlink(format!("ip link show {}", spec.bridge)))?;
    let bridge =
        bridge.ok_or_else(|| DataplaneError::Other(format!("bridge {} does not exist", spec.bridge)))?;
    let peer = create_pair(h, ns, bridge, spec).await?;
    let Err(err) = raise(ns, peer, spec).await else {
        return Ok(());
    };
    // Deleting the host end takes the peer with it.
    let host = &spec.host_ifname;
    match delete_link(h, host).await {
        Ok(()) => changed(&format!("ip link del {host}")),
        Err(e) => tracing::warn!(error = %e, "cleaning up veth {host} after a failed attach"),
    }
    Err(err)
}

/// `ip link add HOST mtu MTU master BRIDGE up type veth peer name IFNAME
/// netns NS address MAC mtu MTU`; a stale host end of the same name (an
/// interrupted attach) is deleted first and the pair made again. Returns the
/// index of the container end when the kernel said it.
async fn create_pair(
    h: &Handle,
    ns: &NetnsHandle,
    bridge: u32,
    spec: &AttachSpec,
) -> Result<Option<u32>, DataplaneError> {
    let host = &spec.host_ifname;
    let what = format!(
        "ip link add {host} mtu {mtu} master {} up type veth peer name {} netns {} address {} mtu {mtu}",
        spec.bridge,
        spec.ifname,
        ns.path().display(),
        spec.mac,
        mtu = spec.mtu
    );
    let peer = match add_link_echo(h, veth_pair(ns, bridge, spec)).await {
        Err(e) if is_errno(&e, &[Errno::EEXIST]) => {
            // Either the host end is stale, or IFNAME exists in the namespace;
            // only the first is ours to remove.
            let del = format!("ip link del {host}");
            if !delete_existing_link(h, host).await.map_err(netlink(del.clone()))? {
                return Err(DataplaneError::Netlink { what, source: e });
            }
            changed(&del);
            add_link_echo(h, veth_pair(ns, bridge, spec)).await.map_err(netlink(what.clone()))?
        }
        other => other.map_err(netlink(what.clone()))?,
    };
    changed(&what);
    Ok(peer)
}

/// `ip link add HOST mtu MTU master BRIDGE up type veth peer name IFNAME
/// address MAC mtu MTU`: both ends here, the container end down, for a
/// runtime that moves it into its sandbox itself (Docker). A stale pair of
/// the same host name is deleted first.
pub(super) async fn create_veth_here(h: &Handle, spec: &AttachSpec) -> Result<(), DataplaneError> {
    let bridge = index_of(h, &spec.bridge).await.map_err(netlink(format!("ip link show {}", spec.bridge)))?;
    let bridge =
        bridge.ok_or_else(|| DataplaneError::Other(format!("bridge {} does not exist", spec.bridge)))?;
    let host = &spec.host_ifname;
    let what = format!(
        "ip link add {host} mtu {mtu} master {} up type veth peer name {} address {} mtu {mtu}",
        spec.bridge,
        spec.ifname,
        spec.mac,
        mtu = spec.mtu
    );
    let pair = || {
        let peer = LinkUnspec::new_with_name(&spec.ifname).address(spec.mac.0.to_vec()).mtu(spec.mtu).build();
        LinkVeth::new(host, &spec.ifname)
            .mtu(spec.mtu)
            .controller(bridge)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build()
    };
    match h.link().add(pair()).execute().await {
        Err(e) if is_errno(&e, &[Errno::EEXIST]) => {
            let del = format!("ip link del {host}");
            delete_existing_link(h, host).await.map_err(netlink(del.clone()))?;
            changed(&del);
            h.link().add(pair()).execute().await.map_err(netlink(what.clone()))?;
        }
        other => other.map_err(netlink(what.clone()))?,
    }
    changed(&what);
    Ok(())
}

/// The RTM_NEWLINK message of `create_pair`. The kernel brings the host end
/// up and then enslaves it in the same request; the peer cannot be brought
/// up before the pair exists (ENOTCONN), so `raise` does that.
fn veth_pair(ns: &NetnsHandle, bridge: u32, spec: &AttachSpec) -> LinkMessage {
    let peer = LinkUnspec::new_with_name(&spec.ifname)
        .address(spec.mac.0.to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(ns.file().as_raw_fd())
        .build();
    LinkVeth::new(&spec.host_ifname, &spec.ifname)
        .mtu(spec.mtu)
        .controller(bridge)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build()
}

/// `ip link add` with `NLM_F_ECHO`: the kernel (6.1 and later) sends back
/// the new device, whose `IFLA_LINK` is a veth's peer. Returns that index,
/// which saves a lookup, or `None` from a kernel that does not echo.
async fn add_link_echo(h: &Handle, link: LinkMessage) -> Result<Option<u32>, rtnetlink::Error> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
    let mut responses = h.clone().request(req)?;
    let mut peer = None;
    while let Some(message) = responses.next().await {
        match message.payload {
            NetlinkPayload::Error(err) => return Err(rtnetlink::Error::NetlinkError(err)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let index = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Link(index) => Some(*index),
                    _ => None,
                });
                peer = peer.or(index);
            }
            _ => {}
        }
    }
    Ok(peer)
}

/// Inside the namespace: the container end without IPv6, then up (the host
/// end is up already, so carrier comes on for both here), and `lo` up.
/// Remembers the container end's index in `ns` for `configure_veth`.
///
/// The networks carry IPv4 only. With a link-local address the container
/// end would, on coming up, send duplicate address detection, a router
/// solicitation and MLD reports: multicast the bridge floods through the
/// VXLAN device to every host of the network, on every connect. The mode
/// must be set while the device is down (see `ops::up_without_ipv6`), which
/// the kernel refuses in the request that makes the pair, so it is a request
/// of its own, sent beside the one for `lo`.
async fn raise(ns: &NetnsHandle, peer: Option<u32>, spec: &AttachSpec) -> Result<(), DataplaneError> {
    let (inner, ifname, path) = (ns.handle(), &spec.ifname, ns.path().display());
    let index = match peer {
        Some(index) => index,
        None => {
            let index =
                index_of(inner, ifname).await.map_err(netlink(format!("ip -n {path} link show {ifname}")))?;
            index.ok_or_else(|| DataplaneError::Other(format!("{ifname} did not appear in {path}")))?
        }
    };
    ns.note_link(ifname, index);
    let no_ipv6 = inner.link().set(without_ipv6(LinkUnspec::new_with_index(index)).build()).execute();
    let lo = inner.link().set(LinkUnspec::new_with_name("lo").up().build()).execute();
    let (no_ipv6, lo) = futures::join!(no_ipv6, lo);
    logged([
        (no_ipv6, format!("ip -n {path} link set {ifname} addrgenmode none")),
        (lo, format!("ip -n {path} link set lo up")),
    ])?;
    let up = inner.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await;
    logged([(up, format!("ip -n {path} link set {ifname} up"))])
}

/// Inside the namespace: the address, and a default route via the gateway
/// when the namespace has none; then waits until the host end forwards.
pub(super) async fn configure_veth(
    h: &Handle,
    ns: &NetnsHandle,
    spec: &AttachSpec,
) -> Result<(), DataplaneError> {
    let (inner, ifname, path) = (ns.handle(), &spec.ifname, ns.path().display());
    let index = match ns.noted_link(ifname) {
        Some(index) => index,
        None => {
            let index =
                index_of(inner, ifname).await.map_err(netlink(format!("ip -n {path} link show {ifname}")))?;
            index.ok_or_else(|| DataplaneError::Other(format!("{ifname} is not in {path}")))?
        }
    };
    let addr = inner.address().add(index, IpAddr::V4(spec.addr.addr()), spec.addr.prefix_len());
    let addr = async { ok_if_exists(addr.execute().await) };
    let (addr, routes) = futures::join!(addr, default_routes(inner));
    logged([(addr, format!("ip -n {path} addr add {} dev {ifname}", spec.addr))])?;
    if routes?.is_empty() {
        let what = format!("ip -n {path} route add default via {} dev {ifname}", spec.gateway);
        add_default_route(inner, index, spec.gateway).await.map_err(netlink(what.clone()))?;
        changed(&what);
    }
    wait_forwarding(h, &spec.host_ifname).await
}

/// Logs the requests that succeeded; returns the first failure.
fn logged<const N: usize>(
    results: [(Result<(), rtnetlink::Error>, String); N],
) -> Result<(), DataplaneError> {
    let mut first_error = None;
    for (result, what) in results {
        match result {
            Ok(()) => changed(&what),
            Err(source) => {
                first_error.get_or_insert(DataplaneError::Netlink { what, source });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Waits (at most `FORWARDING_TIMEOUT`) until the host end is oper-up and
/// its bridge port forwarding.
///
/// Carrier comes on when the second end goes up, but the kernel acts on it
/// later, from its linkwatch work: only then does the end that went up first
/// (the host end) get its qdisc activated (until then a `noop` one drops
/// every frame) and its bridge port enabled. A connect that answered before
/// then lost the container's first ARP request, retried only after a second.
/// The container end went up with carrier, so the kernel activated it on
/// the spot. The bridge port is enabled by the same linkwatch run, after the
/// qdisc, so "forwarding" covers both.
async fn wait_forwarding(h: &Handle, host: &str) -> Result<(), DataplaneError> {
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        let link = link_by_name(h, host).await.map_err(netlink(format!("ip -d link show {host}")))?;
        let link = link.ok_or_else(|| DataplaneError::Other(format!("{host} disappeared")))?;
        if forwarding(&link) {
            tracing::debug!(host, polls, waited = ?started.elapsed(), "veth forwarding");
            return Ok(());
        }
        if started.elapsed() >= FORWARDING_TIMEOUT {
            tracing::warn!(
                host,
                "the veth does not forward yet after {FORWARDING_TIMEOUT:?} (is STP on for the bridge?); answering anyway"
            );
            return Ok(());
        }
        tokio::time::sleep(FORWARDING_POLL).await;
    }
}

/// Whether a bridge port passes frames: oper-up and forwarding.
fn forwarding(link: &LinkMessage) -> bool {
    let oper_up = link.attributes.iter().any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
    let forwarding = link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                port.iter().any(|p| matches!(p, InfoBridgePort::State(BridgePortState::Forwarding)))
            }
            _ => false,
        }),
        _ => false,
    });
    oper_up && forwarding
}

/// Logs one change made to the kernel, once, as the iproute2 command it equals.
fn changed(what: &str) {
    tracing::info!("{what}");
}

/// `ip route add default via GATEWAY dev INDEX`.
async fn add_default_route(inner: &Handle, index: u32, gateway: Ipv4Addr) -> Result<(), rtnetlink::Error> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gateway)
        .output_interface(index)
        .build();
    ok_if_exists(inner.route().add(route).execute().await)
}

/// Maps a netlink failure into an error naming the iproute2 command.
fn netlink(what: String) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    move |source| DataplaneError::Netlink { what, source }
}
