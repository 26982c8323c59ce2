//! The store against a real etcd: concurrent allocators never collide, the
//! specific conflicts are reported as such, failed calls write nothing, and
//! bad records are reported without hiding the rest. The races start their
//! tasks together behind a barrier and record their outcomes for the
//! reliability report.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use ovnet_ipam_store::{
    AliveRecord, ClusterState, Error, ErrorKind, EtcdStore, HostRecord, NewEndpoint, NewNetwork, StoreConfig,
    WatchEvent,
};
use ovnet_tests::Etcd;
use ovnet_tests::report::record_race;
use tokio::sync::Barrier;

async fn store(etcd: &Etcd) -> EtcdStore {
    etcd.store().await
}

fn net(name: &str) -> NewNetwork {
    NewNetwork::overlay(name, 1450)
}

fn net_with(name: &str, subnet: &str, vni: Option<u32>) -> NewNetwork {
    NewNetwork { subnet: Some(subnet.parse().unwrap()), vni, ..net(name) }
}

fn endpoint(network: &str, host: &str, id: &str, ip: Option<Ipv4Addr>) -> NewEndpoint {
    NewEndpoint {
        id: id.to_string(),
        network: network.to_string(),
        host: host.to_string(),
        netns: format!("/run/netns/{id}"),
        ifname: "eth0".to_string(),
        host_ifname: format!(
            "ovve{}",
            id.chars().filter(char::is_ascii_alphanumeric).take(11).collect::<String>()
        ),
        ip,
        container: None,
        name: String::new(),
        aliases: Vec::new(),
        ports: Vec::new(),
    }
}

/// Pairs of `nets` that overlap.
fn overlaps(nets: &[Ipv4Net]) -> Vec<(Ipv4Net, Ipv4Net)> {
    let mut out = Vec::new();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                out.push((*a, *b));
            }
        }
    }
    out
}

