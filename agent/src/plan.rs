//! The planner: a pure function from (desired, observed) to kernel operations.
//!
//! It performs no I/O, so every decision the agent makes about the kernel is
//! unit-tested here without root. Additions come before removals, so a
//! changed entry is never missing in between, and an entry that is already
//! right is never touched (a restarted agent plans nothing). The firewall
//! comes after the devices, in the same pass, so a new network's devices do
//! not wait behind the table; `connect` waits until a pass has built the
//! network AND written its rule (the reconcile loop publishes only such
//! networks as ready, and a failed write keeps them unready), so no
//! container is put on a bridge that is not isolated. Every network gets
//! its bridge and ports; only an overlay network's driver part adds a VXLAN
//! device and its FDB/neighbour entries (a bridge network is the bridge
//! alone, see `model::DriverDatapath`).

use std::collections::BTreeSet;

use ovnet_ipam_store::Mac;

use crate::model::{
    DEVICE_PREFIX, Desired, FdbEntry, FirewallState, LinkKind, NeighEntry, NetworkDatapath, Observed,
    ObservedLink, OverlayDatapath,
};
use crate::op::Op;

/// The operations that turn `observed` into `desired`, in the order to apply them.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    for net in desired.networks.values() {
        plan_network(net, observed, &mut ops);
    }
    ops.extend(plan_firewall(desired, observed));
    ops.extend(stale_links(desired, observed));
    ops
}

/// The table `inet ovnet`, rewritten whole unless it is exactly what the
/// networks need.
fn plan_firewall(desired: &Desired, observed: &Observed) -> Option<Op> {
    let firewall = desired.firewall();
    (observed.firewall != FirewallState::Rules(firewall.clone())).then_some(Op::SyncFirewall { firewall })
}

/// Bridges and VXLAN devices of ours that no network wants any more.
/// Veths are left alone: endpoint plumbing belongs to connect/disconnect.
fn stale_links(desired: &Desired, observed: &Observed) -> Vec<Op> {
    let wanted: BTreeSet<&str> = desired
        .networks
        .values()
        .flat_map(|n| {
            std::iter::once(n.bridge.name.as_str()).chain(n.overlay().map(|o| o.vxlan.name.as_str()))
        })
        .collect();
    let bridge = format!("{DEVICE_PREFIX}br");
    let vxlan = format!("{DEVICE_PREFIX}vx");
    let mut ops: Vec<Op> = observed
        .links
        .keys()
        .filter(|n| n.starts_with(&bridge) || n.starts_with(&vxlan))
        .filter(|n| !wanted.contains(n.as_str()))
        .map(|n| Op::DeleteLink { name: n.clone() })
        .collect();
    // VXLAN devices first, then their bridges.
    ops.sort_by_key(|op| matches!(op, Op::DeleteLink { name } if name.starts_with(&bridge)));
    ops
}

/// The bridge and its ports for every driver; the VXLAN device and its
/// entries for an overlay network only.
fn plan_network(net: &NetworkDatapath, observed: &Observed, ops: &mut Vec<Op>) {
    plan_bridge(net, observed.links.get(&net.bridge.name), ops);
    let overlay = net.overlay();
    let recreated = overlay.map(|o| plan_vxlan(o, observed.links.get(&o.vxlan.name), ops));
    for port in &net.ports {
        // Only one of our veths is made a port (a record naming another
        // network's VXLAN device or bridge must not move it here).
        if let Some(link) = observed.links.get(port)
            && link.kind == LinkKind::Veth
            && ovnet_ipam_store::validate::host_veth_name(port).is_ok()
        {
            plan_port(port, &net.bridge.name, net.bridge.mtu, link, ops);
        }
    }
    if let (Some(o), Some(recreated)) = (overlay, recreated) {
        plan_overlay_entries(o, observed, recreated, ops);
    }
}

/// The FDB and neighbour entries of an overlay network's VXLAN device
/// (a recreated device starts empty).
fn plan_overlay_entries(o: &OverlayDatapath, observed: &Observed, recreated: bool, ops: &mut Vec<Op>) {
    let empty_fdb = BTreeSet::new();
    let empty_neigh = BTreeSet::new();
    let (fdb, neigh) = if recreated {
        (&empty_fdb, &empty_neigh)
    } else {
        (
            observed.fdb.get(&o.vxlan.name).unwrap_or(&empty_fdb),
            observed.neigh.get(&o.vxlan.name).unwrap_or(&empty_neigh),
        )
    };
    plan_entries(&o.vxlan.name, &o.fdb, fdb, &o.neigh, neigh, ops);
}

