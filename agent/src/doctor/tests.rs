//! `diagnose` on a healthy host and on each way it can break: no root, no
//! etcd; the healthy kernel is built by applying the planner's own ops to the
//! fake dataplane.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ovnet_ipam_store::{BadRecord, Mac};

use super::sanity::kernel_version;
use super::*;
use crate::dataplane::{AttachSpec, DeviceFacts, FakeDataplane};
use crate::model::{FdbEntry, NeighEntry, ObservedLink};
use crate::plan::plan;
use crate::testutil::{cluster, endpoint, me};

fn features(names: &[&str]) -> DeviceFacts {
    DeviceFacts { features: Ok(names.iter().map(|s| s.to_string()).collect()), udp_csum: None }
}

/// Network blue with a remote endpoint (10.128.1.2 on h2) and a local one
/// (10.128.0.2, veth ovve2), all in place.
async fn healthy() -> Inputs {
    let mut state = cluster();
    state.insert_endpoint(endpoint("blue", "h1", [10, 128, 0, 2]));
    let want = desired(&state, &me());
    let dp = FakeDataplane::default();
    assert!(dp.apply(&plan(&want, &dp.observe().await.unwrap())).await.is_empty());
    let spec = AttachSpec {
        host_ifname: "ovve2".into(),
        ifname: "eth0".into(),
        bridge: "ovbr4096".into(),
        mac: Mac::endpoint(Ipv4Addr::new(10, 128, 0, 2)),
        addr: "10.128.0.2/16".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 128, 0, 1),
        mtu: 1450,
    };
    dp.attach(&"/run/netns/c2".into(), spec).await.unwrap();
    let observed = dp.observe().await.unwrap();
    assert_eq!(plan(&want, &observed), vec![]);
    let mut vxlan = features(&["tx-checksum-ip-generic", "rx-checksum"]);
    vxlan.udp_csum = Some(true);
    Inputs {
        revision: 7,
        desired: want,
        observed,
        endpoints: vec![LocalEndpoint {
            network: "blue".into(),
            ip: Ipv4Addr::new(10, 128, 0, 2),
            netns: "c2".into(),
            host_ifname: "ovve2".into(),
            netns_exists: true,
        }],
        underlay: Underlay { addr: me().vtep, ifname: "eth0".into(), mtu: 1500 },
        planned_underlay_mtu: 1500,
        facts: HostFacts {
            kernel: Ok("6.1.0-18-amd64".into()),
            udp_ports: Ok(BTreeSet::from([4789, 53])),
            devices: BTreeMap::from([
                ("ovvx4096".into(), vxlan),
                ("eth0".into(), features(&["tx-checksum-ipv4", "tx-udp_tnl-segmentation"])),
            ]),
        },
        bad_records: Vec::new(),
    }
}

/// The problems as `(area, message, fix)`.
fn problems(inp: &Inputs) -> Vec<(&'static str, String, String)> {
    diagnose(inp)
        .into_iter()
        .filter(|f| f.severity == Severity::Problem)
        .map(|f| (f.area.as_str(), f.message, f.fix.unwrap_or_default()))
        .collect()
}

fn only(inp: &Inputs, severity: Severity) -> Vec<String> {
    diagnose(inp).into_iter().filter(|f| f.severity == severity).map(|f| f.message).collect()
}

const H2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 128, 1, 2);

#[tokio::test]
async fn a_healthy_host_has_no_problem_and_says_what_it_checked() {
    let inp = healthy().await;
    assert_eq!(problems(&inp), vec![]);
    assert_eq!(only(&inp, Severity::Warning), Vec::<String>::new());
    let ok = only(&inp, Severity::Ok).join("\n");
    for want in [
        "kernel matches etcd revision 7: 1 network, 2 FDB entries, 1 neighbour entry",
        "1 local endpoint has its veth",
        "3 devices fit the underlay: eth0 MTU 1500 - 50 bytes of VXLAN = 1450",
        "UDP port 4789 (IANA VXLAN) is open for 1 VXLAN device",
        "ovvx4096: tx checksum offload on (tx-checksum-ip-generic), outer UDP checksums on; kernel 6.1.0-18-amd64 has the VXLAN checksum fix of 5.7",
        "underlay eth0: tx checksum offload on (tx-checksum-ipv4), UDP tunnel segmentation offload on (tx-udp_tnl-segmentation)",
    ] {
        assert!(ok.contains(want), "missing {want:?} in\n{ok}");
    }
}

