//! Table-driven tests of the planner: no root, no kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ovnet_ipam_store::Mac;

use super::plan;
use crate::dataplane::{Dataplane, FakeDataplane};
use crate::model::*;
use crate::op::Op;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn network(vni: u32) -> NetworkDatapath {
    let bridge = bridge_name(vni);
    NetworkDatapath {
        network: format!("n{vni}"),
        bridge: BridgeSpec {
            name: bridge.clone(),
            mac: Mac::gateway(ip(10, 77, 0, 1)),
            addr: "10.77.0.1/16".parse().unwrap(),
            mtu: 1450,
        },
        driver: DriverDatapath::Overlay(OverlayDatapath {
            vxlan: VxlanSpec {
                name: vxlan_name(vni),
                vni,
                local: ip(192, 0, 2, 1),
                port: VXLAN_PORT,
                mtu: 1450,
                master: bridge,
            },
            fdb: BTreeSet::from([
                FdbEntry { mac: Mac::ZERO, dst: ip(192, 0, 2, 2) },
                FdbEntry { mac: Mac::ZERO, dst: ip(192, 0, 2, 3) },
                FdbEntry { mac: Mac::endpoint(ip(10, 77, 1, 2)), dst: ip(192, 0, 2, 2) },
            ]),
            neigh: BTreeSet::from([NeighEntry {
                ip: ip(10, 77, 1, 2),
                mac: Mac::endpoint(ip(10, 77, 1, 2)),
            }]),
        }),
        ports: BTreeSet::from(["ovveabc".to_string()]),
        internal: false,
        published: Default::default(),
    }
}

fn ov(n: &mut NetworkDatapath) -> &mut OverlayDatapath {
    n.overlay_mut().expect("an overlay network")
}

fn desired(nets: &[NetworkDatapath]) -> Desired {
    Desired {
        networks: nets.iter().map(|n| (n.bridge.name.clone(), Arc::new(n.clone()))).collect(),
        ..Desired::default()
    }
}

/// Applies the plan to a fake kernel until it converges; returns the kernel.
async fn converge(d: &Desired, dp: &FakeDataplane) -> Observed {
    for _ in 0..3 {
        let obs = dp.observe().await.unwrap();
        let ops = plan(d, &obs);
        if ops.is_empty() {
            return obs;
        }
        assert!(dp.apply(&ops).await.is_empty());
    }
    panic!("plan did not converge in 3 passes: {:?}", plan(d, &dp.observe().await.unwrap()));
}

