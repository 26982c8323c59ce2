//! `apply`: one function per `Op`, each idempotent.
//!
//! Links are addressed by name in the request itself (the kernel looks them
//! up), so most ops are a single round trip. Flood entries (all-zeros MAC)
//! are appended with `NLM_F_APPEND`, the only way to hold one per peer;
//! rtnetlink's neighbour builder cannot set that flag, so FDB messages are
//! built here by hand.

use std::net::{IpAddr, Ipv4Addr};

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::InfoKind;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use ovnet_ipam_store::Mac;
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVxlan,
};

use super::{
    OpError, created, index_of, link_by_name, link_kind, ok_if_exists, ok_if_missing, require_index,
};
use crate::op::Op;

type Handle = rtnetlink::Handle;

/// Applies one op; "already there" and "already gone" are success.
pub(super) async fn apply_op(h: &Handle, op: &Op) -> Result<(), OpError> {
    match op {
        Op::CreateBridge { name, mac, mtu } => create_bridge(h, name, *mac, *mtu).await,
        Op::CreateVxlan { name, vni, local, port, mtu, master } => {
            let vxlan = LinkVxlan::new(name, *vni).local(*local).port(*port).learning(false).proxy(true);
            create_vxlan(h, name, vxlan, *mtu, master).await
        }
        Op::DeleteLink { name } => Ok(delete_link(h, name).await?),
        Op::SetMac { name, mac } => {
            set_link(h, LinkUnspec::new_with_name(name).address(mac.0.to_vec())).await
        }
        Op::SetMtu { name, mtu } => set_link(h, LinkUnspec::new_with_name(name).mtu(*mtu)).await,
        Op::SetMaster { name, master } => set_master(h, name, master).await,
        Op::SetUp { name } => set_link(h, LinkUnspec::new_with_name(name).up()).await,
        Op::AddAddr { dev, addr } => add_addr(h, dev, *addr).await,
        Op::DelAddr { dev, addr } => del_addr(h, dev, *addr).await,
        Op::AddFdb { dev, mac, dst } => add_fdb(h, dev, *mac, *dst).await,
        Op::DelFdb { dev, mac, dst } => del_fdb(h, dev, *mac, *dst).await,
        Op::AddNeigh { dev, ip, mac } => add_neigh(h, dev, *ip, *mac).await,
        Op::DelNeigh { dev, ip } => del_neigh(h, dev, *ip).await,
    }
}

/// `ip link set ...` for a message built by name or index.
async fn set_link<T>(h: &Handle, msg: LinkMessageBuilder<T>) -> Result<(), OpError> {
    Ok(h.link().set(msg.build()).execute().await?)
}

/// `ip link add name NAME type bridge` + `ip link set NAME address MAC mtu MTU up`.
async fn create_bridge(h: &Handle, name: &str, mac: Mac, mtu: u32) -> Result<(), OpError> {
    // LinkBridge::new already sets the link up.
    let bridge = LinkBridge::new(name).address(mac.0.to_vec()).mtu(mtu).build();
    if created(h.link().add(bridge).execute().await)? {
        return Ok(());
    }
    // It was there already: make sure of the rest.
    set_link(h, LinkUnspec::new_with_name(name).address(mac.0.to_vec()).mtu(mtu).up()).await
}

/// `ip link add NAME type vxlan ... nolearning proxy` + `ip link set NAME
/// master MASTER mtu MTU up` + `bridge link set dev NAME learning off`.
async fn create_vxlan(
    h: &Handle,
    name: &str,
    vxlan: LinkMessageBuilder<LinkVxlan>,
    mtu: u32,
    master: &str,
) -> Result<(), OpError> {
    let master_index = require_index(h, master).await?;
    let msg = vxlan.mtu(mtu).controller(master_index).up().build();
    if !created(h.link().add(msg).execute().await)? {
        let set = LinkUnspec::new_with_name(name).mtu(mtu).controller(master_index).up();
        set_link(h, set).await?;
    }
    port_learning_off(h, name).await
}

/// `ip link set NAME master MASTER`, and for a VXLAN device also
/// `bridge link set dev NAME learning off`.
async fn set_master(h: &Handle, name: &str, master: &str) -> Result<(), OpError> {
    let link = link_by_name(h, name).await?.ok_or_else(|| OpError::NoDevice(name.to_string()))?;
    let master_index = require_index(h, master).await?;
    set_link(h, LinkUnspec::new_with_index(link.header.index).controller(master_index)).await?;
    if link_kind(&link) == Some(&InfoKind::Vxlan) {
        port_learning_off(h, name).await?;
    }
    Ok(())
}