#[tokio::test]
async fn missing_fdb_and_neighbour_entries_and_a_lowered_mtu() {
    let mut inp = healthy().await;
    let mac = Mac::endpoint(REMOTE);
    inp.observed.fdb.get_mut("ovvx4096").unwrap().remove(&FdbEntry { mac, dst: H2 });
    inp.observed.neigh.get_mut("ovvx4096").unwrap().clear();
    inp.observed.links.get_mut("ovvx4096").unwrap().mtu = 1400;
    assert_eq!(
        problems(&inp),
        vec![
            ("mtu", "MTU of ovvx4096 is 1400, etcd says 1450".into(), "ip link set ovvx4096 mtu 1450".into()),
            (
                "fdb",
                format!("missing FDB entry {mac} -> {H2} on ovvx4096"),
                format!("bridge fdb append {mac} dev ovvx4096 dst {H2} self permanent"),
            ),
            (
                "neigh",
                format!("missing neighbour entry {REMOTE} lladdr {mac} on ovvx4096"),
                format!("ip neigh replace {REMOTE} lladdr {mac} dev ovvx4096 nud permanent"),
            ),
        ]
    );
}

#[tokio::test]
async fn wrong_and_stale_entries() {
    let mut inp = healthy().await;
    let other = Mac([2, 0x42, 9, 9, 9, 9]);
    let stale = Ipv4Addr::new(192, 0, 2, 9);
    let fdb = inp.observed.fdb.get_mut("ovvx4096").unwrap();
    fdb.retain(|e| e.mac.is_zero());
    fdb.insert(FdbEntry { mac: Mac::endpoint(REMOTE), dst: stale });
    fdb.insert(FdbEntry { mac: Mac::ZERO, dst: stale });
    let neigh = inp.observed.neigh.get_mut("ovvx4096").unwrap();
    neigh.clear();
    neigh.insert(NeighEntry { ip: REMOTE, mac: other });
    neigh.insert(NeighEntry { ip: Ipv4Addr::new(10, 128, 7, 7), mac: other });
    let got: Vec<String> = problems(&inp).into_iter().map(|p| p.1).collect();
    let mac = Mac::endpoint(REMOTE);
    assert_eq!(
        got,
        vec![
            format!("FDB entry {mac} on ovvx4096 points to {stale}, etcd says {H2}"),
            format!("neighbour {REMOTE} on ovvx4096 has lladdr {other}, etcd says {mac}"),
            format!("stale flood entry toward {stale} on ovvx4096"),
            format!("stale FDB entry {mac} -> {stale} on ovvx4096"),
            "stale neighbour entry 10.128.7.7 on ovvx4096".to_string(),
        ]
    );
}

#[tokio::test]
async fn links_missing_down_misconfigured_or_stale() {
    let mut inp = healthy().await;
    let br = inp.observed.links.get_mut("ovbr4096").unwrap();
    br.up = false;
    br.mac = None;
    br.addrs = BTreeSet::from(["10.9.9.9/24".parse().unwrap()]);
    inp.observed.links.get_mut("ovve2").unwrap().master = None;
    let stale = ObservedLink { name: "ovbr77".into(), ..inp.observed.links["ovbr4096"].clone() };
    inp.observed.links.insert("ovbr77".into(), stale);
    let got: Vec<(&str, String)> = problems(&inp).into_iter().map(|p| (p.0, p.1)).collect();
    let want: Vec<(&str, String)> = vec![
        ("link", "ovbr4096 has MAC none, etcd says 02:00:0a:80:00:01".into()),
        ("addr", "ovbr4096 lacks the gateway address 10.128.0.1/16".into()),
        ("addr", "unexpected address 10.9.9.9/24 on ovbr4096".into()),
        ("link", "ovbr4096 is down".into()),
        ("link", "ovve2 is not a port of ovbr4096 (its master: none)".into()),
        ("link", "stale device ovbr77: no network in etcd wants it".into()),
    ];
    assert_eq!(got, want);

    let mut inp = healthy().await;
    inp.observed.links.remove("ovbr4096");
    assert_eq!(problems(&inp)[0].1, "missing bridge ovbr4096");
}