#[test]
fn empty_kernel_gets_everything_in_dependency_order() {
    let d = desired(&[network(4096)]);
    let ops = plan(&d, &Observed::default());
    let shown: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        shown[0],
        "ip link add name ovbr4096 address 02:00:0a:4d:00:01 mtu 1450 type bridge \
         && ip link set ovbr4096 addrgenmode none && ip link set ovbr4096 up"
    );
    assert_eq!(shown[1], "ip addr add 10.77.0.1/16 dev ovbr4096");
    assert!(shown[2].starts_with(
        "ip link add ovvx4096 mtu 1450 master ovbr4096 type vxlan id 4096 local 192.0.2.1 dstport 4789 \
         nolearning proxy noudpcsum && ethtool -K ovvx4096 gro off && ip link set ovvx4096 addrgenmode none"
    ));
    assert!(shown.contains(
        &"bridge fdb append 00:00:00:00:00:00 dev ovvx4096 dst 192.0.2.2 self permanent".to_string()
    ));
    assert!(shown.contains(
        &"bridge fdb append 00:00:00:00:00:00 dev ovvx4096 dst 192.0.2.3 self permanent".to_string()
    ));
    assert!(shown.contains(
        &"ip neigh replace 10.77.1.2 lladdr 02:42:0a:4d:01:02 dev ovvx4096 nud permanent".to_string()
    ));
    // The firewall last, in the same pass.
    let last = &shown[shown.len() - 1];
    assert!(last.starts_with("nft 'add table inet ovnet; delete table inet ovnet;"), "{shown:#?}");
    assert!(last.contains(
        r#"add rule inet ovnet forward iifname "ovbr4096" oifname "ovbr*" oifname != "ovbr4096" counter drop;"#
    ));
    assert!(last.contains(r#"add rule inet ovnet postrouting ip saddr 10.77.0.0/16 oifname != "ovbr4096" counter masquerade"#), "{last}");
    assert_eq!(ops.len(), 8, "{shown:#?}");
}

#[tokio::test]
async fn converged_kernel_plans_nothing() {
    let d = desired(&[network(4096), network(4097)]);
    let dp = FakeDataplane::default();
    let obs = converge(&d, &dp).await;
    assert_eq!(plan(&d, &obs), vec![]);
}

#[tokio::test]
async fn drift_is_repaired_and_only_drift() {
    let d = desired(&[network(4096)]);
    let dp = FakeDataplane::default();
    converge(&d, &dp).await;
    dp.tamper(|o| {
        o.fdb.get_mut("ovvx4096").unwrap().remove(&FdbEntry { mac: Mac::ZERO, dst: ip(192, 0, 2, 3) });
        o.neigh.get_mut("ovvx4096").unwrap().clear();
        o.links.get_mut("ovbr4096").unwrap().mtu = 1300;
        o.links.get_mut("ovvx4096").unwrap().up = false;
    });
    let ops = plan(&d, &dp.observe().await.unwrap());
    assert_eq!(
        ops,
        vec![
            Op::SetMtu { name: "ovbr4096".into(), mtu: 1450 },
            Op::SetUp { name: "ovvx4096".into() },
            Op::AddFdb { dev: "ovvx4096".into(), mac: Mac::ZERO, dst: ip(192, 0, 2, 3) },
            Op::AddNeigh {
                dev: "ovvx4096".into(),
                ip: ip(10, 77, 1, 2),
                mac: Mac::endpoint(ip(10, 77, 1, 2))
            },
        ]
    );
}

#[tokio::test]
async fn removed_endpoint_and_dead_peer_entries_go_away_after_additions() {
    let full = network(4096);
    let dp = FakeDataplane::default();
    converge(&desired(std::slice::from_ref(&full)), &dp).await;
    let mut less = full.clone();
    ov(&mut less).fdb.retain(|e| e.dst != ip(192, 0, 2, 2));
    ov(&mut less).neigh.clear();
    ov(&mut less).fdb.insert(FdbEntry { mac: Mac::ZERO, dst: ip(192, 0, 2, 4) });
    let ops = plan(&desired(&[less]), &dp.observe().await.unwrap());
    assert_eq!(
        ops,
        vec![
            Op::AddFdb { dev: "ovvx4096".into(), mac: Mac::ZERO, dst: ip(192, 0, 2, 4) },
            Op::DelFdb { dev: "ovvx4096".into(), mac: Mac::ZERO, dst: ip(192, 0, 2, 2) },
            Op::DelFdb {
                dev: "ovvx4096".into(),
                mac: Mac::endpoint(ip(10, 77, 1, 2)),
                dst: ip(192, 0, 2, 2)
            },
            Op::DelNeigh { dev: "ovvx4096".into(), ip: ip(10, 77, 1, 2) },
        ]
    );
}

#[tokio::test]
async fn moved_endpoint_is_replaced_not_duplicated() {
    let mut n = network(4096);
    let dp = FakeDataplane::default();
    converge(&desired(&[n.clone()]), &dp).await;
    let mac = Mac::endpoint(ip(10, 77, 1, 2));
    ov(&mut n).fdb.remove(&FdbEntry { mac, dst: ip(192, 0, 2, 2) });
    ov(&mut n).fdb.insert(FdbEntry { mac, dst: ip(192, 0, 2, 3) });
    let obs = converge(&desired(&[n]), &dp).await;
    let with_mac: Vec<_> = obs.fdb["ovvx4096"].iter().filter(|e| e.mac == mac).collect();
    assert_eq!(with_mac, vec![&FdbEntry { mac, dst: ip(192, 0, 2, 3) }]);
}

#[tokio::test]
async fn removed_network_deletes_vxlan_then_bridge_and_leaves_foreign_links() {
    let dp = FakeDataplane::default();
    converge(&desired(&[network(4096), network(4097)]), &dp).await;
    dp.tamper(|o| {
        let mut foreign = o.links["ovbr4096"].clone();
        foreign.name = "docker0".into();
        o.links.insert("docker0".into(), foreign);
    });
    let ops = plan(&desired(&[network(4096)]), &dp.observe().await.unwrap());
    assert_eq!(
        ops,
        vec![
            Op::SyncFirewall { firewall: desired(&[network(4096)]).firewall() },
            Op::DeleteLink { name: "ovvx4097".into() },
            Op::DeleteLink { name: "ovbr4097".into() }
        ]
    );
}

fn firewall(bridges: &[&str]) -> Firewall {
    Firewall { isolated: bridges.iter().map(|b| b.to_string()).collect(), ..Firewall::default() }
}

#[tokio::test]
async fn a_firewall_table_not_as_written_is_rewritten_whole_after_the_devices() {
    let d = desired(&[network(4096), network(4097)]);
    let dp = FakeDataplane::default();
    converge(&d, &dp).await;
    let want = Op::SyncFirewall { firewall: d.firewall() };
    for drift in [
        FirewallState::Missing,
        FirewallState::Altered("it holds chain mine".into()),
        FirewallState::Unreadable("cannot run nft".into()),
        FirewallState::Rules(firewall(&["ovbr4096"])),
        FirewallState::Rules(firewall(&["ovbr4096", "ovbr4097", "ovbr9"])),
    ] {
        dp.tamper(|o| o.firewall = drift.clone());
        assert_eq!(plan(&d, &dp.observe().await.unwrap()), vec![want.clone()], "{drift:?}");
    }
    // A new network: its devices first, then its isolation, in the same pass
    // (connect waits for that pass), before any stale device goes.
    dp.tamper(|o| o.firewall = FirewallState::Rules(firewall(&["ovbr4096", "ovbr4097"])));
    let ops = plan(&desired(&[network(4097), network(5000)]), &dp.observe().await.unwrap());
    assert!(matches!(&ops[0], Op::CreateBridge { name, .. } if name == "ovbr5000"), "{ops:?}");
    let fw = ops.iter().position(|op| matches!(op, Op::SyncFirewall { .. })).expect("a firewall op");
    assert_eq!(ops[fw], Op::SyncFirewall { firewall: desired(&[network(4097), network(5000)]).firewall() });
    assert!(ops[..fw].iter().any(|op| matches!(op, Op::CreateVxlan { .. })), "{ops:?}");
    assert!(ops[fw + 1..].iter().all(|op| matches!(op, Op::DeleteLink { .. })), "{ops:?}");
    assert!(!ops[fw + 1..].is_empty(), "the stale network's devices go last: {ops:?}");
}

#[tokio::test]
async fn vxlan_with_wrong_vni_or_local_is_recreated_with_all_entries() {
    let d = desired(&[network(4096)]);
    let dp = FakeDataplane::default();
    converge(&d, &dp).await;
    dp.tamper(|o| {
        o.links.get_mut("ovvx4096").unwrap().kind = LinkKind::Vxlan {
            vni: 4096,
            local: Some(ip(192, 0, 2, 9)),
            port: VXLAN_PORT,
            learning: false,
            proxy: true,
        }
    });
    let ops = plan(&d, &dp.observe().await.unwrap());
    assert_eq!(ops[0], Op::DeleteLink { name: "ovvx4096".into() });
    assert!(matches!(ops[1], Op::CreateVxlan { .. }));
    assert_eq!(ops.iter().filter(|o| matches!(o, Op::AddFdb { .. })).count(), 3);
    assert_eq!(ops.iter().filter(|o| matches!(o, Op::AddNeigh { .. })).count(), 1);
}

#[tokio::test]
async fn local_port_is_enslaved_when_present() {
    let d = desired(&[network(4096)]);
    let dp = FakeDataplane::default();
    converge(&d, &dp).await;
    dp.tamper(|o| {
        let mut veth = o.links["ovbr4096"].clone();
        veth.name = "ovveabc".into();
        veth.kind = LinkKind::Veth;
        veth.master = None;
        o.links.insert("ovveabc".into(), veth);
    });
    let ops = plan(&d, &dp.observe().await.unwrap());
    assert_eq!(ops, vec![Op::SetMaster { name: "ovveabc".into(), master: "ovbr4096".into() }]);
}

/// A port name that is another network's VXLAN device (a record in etcd
/// naming it) is never moved into this bridge, nor re-MTUed or raised.
#[tokio::test]
async fn a_port_that_is_not_one_of_our_veths_is_left_alone() {
    let mut red = network(4096);
    red.ports = BTreeSet::from(["ovvx4097".to_string()]);
    let d = desired(&[red, network(4097)]);
    let dp = FakeDataplane::default();
    converge(&d, &dp).await;
    let observed = dp.observe().await.unwrap();
    assert_eq!(observed.links["ovvx4097"].master.as_deref(), Some("ovbr4097"));
    assert!(plan(&d, &observed).is_empty(), "{:?}", plan(&d, &observed));
}

#[test]
fn bridge_with_foreign_address_loses_it_and_gets_gateway() {
    let d = desired(&[network(4096)]);
    let mut obs = Observed { firewall: FirewallState::Rules(d.firewall()), ..Observed::default() };
    let n = network(4096);
    obs.links.insert(
        n.bridge.name.clone(),
        ObservedLink {
            name: n.bridge.name.clone(),
            index: 1,
            kind: LinkKind::Bridge,
            mtu: 1450,
            mac: Some(n.bridge.mac),
            up: true,
            master: None,
            addrs: BTreeSet::from(["10.9.0.1/24".parse().unwrap()]),
        },
    );
    let ops = plan(&d, &obs);
    assert_eq!(ops[0], Op::AddAddr { dev: "ovbr4096".into(), addr: n.bridge.addr });
    assert_eq!(ops[1], Op::DelAddr { dev: "ovbr4096".into(), addr: "10.9.0.1/24".parse().unwrap() });
}
