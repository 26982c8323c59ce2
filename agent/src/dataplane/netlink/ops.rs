//! `apply` for link and address ops: one function per `Op`, each idempotent.
//!
//! Links are addressed by name in the request itself (the kernel looks them
//! up), so most ops are a single round trip; where an index is needed (a
//! master, an address's device) it comes from the pass's [`Indexes`]. FDB and
//! neighbour ops, thousands at a time, go in bulk through
//! [`entries`](super::entries) instead.

use std::net::{IpAddr, Ipv4Addr};

use genetlink::GenetlinkHandle;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute};
use ovnet_ipam_store::Mac;
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVxlan,
};

use super::entries::Indexes;
use super::features::{self, FeaturesSet};
use super::{OpError, created, link_by_name, link_kind, ok_if_exists, ok_if_missing};
use crate::model::DEVICE_PREFIX;
use crate::op::Op;

type Handle = rtnetlink::Handle;

/// Applies one link or address op; "already there" and "already gone" are
/// success. A link it creates or deletes is forgotten by `ix`.
pub(super) async fn apply_op(
    h: &Handle,
    genl: &GenetlinkHandle,
    ix: &mut Indexes,
    op: &Op,
) -> Result<(), OpError> {
    if let Some(name) = changed_link(op)
        && !name.starts_with(DEVICE_PREFIX)
    {
        return Err(OpError::NotOurs(name.to_string()));
    }
    match op {
        Op::CreateBridge { name, mac, mtu } => {
            ix.forget(name);
            create_bridge(h, name, *mac, *mtu).await
        }
        Op::CreateVxlan { name, vni, local, port, mtu, master } => {
            ix.forget(name);
            // No outer UDP checksum (RFC 7348: SHOULD be zero over IPv4, as
            // Docker and flannel send it): the inner packet carries its own.
            let vxlan = LinkVxlan::new(name, *vni)
                .local(*local)
                .port(*port)
                .learning(false)
                .proxy(true)
                .udp_csum(false);
            create_vxlan(h, genl, ix, name, vxlan, *mtu, master).await
        }
        Op::DeleteLink { name } => {
            ix.forget(name);
            Ok(delete_link(h, name).await?)
        }
        Op::SetMac { name, mac } => {
            set_link(h, LinkUnspec::new_with_name(name).address(mac.0.to_vec())).await
        }
        Op::SetMtu { name, mtu } => set_link(h, LinkUnspec::new_with_name(name).mtu(*mtu)).await,
        Op::SetMaster { name, master } => set_master(h, ix, name, master).await,
        Op::SetUp { name } => set_link(h, LinkUnspec::new_with_name(name).up()).await,
        Op::AddAddr { dev, addr } => add_addr(h, ix, dev, *addr).await,
        Op::DelAddr { dev, addr } => del_addr(h, ix, dev, *addr).await,
        Op::AddFdb { .. } | Op::DelFdb { .. } | Op::AddNeigh { .. } | Op::DelNeigh { .. } => {
            Err(OpError::Io("entry ops are applied in bulk (entries::apply_run)".into()))
        }
        Op::SyncFirewall { .. } => {
            Err(OpError::Io("the firewall is written in one transaction (nft::write)".into()))
        }
    }
}

/// The existing link an op changes or deletes (not one it creates).
fn changed_link(op: &Op) -> Option<&str> {
    match op {
        Op::DeleteLink { name }
        | Op::SetMac { name, .. }
        | Op::SetMtu { name, .. }
        | Op::SetMaster { name, .. }
        | Op::SetUp { name } => Some(name),
        Op::AddAddr { dev, .. } | Op::DelAddr { dev, .. } => Some(dev),
        _ => None,
    }
}

/// `ip link set ...` for a message built by name or index.
async fn set_link<T>(h: &Handle, msg: LinkMessageBuilder<T>) -> Result<(), OpError> {
    Ok(h.link().set(msg.build()).execute().await?)
}