/// Runs `n` copies of `task` at once: each waits at a barrier until all are spawned.
async fn together<T, F>(n: usize, task: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let start = std::sync::Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (start, work) = (start.clone(), task(i));
            tokio::spawn(async move {
                start.wait().await;
                work.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a racing task panicked"));
    }
    out
}

fn race(test: &str, scenario: &str, held: &str, operations: usize, duplicates: usize) {
    record_race(test, scenario, held, operations, duplicates, 0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_network_creation_gets_distinct_vnis_and_subnets() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let results = together(32, |i| {
        let s = s.clone();
        async move { s.create_network(net(&format!("n{i}"))).await }
    })
    .await;
    let created: Vec<_> = results.into_iter().map(|r| r.expect("create_network")).collect();
    let vnis: BTreeSet<u32> = created.iter().map(|n| n.vni).collect();
    assert_eq!(vnis.len(), 32, "{vnis:?}");
    assert!(vnis.iter().all(|v| *v >= 4096));
    let subnets: Vec<Ipv4Net> = created.iter().map(|n| n.subnet).collect();
    assert_eq!(overlaps(&subnets), vec![]);
    assert_eq!(s.list_networks().await.unwrap().len(), 32);
    race(
        "concurrent_network_creation_gets_distinct_vnis_and_subnets",
        "32 store clients create 32 networks without subnet or VNI at the same moment",
        "all 32 created, 32 distinct VNIs from 4096, no two subnets overlap",
        32,
        0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn same_name_concurrently_exactly_one_wins() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let results = together(64, |_| {
        let s = s.clone();
        async move { s.create_network(net("same")).await }
    })
    .await;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(_) => ok += 1,
            Err(Error::NetworkExists(name)) => assert_eq!(name, "same"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    let (_, kvs) = s.snapshot().await.unwrap();
    let keys: Vec<&String> = kvs.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 2, "one network key and one VNI key: {keys:?}");
    race(
        "same_name_concurrently_exactly_one_wins",
        "64 store clients create network \"same\" at the same moment",
        "exactly one created; 63 got NetworkExists; etcd holds one network and one VNI key",
        64,
        0,
    );
}

/// `hosts` simulated hosts lease a block of one /16 at the same moment;
/// returns how many blocks were handed out twice or overlap (always 0).
async fn concurrent_block_leases(hosts: usize) -> usize {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let subnet: Ipv4Net = "10.20.0.0/16".parse().unwrap();
    s.create_network(net_with("blue", &subnet.to_string(), None)).await.unwrap();
    let results = together(hosts, |i| {
        let s = s.clone();
        async move { s.lease_block("blue", &format!("host{i}")).await }
    })
    .await;
    let leased: Vec<_> = results.into_iter().map(|r| r.expect("lease_block")).collect();
    let blocks: Vec<Ipv4Net> = leased.iter().map(|b| b.cidr).collect();
    let distinct: BTreeSet<Ipv4Net> = blocks.iter().copied().collect();
    let duplicates = hosts - distinct.len() + overlaps(&blocks).len();
    assert_eq!(duplicates, 0, "blocks handed out twice or overlapping: {blocks:?}");
    assert!(blocks.iter().all(|b| b.prefix_len() == 24 && subnet.contains(b)), "{blocks:?}");
    // What etcd holds: one block per host, the ones the hosts were told.
    let stored = s.list_blocks(Some("blue")).await.unwrap();
    let owners: BTreeSet<&str> = stored.iter().map(|b| b.host.as_str()).collect();
    assert_eq!((stored.len(), owners.len()), (hosts, hosts));
    let stored: BTreeSet<(Ipv4Net, String)> = stored.iter().map(|b| (b.cidr, b.host.clone())).collect();
    let told: BTreeSet<(Ipv4Net, String)> = leased.iter().map(|b| (b.cidr, b.host.clone())).collect();
    assert_eq!(stored, told);
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thirty_two_hosts_lease_distinct_blocks() {
    let duplicates = concurrent_block_leases(32).await;
    race(
        "thirty_two_hosts_lease_distinct_blocks",
        "32 simulated hosts lease a /24 block of one /16 at the same moment",
        "32 distinct, non-overlapping /24s inside the /16, one per host, as etcd holds them",
        32,
        duplicates,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_racing_hosts_all_get_a_block() {
    let duplicates = concurrent_block_leases(200).await;
    race(
        "two_hundred_racing_hosts_all_get_a_block",
        "200 simulated hosts lease a /24 block of one /16 at the same moment",
        "200 distinct, non-overlapping /24s inside the /16, one per host, as etcd holds them",
        200,
        duplicates,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_endpoints_get_distinct_addresses_in_their_hosts_blocks() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    // /29 blocks (8 addresses): 8 endpoints per host need two blocks each.
    let mut req = net_with("blue", "10.30.0.0/16", None);
    req.block_prefix = Some(29);
    s.create_network(req).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            let host = format!("host{}", i % 4);
            tokio::spawn(
                async move { s.allocate_endpoint(endpoint("blue", &host, &format!("c{i}"), None)).await },
            )
        })
        .collect();
    let mut eps = Vec::new();
    for t in tasks {
        eps.push(t.await.unwrap().expect("allocate_endpoint"));
    }
    let ips: BTreeSet<Ipv4Addr> = eps.iter().map(|e| e.ip).collect();
    assert_eq!(ips.len(), 32);
    let blocks = s.list_blocks(Some("blue")).await.unwrap();
    for e in &eps {
        let owner = blocks.iter().find(|b| b.cidr.contains(&e.ip));
        assert_eq!(owner.map(|b| b.host.as_str()), Some(e.host.as_str()), "{}", e.ip);
        assert!(e.ip != "10.30.0.1".parse::<Ipv4Addr>().unwrap(), "gateway handed out");
        assert_eq!(e.mac, ovnet_ipam_store::Mac::endpoint(e.ip));
    }
    assert_eq!(s.list_endpoints(Some("blue")).await.unwrap().len(), 32);
    assert_eq!(s.list_endpoints(None).await.unwrap().len(), 32);
    race(
        "concurrent_endpoints_get_distinct_addresses_in_their_hosts_blocks",
        "32 endpoints allocated at once on 4 hosts of a network with /29 blocks (2 blocks per host)",
        "32 distinct addresses, each in a block of its own host, never the gateway",
        32,
        0,
    );
}

#[tokio::test]
async fn explicit_conflicts_are_reported_specifically() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    s.create_network(net_with("blue", "10.1.0.0/24", Some(4096))).await.unwrap();

    let e = s.create_network(net_with("red", "10.2.0.0/16", Some(4096))).await.unwrap_err();
    assert_eq!(e.to_string(), r#"VNI 4096 is already used by network "blue""#);
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);

    let e = s.create_network(net_with("red", "10.1.0.0/16", None)).await.unwrap_err();
    assert_eq!(e.to_string(), r#"subnet 10.1.0.0/16 overlaps network "blue" (10.1.0.0/24)"#);

    let e = s.create_network(net_with("blue", "10.3.0.0/16", None)).await.unwrap_err();
    assert!(matches!(e, Error::NetworkExists(_)), "{e}");

    let before = s.snapshot().await.unwrap();
    let e = s.create_network(net_with("red", "10.1.2.3/16", None)).await.unwrap_err();
    assert!(e.to_string().contains("10.1.0.0/16"), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(s.snapshot().await.unwrap(), before, "a refused create wrote something");

    // Explicit addresses.
    let ep = |host: &str, ip: &str| endpoint("blue", host, "c", Some(ip.parse().unwrap()));
    let got = s.allocate_endpoint(ep("a", "10.1.0.77")).await.unwrap();
    assert_eq!(got.ip.to_string(), "10.1.0.77");
    let e = s.allocate_endpoint(ep("a", "10.1.0.77")).await.unwrap_err();
    assert!(matches!(e, Error::IpTaken { .. }), "{e}");
    let e = s.allocate_endpoint(ep("b", "10.1.0.78")).await.unwrap_err();
    assert!(matches!(e, Error::BlockOwnedByOtherHost { ref host, .. } if host == "a"), "{e}");
    let e = s.allocate_endpoint(ep("a", "10.1.0.1")).await.unwrap_err();
    assert!(matches!(e, Error::IpReserved { .. }), "{e}");
    let e = s.allocate_endpoint(ep("a", "10.9.0.5")).await.unwrap_err();
    assert!(matches!(e, Error::IpNotInSubnet { .. }), "{e}");
    let e = s.get_network("nope").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn exhausting_a_tiny_network_writes_nothing() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let tiny = s.create_network(net_with("tiny", "10.9.0.0/30", None)).await.unwrap();
    assert_eq!(tiny.block_prefix, 30);
    let first = s.allocate_endpoint(endpoint("tiny", "a", "c1", None)).await.unwrap();
    assert_eq!(first.ip.to_string(), "10.9.0.2");

    for host in ["a", "b"] {
        let before = s.snapshot().await.unwrap();
        let e = s.allocate_endpoint(endpoint("tiny", host, "c2", None)).await.unwrap_err();
        assert_eq!(e.to_string(), r#"no free address left in network "tiny" (10.9.0.0/30)"#);
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(s.snapshot().await.unwrap(), before, "exhausted allocation wrote something");
    }
    let e = s.lease_block("tiny", "b").await.unwrap_err();
    assert!(matches!(e, Error::AddressExhausted { .. }), "{e}");

    // Releasing frees the address; the block stays with host a.
    s.release_endpoint("tiny", first.ip).await.unwrap();
    let e = s.release_endpoint("tiny", first.ip).await.unwrap_err();
    assert!(matches!(e, Error::EndpointNotFound { .. }), "{e}");
    assert_eq!(s.list_blocks(Some("tiny")).await.unwrap()[0].host, "a");
    let again = s.allocate_endpoint(endpoint("tiny", "a", "c3", None)).await.unwrap();
    assert_eq!(again.ip, first.ip);
    race(
        "exhausting_a_tiny_network_writes_nothing",
        "a /30 network: a second address on the owning host and on another host, a second block",
        "\"no free address left\" (ResourceExhausted) both times with etcd unchanged; the block lease \
         refused; the address is handed out again once released",
        4,
        0,
    );
}

#[tokio::test]
async fn exhausting_the_subnet_pool_writes_nothing() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    // One network may hold the whole automatic pool (10.128.0.0/9).
    s.create_network(net_with("all", "10.128.0.0/9", None)).await.unwrap();
    let before = s.snapshot().await.unwrap();
    let e = s.create_network(net("more")).await.unwrap_err();
    assert_eq!(e.to_string(), "no free subnet left in the address pool 10.128.0.0/9");
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    assert_eq!(s.snapshot().await.unwrap(), before, "an exhausted create wrote something");
    // An explicit subnet outside the pool still works.
    s.create_network(net_with("more", "10.1.0.0/16", None)).await.unwrap();
    race(
        "exhausting_the_subnet_pool_writes_nothing",
        "the automatic subnet pool taken whole by one network, then a network created without --subnet",
        "\"no free subnet left in the address pool 10.128.0.0/9\" (ResourceExhausted), etcd unchanged; \
         a network with an explicit subnet still created",
        3,
        0,
    );
}

#[tokio::test]
async fn remove_network_is_refused_while_an_endpoint_exists() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let blue = s.create_network(net("blue")).await.unwrap();
    let ep = s.allocate_endpoint(endpoint("blue", "a", "c1", None)).await.unwrap();
    let e = s.remove_network("blue").await.unwrap_err();
    assert_eq!(e.to_string(), r#"network "blue" is still in use by 1 endpoint"#);
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);

    s.release_endpoint("blue", ep.ip).await.unwrap();
    assert_eq!(s.remove_network("blue").await.unwrap(), blue);
    let (_, kvs) = s.snapshot().await.unwrap();
    assert!(kvs.is_empty(), "left behind: {kvs:?}");
    assert!(matches!(s.remove_network("blue").await, Err(Error::NetworkNotFound(_))));
    // The VNI and subnet are free again.
    let again = s.create_network(net("green")).await.unwrap();
    assert_eq!((again.vni, again.subnet), (blue.vni, blue.subnet));
}

#[tokio::test]
async fn bad_records_are_reported_and_the_rest_kept() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    s.create_network(net("blue")).await.unwrap();
    s.allocate_endpoint(endpoint("blue", "a", "c1", None)).await.unwrap();
    let mut c = s.client();
    let k = s.keys().clone();
    c.put(k.network("junk"), b"\xff\x00not json".to_vec(), None).await.unwrap();
    c.put(k.host("h9"), br#"{"v":2,"name":"h9"}"#.to_vec(), None).await.unwrap();
    c.put(k.endpoint("blue", "10.128.0.9".parse().unwrap()), br#"{"v":1,"id":"x""#.to_vec(), None)
        .await
        .unwrap();
    c.put(format!("{}unknown/thing", k.all()), b"ignored".to_vec(), None).await.unwrap();

    let (rev, kvs) = s.snapshot().await.unwrap();
    let (state, bad) =
        ClusterState::from_kvs(&k, rev, kvs.iter().map(|(key, v)| (key.as_str(), v.as_slice())));
    let bad_keys: BTreeSet<String> = bad.iter().map(|b| b.key.clone()).collect();
    let want: BTreeSet<String> =
        [k.network("junk"), k.host("h9"), k.endpoint("blue", "10.128.0.9".parse().unwrap())].into();
    assert_eq!(bad_keys, want, "{bad:?}");
    assert_eq!(state.revision, rev);
    assert_eq!(state.networks.keys().collect::<Vec<_>>(), vec!["blue"]);
    assert_eq!(state.all_endpoints().count(), 1);
    assert_eq!(state.all_blocks().count(), 1);
    // The store's own listings skip the garbage too.
    assert_eq!(s.list_networks().await.unwrap().len(), 1);
    // An unreadable endpoint key still blocks its address.
    let e = s
        .allocate_endpoint(endpoint("blue", "a", "c2", Some("10.128.0.9".parse().unwrap())))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::IpTaken { .. }), "{e}");
}

#[tokio::test]
async fn hosts_register_stay_alive_and_die_with_their_lease() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let vtep: Ipv4Addr = "192.0.2.1".parse().unwrap();
    let lease = s.grant_lease(10).await.unwrap();
    let host = HostRecord { v: 1, name: "h1".into(), vtep, registered_at: 1, control: Vec::new() };
    let alive = AliveRecord { v: 1, name: "h1".into(), vtep, started_at: 2 };
    s.register_host(&host, &alive, lease).await.unwrap();
    s.create_network(net("blue")).await.unwrap();
    s.lease_block("blue", "h2").await.unwrap();

    let hosts = s.list_hosts().await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["h1", "h2"]);
    assert!(hosts[0].alive && hosts[0].vtep == Some(vtep) && hosts[0].blocks.is_empty());
    assert!(!hosts[1].alive && hosts[1].vtep.is_none() && hosts[1].blocks.len() == 1);

    let ttl = s.keep_alive_once(lease).await.unwrap();
    assert!((1..=10).contains(&ttl), "ttl {ttl}");
    s.client().lease_revoke(lease).await.unwrap();
    assert_eq!(s.keep_alive_once(lease).await.unwrap(), 0);
    let hosts = s.list_hosts().await.unwrap();
    assert!(!hosts[0].alive && hosts[0].vtep == Some(vtep), "{hosts:?}");
}

#[tokio::test]
async fn watch_reports_changes_and_compaction() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let (rev, _) = s.snapshot().await.unwrap();
    let mut w = s.watch(rev + 1).await.unwrap();
    let blue = s.create_network(net("blue")).await.unwrap();
    let batch = w.next().await.unwrap().expect("a batch");
    assert!(batch.revision > rev);
    let keys: Vec<String> = batch
        .events
        .iter()
        .map(|e| match e {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key } => key.clone(),
        })
        .collect();
    assert_eq!(keys, vec![s.keys().network("blue"), s.keys().vni(blue.vni)]);
    s.remove_network("blue").await.unwrap();
    let batch = w.next().await.unwrap().expect("a batch");
    assert!(batch.events.iter().all(|e| matches!(e, WatchEvent::Delete { .. })));

    let (now, _) = s.snapshot().await.unwrap();
    s.client().compact(now, None).await.unwrap();
    let mut old = s.watch(rev + 1).await.unwrap();
    match old.next().await {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, now),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_fail_fast_when_etcd_is_down() {
    let mut etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    s.create_network(net("blue")).await.unwrap();
    etcd.stop();

    let started = Instant::now();
    let e = s.create_network(net("red")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(e.to_string().starts_with("etcd is unreachable"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unavailable);

    let started = Instant::now();
    let e = EtcdStore::connect(StoreConfig { endpoints: vec![etcd.endpoint()], ..StoreConfig::default() })
        .await
        .err()
        .expect("connect to a dead etcd");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(e.to_string().contains("etcd is unreachable"), "{e}");
    assert!(e.to_string().contains(&etcd.endpoint()), "{e}");

    // It comes back on the same data.
    etcd.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.get_network("blue").await {
            Ok(n) => break assert_eq!(n.name, "blue"),
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn a_connect_is_an_offer_then_a_claim_once_per_namespace_host_and_network() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    s.create_network(net_with("blue", "10.1.0.0/24", None)).await.unwrap();
    s.create_network(net_with("red", "10.2.0.0/24", None)).await.unwrap();
    let same = |ns: String| move |other: &str| other == ns;

    // An offer reads and picks, and writes nothing; the name comes later.
    let mut req = NewEndpoint { ifname: String::new(), ..endpoint("blue", "a", "c1", None) };
    let before = s.snapshot().await.unwrap().1;
    let offer = s.offer_endpoint(&req, same(req.netns.clone())).await.unwrap();
    assert_eq!((offer.ip.to_string(), offer.network.name.as_str()), ("10.1.0.2".to_string(), "blue"));
    assert_eq!(offer.mac, ovnet_ipam_store::Mac::endpoint(offer.ip));
    assert_eq!(s.snapshot().await.unwrap().1, before, "an offer wrote something");
    req.ifname = "eth0".into();
    let (ep, net) = s.claim_endpoint(offer, req.clone(), same(req.netns.clone())).await.unwrap();
    assert_eq!(
        (ep.ip.to_string(), ep.ifname.as_str(), net.name.as_str()),
        ("10.1.0.2".into(), "eth0", "blue")
    );

    // The same namespace again on the same host and network: refused, nothing written.
    let before = s.snapshot().await.unwrap().1;
    let e = s.offer_endpoint(&endpoint("blue", "a", "c9", None), same(req.netns.clone())).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"namespace "/run/netns/c9" is already connected to network "blue" (address 10.1.0.2)"#
    );
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(s.snapshot().await.unwrap().1, before, "a refused offer wrote something");
    // Elsewhere it is another endpoint.
    for (network, host) in [("blue", "b"), ("red", "a")] {
        let other = endpoint(network, host, "c1", None);
        let offer = s.offer_endpoint(&other, same(other.netns.clone())).await.unwrap();
        s.claim_endpoint(offer, other.clone(), same(other.netns.clone())).await.unwrap();
    }

    // Two offers of the same address: the second claim picks again.
    let (c3, c4) = (endpoint("blue", "a", "c3", None), endpoint("blue", "a", "c4", None));
    let o3 = s.offer_endpoint(&c3, same(c3.netns.clone())).await.unwrap();
    let o4 = s.offer_endpoint(&c4, same(c4.netns.clone())).await.unwrap();
    assert_eq!(o3.ip, o4.ip);
    let (e3, _) = s.claim_endpoint(o3, c3.clone(), same(c3.netns.clone())).await.unwrap();
    let (e4, _) = s.claim_endpoint(o4, c4.clone(), same(c4.netns.clone())).await.unwrap();
    assert_ne!(e3.ip, e4.ip);
    assert_eq!(e4.mac, ovnet_ipam_store::Mac::endpoint(e4.ip));

    // One read gives the network and its endpoints; a release is one request.
    let (net, eps) = s.network_endpoints("blue").await.unwrap();
    assert_eq!(net.name, "blue");
    let hosts: Vec<(&str, &str)> = eps.iter().map(|e| (e.host.as_str(), e.netns.as_str())).collect();
    assert_eq!(hosts.len(), 4, "{hosts:?}");
    assert!(eps.windows(2).all(|w| w[0].ip < w[1].ip), "sorted by address");
    assert_eq!(s.release_endpoint("blue", e3.ip).await.unwrap(), e3);
    assert!(matches!(s.release_endpoint("blue", e3.ip).await, Err(Error::EndpointNotFound { .. })));
    assert!(matches!(s.network_endpoints("nope").await, Err(Error::NetworkNotFound(_))));
}

#[tokio::test]
async fn an_endpoint_update_keeps_its_lease_and_only_touches_the_same_endpoint() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    s.create_network(net("blue")).await.unwrap();
    let reservation = s.grant_lease(60).await.unwrap();
    s.set_reservation(reservation);
    let ep = s.allocate_endpoint(endpoint("blue", "a", "c1", None)).await.unwrap();
    let updated =
        s.update_endpoint("blue", ep.ip, "c1", |e| e.netns = "/var/run/docker/netns/x".into()).await;
    let updated = updated.unwrap().expect("the endpoint is there");
    assert_eq!(
        updated,
        ovnet_ipam_store::EndpointRecord { netns: "/var/run/docker/netns/x".into(), ..ep.clone() }
    );
    let key = s.keys().endpoint("blue", ep.ip);
    let kv = s.client().get(key, None).await.unwrap();
    assert_eq!(kv.kvs()[0].lease(), reservation, "the update kept the record on its reservation");
    assert!(String::from_utf8_lossy(kv.kvs()[0].value()).contains("/var/run/docker/netns/x"));
    let other = s.update_endpoint("blue", ep.ip, "someone-else", |e| e.netns.clear()).await.unwrap();
    assert_eq!(other, None, "another endpoint's id changes nothing");
    s.release_endpoint("blue", ep.ip).await.unwrap();
    assert_eq!(s.update_endpoint("blue", ep.ip, "c1", |e| e.netns.clear()).await.unwrap(), None);
}
