//! Kernel versus etcd: the planner's ops explained as findings, and the veths
//! of local endpoints, which the planner leaves to connect/disconnect.
//!
//! Each op becomes one problem whose fix is the op itself (the iproute2
//! command the agent will run). Ops that only follow from another one (the
//! delete half of a recreate, entries re-added to a recreated device that are
//! already there) are folded into the finding that explains them.

use std::collections::BTreeSet;

use super::{Area, Finding, Inputs, Severity, count};
use crate::model::{DEVICE_PREFIX, Firewall, FirewallState, LinkKind, Observed};
use crate::op::Op;
use crate::plan::plan;

/// Adds one finding per difference; returns the devices whose MTU differs.
pub(super) fn kernel_vs_etcd(inp: &Inputs, out: &mut Vec<Finding>) -> BTreeSet<String> {
    let ops = plan(&inp.desired, &inp.observed);
    let wanted: BTreeSet<&str> = inp
        .desired
        .networks
        .values()
        .flat_map(|n| {
            std::iter::once(n.bridge.name.as_str()).chain(n.overlay().map(|o| o.vxlan.name.as_str()))
        })
        .collect();
    let mut mtu = BTreeSet::new();
    let before = out.len();
    for op in &ops {
        if let Op::SetMtu { name, .. } = op {
            mtu.insert(name.clone());
        }
        if let Some((area, message)) = explain(op, &inp.observed, &wanted) {
            out.push(Finding::new(Severity::Problem, area, message).fix(op.to_string()));
        }
    }
    if out.len() == before {
        out.push(Finding::new(Severity::Ok, Area::Link, in_sync(inp)));
    }
    if !ops.iter().any(|op| matches!(op, Op::SyncFirewall { .. })) {
        let n = inp.desired.networks.len();
        let msg = format!(
            "table inet ovnet drops routed traffic between networks ({}) and holds their NAT rules",
            count(n, "network", "networks")
        );
        out.push(Finding::new(Severity::Ok, Area::Firewall, msg));
    }
    mtu
}

/// Why the table `inet ovnet` is not what the networks need.
fn firewall(have: &FirewallState, want: &Firewall) -> String {
    let unprotected = "routed traffic between networks is not dropped";
    match have {
        FirewallState::Missing => format!("nftables table inet ovnet is missing: {unprotected}"),
        FirewallState::Altered(what) => format!("nftables table inet ovnet was changed by hand: {what}"),
        FirewallState::Unreadable(why) => format!("cannot read nftables table inet ovnet: {why}"),
        FirewallState::Rules(fw) => {
            let list = |s: Vec<&String>| s.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(" ");
            let missing = list(want.isolated.difference(&fw.isolated).collect());
            let stale = list(fw.isolated.difference(&want.isolated).collect());
            match (missing.is_empty(), stale.is_empty()) {
                (false, true) => format!("table inet ovnet does not isolate {missing}"),
                (true, false) => format!("table inet ovnet has stale rules for {stale}"),
                (false, false) => {
                    format!("table inet ovnet does not isolate {missing} and has stale rules for {stale}")
                }
                (true, true) => nat_difference(fw, want),
            }
        }
    }
}

/// How the NAT rules differ, when the isolation rules do not.
fn nat_difference(have: &Firewall, want: &Firewall) -> String {
    let mut why = Vec::new();
    let internal: Vec<&String> = want.internal.symmetric_difference(&have.internal).collect();
    if !internal.is_empty() {
        why.push(format!("the internal networks' rules differ for {internal:?}"));
    }
    for o in want.outbound.difference(&have.outbound) {
        why.push(format!("{} ({}) is not masqueraded on its way out", o.bridge, o.subnet));
    }
    for o in have.outbound.difference(&want.outbound) {
        why.push(format!("{} ({}) is masqueraded but should not be", o.bridge, o.subnet));
    }
    let port = |p: &crate::model::Published| {
        format!("{} {}:{} -> {}:{}", p.proto, p.host_ip, p.host_port, p.ip, p.port)
    };
    for p in want.published.difference(&have.published) {
        why.push(format!("published port {} is not forwarded", port(p)));
    }
    for p in have.published.difference(&want.published) {
        why.push(format!("stale published port {}", port(p)));
    }
    format!("table inet ovnet: {}", why.join("; "))
}