/// `ip link add name NAME type bridge` + `ip link set NAME address MAC mtu
/// MTU addrgenmode none up`.
async fn create_bridge(h: &Handle, name: &str, mac: Mac, mtu: u32) -> Result<(), OpError> {
    // Down until IPv6 is off (LinkBridge::new would set it up).
    let bridge = LinkMessageBuilder::<LinkBridge>::new(name).address(mac.0.to_vec()).mtu(mtu).build();
    if created(h.link().add(bridge).execute().await)? {
        return up_without_ipv6(h, name).await;
    }
    // It was there already: make sure of the rest.
    set_link(h, LinkUnspec::new_with_name(name).address(mac.0.to_vec()).mtu(mtu).up()).await
}

/// `ip link add NAME type vxlan ... nolearning proxy noudpcsum` + `ip link set NAME
/// master MASTER mtu MTU up` + `ethtool -K NAME gro off` + `bridge link set
/// dev NAME learning off`.
async fn create_vxlan(
    h: &Handle,
    genl: &GenetlinkHandle,
    ix: &mut Indexes,
    name: &str,
    vxlan: LinkMessageBuilder<LinkVxlan>,
    mtu: u32,
    master: &str,
) -> Result<(), OpError> {
    let master_index = ix.require(h, master).await?;
    let msg = vxlan.mtu(mtu).controller(master_index).build();
    if created(h.link().add(msg).execute().await)? {
        // An optimisation only: a kernel without ethtool over netlink (before
        // 5.6) or a refusal leaves GRO on and the device otherwise as wanted.
        if let Err(e) = features::set(genl, FeaturesSet::new(name, &[(features::GRO, false)])).await {
            tracing::warn!(error = %e, "leaving GRO on for {name}");
        }
        up_without_ipv6(h, name).await?;
    } else {
        let set = LinkUnspec::new_with_name(name).mtu(mtu).controller(master_index).up();
        set_link(h, set).await?;
    }
    port_learning_off(h, name).await
}

/// `ip link set NAME addrgenmode none` + `ip link set NAME up`, for a device
/// just created down. The bridge and VXLAN devices carry IPv4 only; with an
/// IPv6 link-local address each would, on coming up, run duplicate address
/// detection and send router solicitations and MLD reports, multicast that
/// the bridge floods to every peer of the network. The mode can only be set
/// once the device exists, and before it is up (the kernel applies flags
/// before address-family settings in one request), hence two requests.
async fn up_without_ipv6(h: &Handle, name: &str) -> Result<(), OpError> {
    set_link(h, without_ipv6(LinkUnspec::new_with_name(name))).await?;
    set_link(h, LinkUnspec::new_with_name(name).up()).await
}

/// `msg` with `addrgenmode none`: the device gets no IPv6 link-local address
/// when it comes up (it must still be down when this is applied).
pub(super) fn without_ipv6<T>(msg: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
    let none = AfSpecInet6::AddrGenMode(In6AddrGenMode::None);
    msg.append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![none])]))
}

/// `ip link set NAME master MASTER`, and for a VXLAN device also
/// `bridge link set dev NAME learning off`.
async fn set_master(h: &Handle, ix: &mut Indexes, name: &str, master: &str) -> Result<(), OpError> {
    let link = link_by_name(h, name).await?.ok_or_else(|| OpError::NoDevice(name.to_string()))?;
    let master_index = ix.require(h, master).await?;
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
async fn add_addr(h: &Handle, ix: &mut Indexes, dev: &str, addr: Ipv4Net) -> Result<(), OpError> {
    let index = ix.require(h, dev).await?;
    let request = h.address().add(index, IpAddr::V4(addr.addr()), addr.prefix_len());
    Ok(ok_if_exists(request.execute().await)?)
}

/// `ip addr del ADDR dev DEV`; a missing address or device counts as deleted.
async fn del_addr(h: &Handle, ix: &mut Indexes, dev: &str, addr: Ipv4Net) -> Result<(), OpError> {
    let Some(index) = ix.get(h, dev).await? else {
        return Ok(());
    };
    let msg =
        AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(addr.addr(), addr.prefix_len()).build();
    Ok(ok_if_missing(h.address().del(msg).execute().await)?)
}
