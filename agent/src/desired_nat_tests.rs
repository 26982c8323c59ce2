//! The NAT part of the desired state, without root: which networks are
//! masqueraded or internal, and which ports of this host are forwarded,
//! from scratch and through the memo's endpoint updates.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ovnet_ipam_store::{ClusterState, PortMapping, Proto};

use super::*;
use crate::model::{Firewall, Outbound};
use crate::testutil::{endpoint, hosts, me, network};

fn port(spec: &str) -> PortMapping {
    spec.parse().unwrap()
}

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    hosts(&mut s);
    s.networks.insert("web".into(), network("web", 4096, "10.1.0.0/16"));
    let mut sealed = network("sealed", 4097, "10.2.0.0/16");
    sealed.internal = true;
    s.networks.insert("sealed".into(), sealed);
    let mut mine = endpoint("web", "h1", [10, 1, 0, 2]);
    mine.ports = vec![port("8080:80"), port("10.9.9.9:5353:53/udp")];
    let mut theirs = endpoint("web", "h2", [10, 1, 1, 2]);
    theirs.ports = vec![port("8080:80")];
    let mut odd = endpoint("sealed", "h1", [10, 2, 0, 2]);
    odd.ports = vec![port("9090:90")]; // written by hand: an internal network publishes nothing
    for e in [mine, theirs, odd] {
        s.insert_endpoint(e);
    }
    s
}

fn published(proto: Proto, host_ip: [u8; 4], host_port: u16, port: u16) -> Published {
    Published { proto, host_ip: host_ip.into(), host_port, ip: Ipv4Addr::new(10, 1, 0, 2), port }
}

#[test]
fn this_hosts_ports_are_forwarded_and_only_open_networks_masqueraded() {
    let fw = desired(&state(), &me()).firewall();
    let want = Firewall {
        isolated: ["ovbr4096".to_string(), "ovbr4097".to_string()].into(),
        internal: ["ovbr4097".to_string()].into(),
        outbound: [Outbound { bridge: "ovbr4096".into(), subnet: "10.1.0.0/16".parse().unwrap() }].into(),
        published: [
            published(Proto::Tcp, [192, 0, 2, 1], 8080, 80),
            published(Proto::Udp, [10, 9, 9, 9], 5353, 53),
        ]
        .into(),
        ..Firewall::default()
    };
    assert_eq!(fw, want);
}

#[test]
fn containers_are_kept_from_the_control_plane_and_dead_peers_cut_off() {
    use ovnet_ipam_store::HostRecord;
    let mut s = state();
    let h3 = Ipv4Addr::new(192, 0, 2, 3);
    let at = |ip: [u8; 4], port: u16| SocketAddrV4::new(ip.into(), port);
    let control = vec![at([192, 0, 2, 3], 7070), at([127, 0, 0, 1], 9475)];
    s.hosts.insert("h3".into(), HostRecord { v: 1, name: "h3".into(), vtep: h3, registered_at: 0, control });
    let mut me = me();
    me.control_plane = ControlPlane {
        etcd: [at([10, 0, 0, 5], 2379), at([127, 0, 0, 1], 2380)].into(),
        etcd_ports: [2381].into(),
        own: [at([0, 0, 0, 0], 7070), at([10, 0, 0, 9], 9475)].into(),
        open: false,
    };
    let fw = desired(&s, &me).firewall();
    assert_eq!(fw.guard.ports, [2379, 2380, 2381, 7070, 9475].into());
    let want = [at([10, 0, 0, 5], 2379), at([10, 0, 0, 9], 9475), at([192, 0, 2, 3], 7070)];
    assert_eq!(fw.guard.addrs, want.into(), "loopback and wildcard only by port here; h3's API");
    assert_eq!(fw.cut, [h3].into(), "h3 is registered, not alive");
    // Alive again, or its VTEP now another live host's: not cut off.
    let peers: BTreeMap<String, Ipv4Addr> =
        [("h2".to_string(), [192, 0, 2, 2].into()), ("h3".to_string(), h3)].into();
    assert!(desired_with(&s, &me, &peers).cut.is_empty());
    let peers: BTreeMap<String, Ipv4Addr> = [("h4".to_string(), h3)].into();
    assert_eq!(desired_with(&s, &me, &peers).cut, [Ipv4Addr::new(192, 0, 2, 2)].into());
    // --open-control-plane: no guard at all.
    me.control_plane.open = true;
    assert_eq!(desired(&s, &me).firewall().guard, crate::model::Guard::default());
}

#[test]
fn the_memo_follows_ports_that_come_and_go() {
    let mut s = state();
    let peers: BTreeMap<String, Ipv4Addr> = [("h2".to_string(), Ipv4Addr::new(192, 0, 2, 2))].into();
    let mut memo = Memo::default();
    let first = desired_memo(&s, &me(), &peers, &mut memo);
    assert_eq!(first.firewall().published.len(), 2);
    // Another endpoint with a port, then the first one gone: the update
    // gives what computing afresh gives.
    let mut more = endpoint("web", "h1", [10, 1, 0, 3]);
    more.ports = vec![port("0:80"), port("8081:80")]; // port 0 is never written; skipped
    s.insert_endpoint(more);
    let updated = desired_memo(&s, &me(), &peers, &mut memo);
    assert_eq!(updated, desired_with(&s, &me(), &peers));
    assert_eq!(updated.firewall().published.len(), 3);
    let keys = ovnet_ipam_store::Keys::new("/ovnet");
    s.apply(&keys, &keys.endpoint("web", Ipv4Addr::new(10, 1, 0, 2)), None).unwrap();
    let updated = desired_memo(&s, &me(), &peers, &mut memo);
    assert_eq!(updated, desired_with(&s, &me(), &peers));
    let left: Vec<u16> = updated.firewall().published.iter().map(|p| p.host_port).collect();
    assert_eq!(left, [8081]);
}