fn in_sync(inp: &Inputs) -> String {
    let overlays = inp.desired.networks.values().filter_map(|n| n.overlay());
    let fdb: usize = overlays.clone().map(|o| o.fdb.len()).sum();
    let neigh: usize = overlays.map(|o| o.neigh.len()).sum();
    format!(
        "kernel matches etcd revision {}: {}, {}, {}",
        inp.revision,
        count(inp.desired.networks.len(), "network", "networks"),
        count(fdb, "FDB entry", "FDB entries"),
        count(neigh, "neighbour entry", "neighbour entries"),
    )
}

/// What is wrong, for the op that would repair it; `None` when another
/// finding already explains it.
fn explain(op: &Op, obs: &Observed, wanted: &BTreeSet<&str>) -> Option<(Area, String)> {
    let link = |name: &str| obs.links.get(name);
    Some(match op {
        Op::CreateBridge { name, .. } => match link(name) {
            Some(l) => (Area::Link, format!("{name} is {}, not a bridge", kind(&l.kind))),
            None => (Area::Link, format!("missing bridge {name}")),
        },
        Op::CreateVxlan { name, vni, local, port, .. } => match link(name) {
            Some(l) => (
                Area::Link,
                format!(
                    "{name} is {}; etcd says VXLAN id {vni} local {local} dstport {port} nolearning proxy",
                    kind(&l.kind)
                ),
            ),
            None => (Area::Link, format!("missing VXLAN device {name} (VNI {vni})")),
        },
        Op::DeleteLink { name } if wanted.contains(name.as_str()) => return None,
        Op::DeleteLink { name } => (Area::Link, format!("stale device {name}: no network in etcd wants it")),
        Op::SetMac { name, mac } => {
            let has = link(name).and_then(|l| l.mac).map_or("none".to_string(), |m| m.to_string());
            (Area::Link, format!("{name} has MAC {has}, etcd says {mac}"))
        }
        Op::SetMtu { name, mtu } => {
            let has = link(name).map_or(0, |l| l.mtu);
            (Area::Mtu, format!("MTU of {name} is {has}, etcd says {mtu}"))
        }
        Op::SetMaster { name, master } => {
            let has = link(name).and_then(|l| l.master.clone()).unwrap_or_else(|| "none".into());
            (Area::Link, format!("{name} is not a port of {master} (its master: {has})"))
        }
        Op::SetUp { name } => (Area::Link, format!("{name} is down")),
        Op::AddAddr { dev, addr } => (Area::Addr, format!("{dev} lacks the gateway address {addr}")),
        Op::DelAddr { dev, addr } => (Area::Addr, format!("unexpected address {addr} on {dev}")),
        Op::AddFdb { dev, mac, dst } => {
            let have = obs.fdb.get(dev);
            if have.is_some_and(|s| s.iter().any(|e| e.mac == *mac && e.dst == *dst)) {
                return None; // re-added to a recreated device
            }
            let moved = have.and_then(|s| s.iter().find(|e| e.mac == *mac && !mac.is_zero()));
            match moved {
                Some(old) => {
                    (Area::Fdb, format!("FDB entry {mac} on {dev} points to {}, etcd says {dst}", old.dst))
                }
                None if mac.is_zero() => (Area::Fdb, format!("missing flood entry toward {dst} on {dev}")),
                None => (Area::Fdb, format!("missing FDB entry {mac} -> {dst} on {dev}")),
            }
        }
        Op::DelFdb { dev, mac, dst } if mac.is_zero() => {
            (Area::Fdb, format!("stale flood entry toward {dst} on {dev}"))
        }
        Op::DelFdb { dev, mac, dst } => (Area::Fdb, format!("stale FDB entry {mac} -> {dst} on {dev}")),
        Op::AddNeigh { dev, ip, mac } => {
            let have = obs.neigh.get(dev).and_then(|s| s.iter().find(|e| e.ip == *ip));
            match have {
                Some(e) if e.mac == *mac => return None, // re-added to a recreated device
                Some(e) => {
                    (Area::Neigh, format!("neighbour {ip} on {dev} has lladdr {}, etcd says {mac}", e.mac))
                }
                None => (Area::Neigh, format!("missing neighbour entry {ip} lladdr {mac} on {dev}")),
            }
        }
        Op::DelNeigh { dev, ip } => (Area::Neigh, format!("stale neighbour entry {ip} on {dev}")),
        Op::SyncFirewall { firewall: want } => (Area::Firewall, firewall(&obs.firewall, want)),
    })
}

