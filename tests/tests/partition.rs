//! An etcd member cut off from its cluster: the agent watching through it
//! must not keep a silent watch (watches require a leader), and a change
//! made through the majority reaches its kernel within 5 s.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ovnet_ipam_store::{EtcdStore, NewEndpoint, StoreConfig};
use ovnet_tests::Lab;
use ovnet_tests::lab::{LabOptions, poll};

/// Allocates an endpoint on `host` through the etcd `endpoints` only.
fn allocate_through(lab: &Lab, endpoints: Vec<String>, host: &str) -> Result<Ipv4Addr, String> {
    let (prefix, host) = (lab.prefix.clone(), host.to_string());
    let path = PathBuf::from(lab.underlay.path());
    ovnet_agent::netns::block_on_in_netns(&path, move || async move {
        let store = EtcdStore::connect(StoreConfig { endpoints, prefix, ..StoreConfig::default() }).await?;
        let ep = store
            .allocate_endpoint(NewEndpoint {
                id: "majority".to_string(),
                network: "net".to_string(),
                host,
                netns: "/run/netns/nowhere".to_string(),
                ifname: "eth0".to_string(),
                host_ifname: "ovvemajority".to_string(),
                ip: None,
                container: None,
                name: String::new(),
                aliases: Vec::new(),
                ports: Vec::new(),
            })
            .await?;
        Ok::<_, ovnet_ipam_store::Error>(ep.ip)
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Issue #16 item 2. A cut-off member cancels the require-leader watch; the
/// agent must open it again on another member. (Through one balanced client
/// it could land on the cut-off member again and again: this test failed
/// once under full-suite load then; watches now have a client per member
/// and move on from the one whose watch ended.)
#[test]
fn agent_watching_through_a_cut_off_member_still_sees_the_majority() {
    let opts = LabOptions { hosts: 2, etcd_members: 3, lease_ttl: 60 };
    let mut lab = Lab::start(opts).unwrap();
    lab.create_network(0, "-d overlay net").unwrap();
    lab.connected(0, "net", "c1").unwrap();
    lab.connected(1, "net", "c2").unwrap();
    // Only h1's agent watches from now on (h2's registration stays alive).
    lab.kill_agent(1);
    let watched = poll("one etcd member serving h1's watch", Duration::from_secs(10), || {
        let counts: Vec<u64> = (0..3).map(|i| lab.etcd_watchers(i).unwrap()).collect();
        (counts.iter().sum::<u64>() == 1).then(|| counts.iter().position(|n| *n == 1).unwrap())
    })
    .unwrap();
    lab.cut_etcd_member(watched).unwrap();
    let majority: Vec<String> =
        lab.etcd_endpoints().into_iter().enumerate().filter(|(i, _)| *i != watched).map(|(_, e)| e).collect();

    // The majority may first have to elect a leader.
    let ip = poll("an endpoint allocated through the majority", Duration::from_secs(15), || {
        allocate_through(&lab, majority.clone(), "h2").ok()
    })
    .unwrap()
    .to_string();
    let seen = poll("the new endpoint in h1's kernel", Duration::from_secs(5), || {
        lab.neigh(0).unwrap().iter().any(|n| n.split(' ').nth(1) == Some(ip.as_str())).then_some(())
    });
    assert!(seen.is_ok(), "{seen:?}; h1 watched through member {watched}; its log:\n{}", lab.hosts[0].log());
}
