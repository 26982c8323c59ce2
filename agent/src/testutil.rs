//! Builders of cluster records for the unit tests of the loop and the doctor.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{AliveRecord, ClusterState, EndpointRecord, HostRecord, Mac, NetworkRecord};

use crate::desired::HostContext;

pub fn network(name: &str, vni: u32, subnet: &str) -> NetworkRecord {
    let subnet: Ipv4Net = subnet.parse().unwrap();
    NetworkRecord {
        v: 1,
        id: format!("id-{name}"),
        name: name.into(),
        driver: ovnet_ipam_store::Driver::Overlay,
        host: None,
        subnet,
        gateway: ovnet_ipam_store::alloc::gateway(subnet),
        vni,
        mtu: 1450,
        block_prefix: 24,
        created_at: 0,
        internal: false,
    }
}

pub fn endpoint(network: &str, host: &str, ip: [u8; 4]) -> EndpointRecord {
    let ip = Ipv4Addr::from(ip);
    EndpointRecord {
        v: 1,
        id: format!("{host}-{ip}"),
        network: network.into(),
        host: host.into(),
        netns: format!("c{}", ip.octets()[3]),
        ip,
        mac: Mac::endpoint(ip),
        ifname: "eth0".into(),
        host_ifname: format!("ovve{}", ip.octets()[3]),
        created_at: 0,
        container: None,
        name: String::new(),
        aliases: Vec::new(),
        ports: Vec::new(),
    }
}

/// h1 (192.0.2.1, this host) and h2 (192.0.2.2), both alive.
pub fn hosts(state: &mut ClusterState) {
    for (name, last) in [("h1", 1), ("h2", 2)] {
        let vtep = Ipv4Addr::new(192, 0, 2, last);
        state.hosts.insert(
            name.into(),
            HostRecord { v: 1, name: name.into(), vtep, registered_at: 0, control: Vec::new() },
        );
        state.alive.insert(name.into(), AliveRecord { v: 1, name: name.into(), vtep, started_at: 0 });
    }
}

/// Network "blue" (VNI 4096) with one endpoint on h2 and none here.
pub fn cluster() -> ClusterState {
    let mut s = ClusterState { revision: 7, ..ClusterState::default() };
    hosts(&mut s);
    s.networks.insert("blue".into(), network("blue", 4096, "10.128.0.0/16"));
    s.insert_endpoint(endpoint("blue", "h2", [10, 128, 1, 2]));
    s
}

pub fn me() -> HostContext {
    HostContext {
        node: "h1".into(),
        vtep: Ipv4Addr::new(192, 0, 2, 1),
        underlay_mtu: 1500,
        control_plane: Default::default(),
    }
}