/// "a bridge", "a VXLAN device (id 1 local 192.0.2.1 dstport 4789 learning)".
fn kind(k: &LinkKind) -> String {
    match k {
        LinkKind::Bridge => "a bridge".into(),
        LinkKind::Veth => "a veth".into(),
        LinkKind::Vxlan { vni, local, port, learning, proxy } => {
            let local = local.map_or("none".to_string(), |l| l.to_string());
            let learning = if *learning { "learning" } else { "nolearning" };
            let proxy = if *proxy { "proxy" } else { "noproxy" };
            format!("a VXLAN device with id {vni} local {local} dstport {port} {learning} {proxy}")
        }
        LinkKind::Other(k) if k.is_empty() => "a device of unknown kind".into(),
        LinkKind::Other(k) => format!("a {k} device"),
    }
}

/// Local endpoints without their veth, and our veths without an endpoint.
pub(super) fn veths(inp: &Inputs, out: &mut Vec<Finding>) {
    let mut fine = 0;
    for ep in &inp.endpoints {
        let whose = format!("endpoint {} of network {} (namespace {})", ep.ip, ep.network, ep.netns);
        match inp.observed.links.get(&ep.host_ifname) {
            Some(l) if l.kind == LinkKind::Veth => fine += 1,
            Some(l) => out.push(Finding::new(
                Severity::Problem,
                Area::Veth,
                format!("{} of {whose} is {}, not a veth", ep.host_ifname, kind(&l.kind)),
            )),
            None if ep.netns_exists => out.push(
                Finding::new(
                    Severity::Problem,
                    Area::Veth,
                    format!("missing veth {} of {whose}", ep.host_ifname),
                )
                .fix(format!(
                    "ovctl network disconnect {net} {ns} && ovctl network connect --ip {ip} {net} {ns}",
                    net = ep.network,
                    ns = ep.netns,
                    ip = ep.ip
                )),
            ),
            None => out.push(
                Finding::new(
                    Severity::Problem,
                    Area::Veth,
                    format!("missing veth {} of {whose}: the namespace no longer exists", ep.host_ifname),
                )
                .fix(format!("ovctl network disconnect {} {}", ep.network, ep.netns)),
            ),
        }
    }
    let known: BTreeSet<&str> = inp.endpoints.iter().map(|e| e.host_ifname.as_str()).collect();
    let ours = [format!("{DEVICE_PREFIX}ve"), format!("{DEVICE_PREFIX}tp")];
    for l in inp.observed.links.values() {
        let veth = l.kind == LinkKind::Veth && ours.iter().any(|p| l.name.starts_with(p.as_str()));
        if veth && !known.contains(l.name.as_str()) {
            let msg =
                format!("veth {} belongs to no endpoint in etcd (left by an interrupted connect?)", l.name);
            out.push(Finding::new(Severity::Problem, Area::Veth, msg).fix(format!("ip link del {}", l.name)));
        }
    }
    if fine > 0 {
        out.push(Finding::new(
            Severity::Ok,
            Area::Veth,
            match fine {
                1 => "1 local endpoint has its veth".to_string(),
                n => format!("{n} local endpoints have their veth"),
            },
        ));
    }
}