#[tokio::test]
async fn a_recreated_vxlan_device_is_one_finding_not_one_per_entry() {
    let mut inp = healthy().await;
    let vx = inp.observed.links.get_mut("ovvx4096").unwrap();
    vx.kind = LinkKind::Vxlan { vni: 4096, local: Some(me().vtep), port: 8472, learning: true, proxy: true };
    let got = problems(&inp);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].1,
        "ovvx4096 is a VXLAN device with id 4096 local 192.0.2.1 dstport 8472 learning proxy; \
         etcd says VXLAN id 4096 local 192.0.2.1 dstport 4789 nolearning proxy"
    );
    assert!(
        got[0].2.starts_with("ip link add ovvx4096 mtu 1450 master ovbr4096 type vxlan id 4096"),
        "{}",
        got[0].2
    );

    let mut inp = healthy().await;
    inp.observed.links.remove("ovvx4096");
    inp.observed.fdb.clear();
    inp.observed.neigh.clear();
    assert_eq!(problems(&inp)[0].1, "missing VXLAN device ovvx4096 (VNI 4096)");
    assert_eq!(problems(&inp).len(), 4, "the device, two FDB entries and a neighbour: {:?}", problems(&inp));
}

#[tokio::test]
async fn veths_of_local_endpoints() {
    let mut inp = healthy().await;
    inp.observed.links.remove("ovve2");
    assert_eq!(
        problems(&inp),
        vec![(
            "veth",
            "missing veth ovve2 of endpoint 10.128.0.2 of network blue (namespace c2)".into(),
            "ovctl network disconnect blue c2 && ovctl network connect --ip 10.128.0.2 blue c2".into()
        )]
    );
    inp.endpoints[0].netns_exists = false;
    let p = problems(&inp);
    assert!(p[0].1.ends_with(": the namespace no longer exists"), "{p:?}");
    assert_eq!(p[0].2, "ovctl network disconnect blue c2");

    let mut inp = healthy().await;
    inp.endpoints.clear();
    assert_eq!(
        problems(&inp),
        vec![(
            "veth",
            "veth ovve2 belongs to no endpoint in etcd (left by an interrupted connect?)".into(),
            "ip link del ovve2".into()
        )]
    );
}

#[tokio::test]
async fn mtus_against_the_underlay() {
    let mut inp = healthy().await;
    inp.underlay.mtu = 1400;
    let got = problems(&inp);
    assert_eq!(
        got[0].1,
        "the underlay eth0 has MTU 1400, but the agent plans with 1500 (read when it started): restart ovagent"
    );
    let too_big: Vec<&str> = got[1..].iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        too_big,
        vec!["ip link set ovbr4096 mtu 1350", "ip link set ovve2 mtu 1350", "ip link set ovvx4096 mtu 1350"]
    );
    assert!(got[1].1.contains("above the underlay's eth0 MTU 1400 - 50 bytes of VXLAN = 1350"), "{got:?}");

    // A device whose MTU differs from etcd's is reported once, as a difference.
    let mut inp = healthy().await;
    inp.observed.links.get_mut("ovve2").unwrap().mtu = 9000;
    let got = problems(&inp);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "MTU of ovve2 is 9000, etcd says 1450");
}

#[tokio::test]
async fn the_vxlan_port() {
    let mut inp = healthy().await;
    inp.facts.udp_ports = Ok(BTreeSet::from([53]));
    assert_eq!(
        problems(&inp)[0].1,
        "VXLAN devices are up but no UDP socket listens on port 4789: VXLAN packets to this host are dropped"
    );
    inp.facts.udp_ports = Err("reading /proc/thread-self/net/udp: denied".into());
    assert_eq!(
        only(&inp, Severity::Warning),
        vec!["cannot tell whether UDP port 4789 is open: reading /proc/thread-self/net/udp: denied"]
    );
    let mut inp = healthy().await;
    inp.observed = Observed::default();
    inp.desired = Desired::default();
    inp.endpoints.clear();
    let ok = only(&inp, Severity::Ok).join("\n");
    assert!(ok.contains("no VXLAN device is up here"), "{ok}");
}