/// `bridge link set dev NAME learning off`: the bridge must not learn remote
/// MACs behind the VXLAN port; the FDB is programmed from the store.
async fn port_learning_off(h: &Handle, name: &str) -> Result<(), OpError> {
    let msg = LinkBridgePort::new(0).name(name).learning(false).build();
    Ok(h.link().set_port(msg).execute().await?)
}

/// `ip link del NAME`; a missing link counts as deleted.
pub(super) async fn delete_link(h: &Handle, name: &str) -> Result<(), rtnetlink::Error> {
    let msg = LinkUnspec::new_with_name(name).build();
    ok_if_missing(h.link().del_with_message(msg).execute().await)
}

/// `ip link del NAME`; returns whether there was such a link to delete (so
/// callers log only deletions that happened).
pub(super) async fn delete_existing_link(h: &Handle, name: &str) -> Result<bool, rtnetlink::Error> {
    let msg = LinkUnspec::new_with_name(name).build();
    match h.link().del_with_message(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if super::is_errno(&e, &[nix::errno::Errno::ENOENT, nix::errno::Errno::ENODEV]) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `ip addr add ADDR dev DEV`; an existing address counts as added.
async fn add_addr(h: &Handle, dev: &str, addr: Ipv4Net) -> Result<(), OpError> {
    let index = require_index(h, dev).await?;
    let request = h.address().add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
    Ok(ok_if_exists(request.execute().await)?)
}

/// `ip addr del ADDR dev DEV`; a missing address or device counts as deleted.
async fn del_addr(h: &Handle, dev: &str, addr: Ipv4Net) -> Result<(), OpError> {
    let Some(index) = index_of(h, dev).await? else {
        return Ok(());
    };
    let msg =
        AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(addr.addr(), addr.prefix_len()).build();
    Ok(ok_if_missing(h.address().del(msg).execute().await)?)
}

/// An AF_BRIDGE `self` FDB entry of a VXLAN device: MAC behind remote VTEP `dst`.
fn fdb_message(index: u32, mac: Mac, dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    msg
}

/// `bridge fdb append 00:00:00:00:00:00 dev DEV dst DST self permanent` for a
/// flood entry (one per peer, so append), `bridge fdb replace MAC dev DEV dst
/// DST self permanent` for a unicast one (one destination per MAC).
async fn add_fdb(h: &Handle, dev: &str, mac: Mac, dst: Ipv4Addr) -> Result<(), OpError> {
    let index = require_index(h, dev).await?;
    let mode = if mac == Mac::ZERO { NLM_F_APPEND } else { NLM_F_REPLACE };
    let msg = RouteNetlinkMessage::NewNeighbour(fdb_message(index, mac, dst));
    Ok(send(h, msg, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode).await?)
}

/// `bridge fdb del MAC dev DEV dst DST self`: removes only this destination,
/// so the other flood entries stay.
async fn del_fdb(h: &Handle, dev: &str, mac: Mac, dst: Ipv4Addr) -> Result<(), OpError> {
    let Some(index) = index_of(h, dev).await? else {
        return Ok(());
    };
    let msg = RouteNetlinkMessage::DelNeighbour(fdb_message(index, mac, dst));
    Ok(ok_if_missing(send(h, msg, NLM_F_REQUEST | NLM_F_ACK).await)?)
}

/// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
async fn add_neigh(h: &Handle, dev: &str, ip: Ipv4Addr, mac: Mac) -> Result<(), OpError> {
    let index = require_index(h, dev).await?;
    let request = h
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac.0)
        .state(NeighbourState::Permanent)
        .replace();
    Ok(request.execute().await?)
}

/// `ip neigh del IP dev DEV`; a missing entry or device counts as deleted.
async fn del_neigh(h: &Handle, dev: &str, ip: Ipv4Addr) -> Result<(), OpError> {
    let Some(index) = index_of(h, dev).await? else {
        return Ok(());
    };
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
    Ok(ok_if_missing(h.neighbours().del(msg).execute().await)?)
}

/// Sends one request with explicit header flags and waits for its ACK.
async fn send(h: &Handle, msg: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    let mut response = h.clone().request(req)?;
    while let Some(answer) = response.next().await {
        match answer.payload {
            NetlinkPayload::Error(err) if err.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
            _ => {}
        }
    }
    Ok(())
}
