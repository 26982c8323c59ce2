//! Bridge networks against overlay networks, from cluster records through
//! `desired` to the planner's ops: no root, no kernel.

use std::collections::BTreeSet;

use ovnet_ipam_store::{ClusterState, Driver, NetworkRecord};

use super::plan;
use crate::dataplane::{Dataplane, FakeDataplane};
use crate::desired::{HostContext, desired};
use crate::model::*;
use crate::op::Op;
use crate::testutil::{endpoint, hosts, network};

fn host(node: &str, last: u8) -> HostContext {
    HostContext {
        node: node.into(),
        vtep: [192, 0, 2, last].into(),
        underlay_mtu: 1500,
        control_plane: Default::default(),
    }
}

fn bridge_network(name: &str, vni: u32, subnet: &str, owner: &str) -> NetworkRecord {
    NetworkRecord { driver: Driver::Bridge, host: Some(owner.into()), ..network(name, vni, subnet) }
}

/// Overlay `wan` (4096) and bridge `lan` (4097) of h1; two endpoints of
/// each on h1, one of `wan` on h2, and a stray record of `lan` naming h2.
fn state() -> ClusterState {
    let mut s = ClusterState::default();
    s.networks.insert("wan".into(), network("wan", 4096, "10.128.0.0/16"));
    s.networks.insert("lan".into(), bridge_network("lan", 4097, "10.129.0.0/16", "h1"));
    hosts(&mut s);
    for e in [
        endpoint("wan", "h1", [10, 128, 0, 2]),
        endpoint("wan", "h2", [10, 128, 1, 3]),
        endpoint("lan", "h1", [10, 129, 0, 4]),
        endpoint("lan", "h1", [10, 129, 0, 5]),
        endpoint("lan", "h2", [10, 129, 1, 6]),
    ] {
        s.insert_endpoint(e);
    }
    s
}

fn names(ops: &[Op]) -> Vec<String> {
    ops.iter().map(|o| o.to_string()).collect()
}

#[test]
fn a_bridge_network_is_a_bridge_with_ports_and_no_vxlan_on_its_host() {
    let d = desired(&state(), &host("h1", 1));
    let lan = &d.networks["ovbr4097"];
    assert_eq!(lan.driver, DriverDatapath::Bridge);
    assert_eq!(
        lan.ports,
        BTreeSet::from(["ovve4".to_string(), "ovve5".to_string()]),
        "h2's record is no port"
    );
    assert_eq!(lan.bridge.addr.to_string(), "10.129.0.1/16");
    let wan = d.networks["ovbr4096"].overlay().expect("wan is an overlay network");
    assert_eq!(wan.neigh.len(), 1, "the overlay still reaches h2: {:?}", wan.neigh);

    let ops = plan(&d, &Observed::default());
    let shown = names(&ops);
    assert!(shown.iter().any(|o| o.starts_with("ip link add name ovbr4097 ")), "{shown:?}");
    assert!(shown.contains(&"ip addr add 10.129.0.1/16 dev ovbr4097".to_string()), "{shown:?}");
    let on_lan_vxlan = |o: &&Op| o.to_string().contains("ovvx4097");
    assert_eq!(ops.iter().filter(on_lan_vxlan).count(), 0, "no VXLAN device or entries: {shown:?}");
    assert!(shown.iter().any(|o| o.starts_with("ip link add ovvx4096 ")), "the overlay keeps its own");
    let fw = ops.iter().find_map(|o| match o {
        Op::SyncFirewall { firewall } => Some(firewall.clone()),
        _ => None,
    });
    let isolated = fw.expect("a firewall op").isolated;
    assert_eq!(isolated, BTreeSet::from(["ovbr4096".to_string(), "ovbr4097".to_string()]));
}

#[test]
fn another_host_builds_nothing_for_a_bridge_network() {
    let d = desired(&state(), &host("h2", 2));
    assert_eq!(d.networks.keys().collect::<Vec<_>>(), ["ovbr4096"], "only the overlay network");
    let wan = d.networks["ovbr4096"].overlay().expect("wan is an overlay network");
    assert!(wan.fdb.iter().all(|e| e.dst == std::net::Ipv4Addr::new(192, 0, 2, 1)), "{:?}", wan.fdb);
    let shown = names(&plan(&d, &Observed::default()));
    assert!(shown.iter().all(|o| !o.contains("4097")), "nothing for lan on h2: {shown:?}");
    assert_eq!(d.firewall().isolated, BTreeSet::from(["ovbr4096".to_string()]));
}

#[tokio::test]
async fn devices_that_do_not_belong_to_the_driver_are_deleted() {
    // h1 with a VXLAN device of the bridge network's number (made by hand,
    // or left from an overlay network of that VNI): it goes, the bridge stays.
    let d1 = desired(&state(), &host("h1", 1));
    let dp = FakeDataplane::default();
    assert!(dp.apply(&plan(&d1, &Observed::default())).await.is_empty());
    let vx = Op::CreateVxlan {
        name: "ovvx4097".into(),
        vni: 4097,
        local: [192, 0, 2, 1].into(),
        port: VXLAN_PORT,
        mtu: 1450,
        master: "ovbr4097".into(),
    };
    assert!(dp.apply(&[vx]).await.is_empty());
    let ops = plan(&d1, &dp.observe().await.unwrap());
    assert_eq!(ops, vec![Op::DeleteLink { name: "ovvx4097".into() }]);
    assert!(dp.apply(&ops).await.is_empty());
    let obs = dp.observe().await.unwrap();
    assert!(obs.links.contains_key("ovbr4097") && !obs.links.contains_key("ovvx4097"));
    assert!(plan(&d1, &obs).is_empty(), "converged: {:?}", plan(&d1, &obs));

    // The same kernel as h2's: the bridge network's bridge goes too.
    let d2 = desired(&state(), &host("h2", 2));
    let ops = plan(&d2, &obs);
    assert!(ops.contains(&Op::DeleteLink { name: "ovbr4097".into() }), "{ops:?}");
}

#[test]
fn a_changed_driver_swaps_the_vxlan_device_in_or_out() {
    let mut s = state();
    let h1 = host("h1", 1);
    let dp_ops = plan(&desired(&s, &h1), &Observed::default());
    assert!(!names(&dp_ops).iter().any(|o| o.contains("ovvx4097")));
    // The same number as an overlay network: the VXLAN device is planned.
    s.networks.insert("lan".into(), network("lan", 4097, "10.129.0.0/16"));
    let shown = names(&plan(&desired(&s, &h1), &Observed::default()));
    assert!(shown.iter().any(|o| o.starts_with("ip link add ovvx4097 ")), "{shown:?}");
    // A bridge network of h2 seen from h1: nothing.
    s.networks.insert("lan".into(), bridge_network("lan", 4097, "10.129.0.0/16", "h2"));
    assert!(!desired(&s, &h1).networks.contains_key("ovbr4097"));
}