#[tokio::test]
async fn checksum_offload_against_the_kernel_bug() {
    let mut inp = healthy().await;
    inp.facts.kernel = Ok("5.4.0-150-generic".into());
    assert_eq!(
        problems(&inp),
        vec![(
            "checksum",
            "ovvx4096: tx checksum offload on (tx-checksum-ip-generic), outer UDP checksums on on kernel \
             5.4.0-150-generic: before 5.7, SNAT of VXLAN packets leaves bad checksums and peers drop them silently"
                .into(),
            "ethtool -K ovvx4096 tx-checksum-ip-generic off".into()
        )]
    );
    inp.facts.devices.insert("ovvx4096".into(), features(&["rx-checksum"]));
    assert_eq!(problems(&inp), vec![]);
    assert!(only(&inp, Severity::Ok).contains(&"ovvx4096: tx checksum offload off".to_string()));

    let mut inp = healthy().await;
    inp.facts.kernel = Err("no /proc".into());
    let warnings = only(&inp, Severity::Warning);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("whose version is unknown"), "{warnings:?}");

    let mut inp = healthy().await;
    inp.facts
        .devices
        .insert("ovvx4096".into(), DeviceFacts { features: Err("EOPNOTSUPP".into()), udp_csum: None });
    inp.facts
        .devices
        .insert("eth0".into(), DeviceFacts { features: Err("EOPNOTSUPP".into()), udp_csum: None });
    assert_eq!(
        only(&inp, Severity::Warning),
        vec![
            "cannot read the offload features of ovvx4096: EOPNOTSUPP",
            "cannot read the offload features of the underlay eth0: EOPNOTSUPP"
        ]
    );
}

#[tokio::test]
async fn invalid_records_are_warnings() {
    let mut inp = healthy().await;
    inp.bad_records = vec![BadRecord { key: "/ovnet/networks/x".into(), reason: "not JSON".into() }];
    assert_eq!(
        only(&inp, Severity::Warning),
        vec!["skipped invalid record: bad record at /ovnet/networks/x: not JSON"]
    );
}

#[test]
fn kernel_versions() {
    assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
    assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
    assert_eq!(kernel_version("4.19"), Some((4, 19)));
    assert_eq!(kernel_version("weird"), None);
}

#[tokio::test]
async fn the_firewall_table_missing_changed_unreadable_or_behind() {
    use crate::model::{Firewall, FirewallState};
    let mut inp = healthy().await;
    assert!(only(&inp, Severity::Ok).iter().any(|m| m.contains("table inet ovnet drops routed traffic")));
    let stale = Firewall { isolated: ["ovbr9".to_string()].into(), ..Firewall::default() };
    for (state, says) in [
        (
            FirewallState::Missing,
            "nftables table inet ovnet is missing: routed traffic between networks is not dropped",
        ),
        (FirewallState::Altered("it holds chain mine".into()), "was changed by hand: it holds chain mine"),
        (
            FirewallState::Unreadable("cannot run nft".into()),
            "cannot read nftables table inet ovnet: cannot run nft",
        ),
        (FirewallState::Rules(stale), "does not isolate ovbr4096 and has stale rules for ovbr9"),
        (FirewallState::Rules(Firewall::default()), "table inet ovnet does not isolate ovbr4096"),
    ] {
        inp.observed.firewall = state;
        let found = problems(&inp);
        assert_eq!(found.len(), 1, "{found:?}");
        let (area, message, fix) = &found[0];
        assert_eq!(*area, "firewall");
        assert!(message.contains(says), "{message}");
        assert!(
            fix.starts_with("nft 'add table inet ovnet;") && fix.contains(r#"iifname "ovbr4096""#),
            "{fix}"
        );
    }
}