fn plan_bridge(net: &NetworkDatapath, link: Option<&ObservedLink>, ops: &mut Vec<Op>) {
    let spec = &net.bridge;
    let name = spec.name.clone();
    let link = match link {
        Some(l) if l.kind == LinkKind::Bridge => l,
        other => {
            if other.is_some() {
                ops.push(Op::DeleteLink { name: name.clone() });
            }
            ops.push(Op::CreateBridge { name: name.clone(), mac: spec.mac, mtu: spec.mtu });
            ops.push(Op::AddAddr { dev: name, addr: spec.addr });
            return;
        }
    };
    if link.mac != Some(spec.mac) {
        ops.push(Op::SetMac { name: name.clone(), mac: spec.mac });
    }
    if link.mtu != spec.mtu {
        ops.push(Op::SetMtu { name: name.clone(), mtu: spec.mtu });
    }
    if !link.addrs.contains(&spec.addr) {
        ops.push(Op::AddAddr { dev: name.clone(), addr: spec.addr });
    }
    for addr in link.addrs.iter().filter(|a| **a != spec.addr) {
        ops.push(Op::DelAddr { dev: name.clone(), addr: *addr });
    }
    if !link.up {
        ops.push(Op::SetUp { name });
    }
}

/// Returns true when the device is (re)created, so its entries start empty.
fn plan_vxlan(net: &OverlayDatapath, link: Option<&ObservedLink>, ops: &mut Vec<Op>) -> bool {
    let spec = &net.vxlan;
    let create = Op::CreateVxlan {
        name: spec.name.clone(),
        vni: spec.vni,
        local: spec.local,
        port: spec.port,
        mtu: spec.mtu,
        master: spec.master.clone(),
    };
    let Some(link) = link else {
        ops.push(create);
        return true;
    };
    let right_kind = matches!(
        link.kind,
        LinkKind::Vxlan { vni, local, port, learning: false, proxy: true }
            if vni == spec.vni && local == Some(spec.local) && port == spec.port
    );
    if !right_kind {
        ops.push(Op::DeleteLink { name: spec.name.clone() });
        ops.push(create);
        return true;
    }
    plan_port(&spec.name, &spec.master, spec.mtu, link, ops);
    false
}

/// A port of the bridge: enslaved, right MTU, up.
fn plan_port(name: &str, master: &str, mtu: u32, link: &ObservedLink, ops: &mut Vec<Op>) {
    if link.mtu != mtu {
        ops.push(Op::SetMtu { name: name.to_string(), mtu });
    }
    if link.master.as_deref() != Some(master) {
        ops.push(Op::SetMaster { name: name.to_string(), master: master.to_string() });
    }
    if !link.up {
        ops.push(Op::SetUp { name: name.to_string() });
    }
}

fn plan_entries(
    dev: &str,
    want_fdb: &BTreeSet<FdbEntry>,
    have_fdb: &BTreeSet<FdbEntry>,
    want_neigh: &BTreeSet<NeighEntry>,
    have_neigh: &BTreeSet<NeighEntry>,
    ops: &mut Vec<Op>,
) {
    let dev = dev.to_string();
    for e in want_fdb.difference(have_fdb) {
        ops.push(Op::AddFdb { dev: dev.clone(), mac: e.mac, dst: e.dst });
    }
    for e in want_neigh.difference(have_neigh) {
        ops.push(Op::AddNeigh { dev: dev.clone(), ip: e.ip, mac: e.mac });
    }
    // A unicast MAC whose destination changed was replaced by its AddFdb above;
    // deleting the old (mac, dst) pair afterwards is then a harmless no-op.
    for e in have_fdb.difference(want_fdb) {
        ops.push(Op::DelFdb { dev: dev.clone(), mac: e.mac, dst: e.dst });
    }
    // A neighbour is kept when some wanted entry has its address (with any MAC).
    let wanted = |ip| {
        let same_ip = NeighEntry { ip, mac: Mac([0; 6]) }..=NeighEntry { ip, mac: Mac([0xff; 6]) };
        want_neigh.range(same_ip).next().is_some()
    };
    for e in have_neigh.iter().filter(|n| !wanted(n.ip)) {
        ops.push(Op::DelNeigh { dev: dev.clone(), ip: e.ip });
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_bridge_tests.rs"]
mod bridge_tests;
