//! `NetlinkDataplane` against the real kernel (needs root).
//!
//! Every test builds its own "hosts" and "containers" as network namespaces
//! with unique names, removed by a guard even when the test fails; nothing
//! touches the namespace the tests run in.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use ovnet_agent::dataplane::{AttachSpec, Dataplane, NetlinkDataplane, Underlay};
use ovnet_agent::model::{FdbEntry, LinkKind, NeighEntry, ObservedLink};
use ovnet_agent::netns::block_on_in_netns;
use ovnet_agent::op::Op;
use ovnet_ipam_store::Mac;

/// A namespace made with `ip netns add`, deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ovt{}-{n}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let path = PathBuf::from("/run/netns").join(&name);
        Netns { name, path }
    }

    /// `ip -n NAME ARGS...`, which must succeed; returns stdout.
    fn ip(&self, args: &str) -> String {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend(args.split_whitespace());
        run(&argv)
    }

    /// `ip -n NAME -j -d link show DEV` as JSON.
    fn link_json(&self, dev: &str) -> serde_json::Value {
        let out = self.ip(&format!("-j -d link show {dev}"));
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        parsed[0].clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().expect("running a command");
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A "host": a veth underlay (its peer stays in the same namespace) with
/// `addr`/24 and a default route through it.
fn host(tag: &str, addr: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip("link add ul0 type veth peer name ul1");
    ns.ip(&format!("addr add {addr}/24 dev ul0"));
    ns.ip("link set ul1 up");
    ns.ip("link set ul0 up");
    ns.ip("route add default via 192.0.2.254 dev ul0");
    ns
}

/// A host namespace and a dataplane bound to it.
async fn host_dp(tag: &str, addr: &str) -> (Netns, NetlinkDataplane) {
    let h = host(tag, addr);
    let dp = NetlinkDataplane::in_netns(&h.path).await.expect("dataplane");
    (h, dp)
}

/// `ip netns exec NS ping -c1 -W2 DST`, which must succeed.
fn ping(ns: &Netns, dst: &str) {
    run(&["ip", "netns", "exec", &ns.name, "ping", "-c1", "-W2", dst]);
}

fn fdb(mac: Mac, dst: Ipv4Addr) -> FdbEntry {
    FdbEntry { mac, dst }
}

fn add_fdb(mac: Mac, dst: Ipv4Addr) -> Op {
    Op::AddFdb { dev: VX.into(), mac, dst }
}

fn bridge_ops(name: &str, gateway: &str, prefix: u8) -> [Op; 2] {
    let gw = ip4(gateway);
    let (mac, addr) = (Mac::gateway(gw), Ipv4Net::new(gw, prefix).expect("prefix"));
    [Op::CreateBridge { name: name.into(), mac, mtu: 1450 }, Op::AddAddr { dev: name.into(), addr }]
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 address")
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("IPv4 prefix")
}

const VNI: u32 = 4096;
const BR: &str = "ovbr4096";
const VX: &str = "ovvx4096";

/// The ops one network needs on a host at `local`: flood entries toward
/// `peers`, and FDB plus ARP entries for `remote` (endpoint IP, its host).
fn datapath_ops(local: Ipv4Addr, peers: &[Ipv4Addr], remote: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<Op> {
    let mut ops = bridge_ops(BR, "10.77.0.1", 24).to_vec();
    ops.push(Op::CreateVxlan { name: VX.into(), vni: VNI, local, port: 4789, mtu: 1450, master: BR.into() });
    ops.extend(peers.iter().map(|peer| add_fdb(Mac::ZERO, *peer)));
    for (ip, dst) in remote {
        ops.push(add_fdb(Mac::endpoint(*ip), *dst));
        ops.push(Op::AddNeigh { dev: VX.into(), ip: *ip, mac: Mac::endpoint(*ip) });
    }
    ops
}

async fn apply_ok(dp: &NetlinkDataplane, ops: &[Op]) {
    let errors = dp.apply(ops).await;
    assert!(errors.is_empty(), "{:#?}", errors.iter().map(ToString::to_string).collect::<Vec<_>>());
}

#[tokio::test]
async fn underlay_is_found_by_address_or_default_route() {
    let (h, dp) = host_dp("ul", "192.0.2.1").await;
    let want = Underlay { addr: ip4("192.0.2.1"), ifname: "ul0".into(), mtu: 1500 };
    assert_eq!(dp.underlay(None).await.expect("default route"), want);
    assert_eq!(dp.underlay(Some(ip4("192.0.2.1"))).await.expect("by address"), want);
    let err = dp.underlay(Some(ip4("198.51.100.9"))).await.unwrap_err();
    assert_eq!(err.to_string(), "no interface holds advertise address 198.51.100.9");

    h.ip("route del default");
    let err = dp.underlay(None).await.unwrap_err();
    assert!(err.to_string().contains("no IPv4 default route"), "{err}");
    h.ip("addr add 192.0.2.7/24 dev ul0");
    h.ip("route add default via 192.0.2.254 dev ul0 src 192.0.2.7");
    assert_eq!(dp.underlay(None).await.expect("prefsrc").addr, ip4("192.0.2.7"));
}

#[tokio::test]
async fn a_datapath_is_applied_observed_and_reapplied() {
    let (h, dp) = host_dp("dp", "192.0.2.1").await;
    let (peer_a, peer_b, remote) = (ip4("192.0.2.2"), ip4("192.0.2.3"), ip4("10.77.0.9"));
    let ops = datapath_ops(ip4("192.0.2.1"), &[peer_a, peer_b], &[(remote, peer_a)]);
    apply_ok(&dp, &ops).await;

    let observed = dp.observe().await.expect("observe");
    assert_eq!(observed.links.keys().collect::<Vec<_>>(), [BR, VX]);
    let bridge = &observed.links[BR];
    let want_bridge = ObservedLink {
        name: BR.into(),
        index: bridge.index,
        kind: LinkKind::Bridge,
        mtu: 1450,
        mac: Some(Mac::gateway(ip4("10.77.0.1"))),
        up: true,
        master: None,
        addrs: BTreeSet::from([net("10.77.0.1/24")]),
    };
    assert_eq!(bridge, &want_bridge);
    let vxlan = &observed.links[VX];
    let local = Some(ip4("192.0.2.1"));
    let kind = LinkKind::Vxlan { vni: VNI, local, port: 4789, learning: false, proxy: true };
    assert_eq!(vxlan.kind, kind);
    assert_eq!((vxlan.mtu, vxlan.up, vxlan.master.as_deref()), (1450, true, Some(BR)));
    assert!(vxlan.addrs.is_empty());
    let want_fdb = [fdb(Mac::ZERO, peer_a), fdb(Mac::ZERO, peer_b), fdb(Mac::endpoint(remote), peer_a)];
    assert_eq!(observed.fdb.get(VX), Some(&BTreeSet::from(want_fdb)));
    let neigh = BTreeSet::from([NeighEntry { ip: remote, mac: Mac::endpoint(remote) }]);
    assert_eq!(observed.neigh.get(VX), Some(&neigh));
    let port = h.link_json(VX);
    assert_eq!(port["linkinfo"]["info_slave_data"]["learning"], false, "{port}");
    // The VXLAN device without GRO (read with the ethtool binary), and
    // neither device with an IPv6 address.
    let features = run(&["ip", "netns", "exec", &h.name, "ethtool", "-k", VX]);
    assert!(features.contains("generic-receive-offload: off"), "{features}");
    assert!(features.contains("rx-checksumming: on"), "only GRO changed: {features}");
    for dev in [BR, VX] {
        assert_eq!(h.ip(&format!("-6 -o addr show dev {dev}")), "", "{dev} has IPv6 addresses");
    }

    // Replaying the whole plan is harmless.
    apply_ok(&dp, &ops).await;
    assert_eq!(dp.observe().await.expect("observe"), observed);

    // A unicast entry moves to its new destination instead of adding one.
    apply_ok(&dp, &[add_fdb(Mac::endpoint(remote), peer_b)]).await;
    let moved = dp.observe().await.expect("observe").fdb[VX].clone();
    assert!(moved.contains(&fdb(Mac::endpoint(remote), peer_b)));
    assert_eq!(moved.len(), 3, "{moved:?}");
}

#[tokio::test]
async fn removals_take_exactly_what_they_name_and_repeat_cleanly() {
    let (_h, dp) = host_dp("rm", "192.0.2.1").await;
    let (peer_a, peer_b, remote) = (ip4("192.0.2.2"), ip4("192.0.2.3"), ip4("10.77.0.9"));
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[peer_a, peer_b], &[(remote, peer_a)])).await;

    let removals = [
        Op::DelFdb { dev: VX.into(), mac: Mac::ZERO, dst: peer_a },
        Op::DelNeigh { dev: VX.into(), ip: remote },
        Op::DelAddr { dev: BR.into(), addr: net("10.77.0.1/24") },
    ];
    for _ in 0..2 {
        apply_ok(&dp, &removals).await;
    }
    let observed = dp.observe().await.expect("observe");
    let want_fdb = [fdb(Mac::ZERO, peer_b), fdb(Mac::endpoint(remote), peer_a)];
    assert_eq!(observed.fdb.get(VX), Some(&BTreeSet::from(want_fdb)));
    assert_eq!(observed.neigh.get(VX), None);
    assert!(observed.links[BR].addrs.is_empty());

    apply_ok(&dp, &[Op::SetMtu { name: VX.into(), mtu: 1400 }]).await;
    assert_eq!(dp.observe().await.expect("observe").links[VX].mtu, 1400);

    let deletes = [Op::DeleteLink { name: VX.into() }, Op::DeleteLink { name: BR.into() }];
    for _ in 0..2 {
        apply_ok(&dp, &deletes).await;
    }
    let observed = dp.observe().await.expect("observe");
    assert!(observed.links.is_empty() && observed.fdb.is_empty(), "{observed:?}");
}

#[tokio::test]
async fn failures_are_reported_per_op_and_do_not_stop_the_rest() {
    let (_h, dp) = host_dp("err", "192.0.2.1").await;
    let bad = Op::AddFdb { dev: "ovvxmissing".into(), mac: Mac::ZERO, dst: ip4("192.0.2.2") };
    let bad_master = Op::SetMaster { name: "ul0".into(), master: "ovbrmissing".into() };
    let [good, _] = bridge_ops(BR, "10.77.0.1", 24);
    let errors = dp.apply(&[bad.clone(), bad_master.clone(), good]).await;
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].starts_with(&bad.to_string()) && texts[0].contains("ovvxmissing"), "{texts:?}");
    let master_failed = texts[1].starts_with(&bad_master.to_string()) && texts[1].contains("ovbrmissing");
    assert!(master_failed, "{texts:?}");
    assert!(dp.observe().await.expect("observe").links.contains_key(BR));
}

/// Endpoint `id` as `ifname` on `bridge`, with `addr`/24 and the subnet's
/// first address as gateway.
fn spec(id: &str, ifname: &str, bridge: &str, addr: &str) -> AttachSpec {
    let addr: Ipv4Net = format!("{addr}/24").parse().expect("prefix");
    AttachSpec {
        host_ifname: format!("ovve{id}"),
        ifname: ifname.into(),
        bridge: bridge.into(),
        mac: Mac::endpoint(addr.addr()),
        addr,
        gateway: Ipv4Addr::from(u32::from(addr.network()) + 1),
        mtu: 1450,
    }
}

/// The IPv4 addresses inside a namespace, read through a socket opened there.
fn addrs_in(ns: &Path) -> BTreeSet<Ipv4Addr> {
    block_on_in_netns(ns, || async {
        let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
        tokio::spawn(connection);
        let addrs: Vec<_> = handle.address().get().execute().try_collect().await.expect("addr dump");
        let attrs = addrs.into_iter().flat_map(|a| a.attributes);
        let locals = attrs.filter_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        });
        locals.collect()
    })
    .expect("entering the namespace")
}

#[tokio::test]
async fn endpoints_are_attached_and_detached() {
    let (_h, dp) = host_dp("att", "192.0.2.1").await;
    let c = Netns::new("c");
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[], &[])).await;
    apply_ok(&dp, &bridge_ops("ovbr4097", "10.78.0.1", 24)).await;

    let ns = dp.open_netns(c.path.clone()).await.expect("open the namespace");
    dp.attach(&ns, spec("aaa", "eth0", BR, "10.77.0.2")).await.expect("attach eth0");
    let links = dp.netns_links(&ns).await.expect("links");
    assert_eq!(links.iter().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(["lo", "eth0"]));
    assert!(addrs_in(&c.path).contains(&ip4("10.77.0.2")));
    let eth0 = c.link_json("eth0");
    let (mac, mtu) = (eth0["address"].as_str(), eth0["mtu"].as_u64());
    assert_eq!((mac, mtu), (Some("02:42:0a:4d:00:02"), Some(1450)));
    assert!(c.ip("route show default").contains("via 10.77.0.1 dev eth0"));
    let host_end = dp.observe().await.expect("observe").links["ovveaaa"].clone();
    let host_end = (host_end.kind, host_end.master.as_deref(), host_end.up, host_end.mtu);
    assert_eq!(host_end, (LinkKind::Veth, Some(BR), true, 1450));
    ping(&c, "10.77.0.1");

    // A second interface keeps the first one's default route.
    dp.attach(&ns, spec("bbb", "eth1", "ovbr4097", "10.78.0.2")).await.expect("attach eth1");
    assert!(c.ip("route show default").contains("via 10.77.0.1 dev eth0"));
    assert!(addrs_in(&c.path).contains(&ip4("10.78.0.2")));
    ping(&c, "10.78.0.1");

    for _ in 0..2 {
        dp.detach("ovveaaa".into()).await.expect("detach");
    }
    let links = dp.netns_links(&ns).await.expect("links");
    assert_eq!(links.iter().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(["lo", "eth1"]));
    assert!(!dp.observe().await.expect("observe").links.contains_key("ovveaaa"));
}

#[tokio::test]
async fn a_failed_attach_leaves_nothing_behind() {
    let (_h, dp) = host_dp("fail", "192.0.2.1").await;
    let c = Netns::new("c");
    let ns = dp.open_netns(c.path.clone()).await.expect("open the namespace");
    let err = dp.attach(&ns, spec("ccc", "eth0", "ovbrmissing", "10.77.0.2")).await.unwrap_err();
    assert!(err.to_string().contains("ovbrmissing"), "{err}");
    assert!(dp.observe().await.expect("observe").links.is_empty());
    assert_eq!(dp.netns_links(&ns).await.expect("links"), ["lo"]);

    // The container end's name is taken: the pair is refused as a whole.
    apply_ok(&dp, &bridge_ops(BR, "10.77.0.1", 24)).await;
    c.ip("link add eth0 type veth peer name taken0");
    let err = dp.attach(&ns, spec("ccc", "eth0", BR, "10.77.0.2")).await.unwrap_err();
    assert!(err.to_string().contains("peer name eth0"), "{err}");
    assert_eq!(dp.observe().await.expect("observe").links.keys().collect::<Vec<_>>(), [BR]);
    assert_eq!(dp.netns_links(&ns).await.expect("links").len(), 3, "lo, eth0, taken0");

    let missing = PathBuf::from(format!("/run/netns/ovt{}-missing", std::process::id()));
    let err = dp.open_netns(missing.clone()).await.err().expect("no namespace there");
    assert_eq!(err.to_string(), format!("network namespace {missing:?}: does not exist"));
    assert!(NetlinkDataplane::in_netns(&missing).await.is_err());
    let err = dp.open_netns(PathBuf::from("/proc/self/status")).await.err().expect("not a namespace");
    assert!(err.to_string().ends_with("is not a network namespace"), "{err}");
    assert_eq!(dp.observe().await.expect("observe").links.keys().collect::<Vec<_>>(), [BR]);
}

#[tokio::test]
async fn the_pair_is_made_and_raised_before_it_gets_its_address() {
    let (_h, dp) = host_dp("split", "192.0.2.1").await;
    let c = Netns::new("c");
    apply_ok(&dp, &bridge_ops(BR, "10.77.0.1", 24)).await;
    let ns = dp.open_netns(c.path.clone()).await.expect("open the namespace");
    let eth0 = spec("eee", "eth0", BR, "10.77.0.2");
    dp.create_veth(&ns, &eth0).await.expect("create");
    let up = |dev: &str| c.link_json(dev)["flags"].as_array().expect("flags").iter().any(|f| f == "UP");
    assert!(up("eth0") && up("lo"), "both up once made");
    assert_eq!(c.ip("-6 -o addr show dev eth0"), "", "the container end came up without IPv6");
    assert!(!addrs_in(&c.path).contains(&ip4("10.77.0.2")), "no address before configure");
    assert!(c.ip("route show default").trim().is_empty());

    dp.configure_veth(&ns, &eth0).await.expect("configure");
    assert!(addrs_in(&c.path).contains(&ip4("10.77.0.2")));
    assert!(c.ip("route show default").contains("via 10.77.0.1 dev eth0"));
    ping(&c, "10.77.0.1");
}

#[tokio::test]
async fn a_retried_attach_replaces_its_stale_pair_and_forwards_at_once() {
    let (_h, dp) = host_dp("retry", "192.0.2.1").await;
    let c = Netns::new("c");
    apply_ok(&dp, &bridge_ops(BR, "10.77.0.1", 24)).await;
    let ns = dp.open_netns(c.path.clone()).await.expect("open the namespace");
    dp.attach(&ns, spec("ddd", "eth0", BR, "10.77.0.2")).await.expect("attach");
    // The same endpoint again (an interrupted connect retried), as eth1.
    dp.attach(&ns, spec("ddd", "eth1", BR, "10.77.0.2")).await.expect("attach again");
    let links = dp.netns_links(&ns).await.expect("links");
    assert_eq!(links.iter().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(["lo", "eth1"]));
    // Born in the namespace: final name, MAC and MTU, up, with carrier.
    let eth1 = c.link_json("eth1");
    assert_eq!((eth1["address"].as_str(), eth1["mtu"].as_u64()), (Some("02:42:0a:4d:00:02"), Some(1450)));
    assert!(eth1["flags"].as_array().expect("flags").iter().any(|f| f == "LOWER_UP"), "{eth1}");
    // attach returned only once the host end forwards: the first ARP request
    // and echo get through, no retry needed.
    let host_end = dp.observe().await.expect("observe").links["ovveddd"].clone();
    assert_eq!((host_end.master.as_deref(), host_end.up, host_end.mtu), (Some(BR), true, 1450));
    let out = c.ip("-j -d link show eth1");
    assert!(out.contains("noqueue"), "the container end's qdisc is attached: {out}");
    let ping = Command::new("ip")
        .args(["netns", "exec", &c.name, "ping", "-c", "1", "-W", "1", "10.77.0.1"])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "first ping: {}", String::from_utf8_lossy(&ping.stdout));
}

#[tokio::test]
async fn containers_on_two_hosts_reach_each_other_over_vxlan() {
    let (h1, h2) = (Netns::new("h1"), Netns::new("h2"));
    h1.ip(&format!("link add ul0 type veth peer name ul0 netns {}", h2.name));
    for (h, addr) in [(&h1, "192.0.2.1"), (&h2, "192.0.2.2")] {
        h.ip(&format!("addr add {addr}/24 dev ul0"));
        h.ip("link set ul0 up");
    }
    let (c1, c2) = (Netns::new("c1"), Netns::new("c2"));
    let (u1, u2) = (ip4("192.0.2.1"), ip4("192.0.2.2"));
    let (e1, e2) = (ip4("10.77.0.2"), ip4("10.77.0.3"));
    let dp1 = NetlinkDataplane::in_netns(&h1.path).await.expect("dataplane 1");
    let dp2 = NetlinkDataplane::in_netns(&h2.path).await.expect("dataplane 2");
    apply_ok(&dp1, &datapath_ops(u1, &[u2], &[(e2, u2)])).await;
    apply_ok(&dp2, &datapath_ops(u2, &[u1], &[(e1, u1)])).await;
    let ns1 = dp1.open_netns(c1.path.clone()).await.expect("open c1");
    let ns2 = dp2.open_netns(c2.path.clone()).await.expect("open c2");
    dp1.attach(&ns1, spec("c1", "eth0", BR, "10.77.0.2")).await.expect("attach c1");
    dp2.attach(&ns2, spec("c2", "eth0", BR, "10.77.0.3")).await.expect("attach c2");

    ping(&c1, "10.77.0.3");
    ping(&c2, "10.77.0.2");
}

/// Waits up to 5 s for a wake-up from `changes`; false when none came.
async fn woken(changes: &mut ovnet_agent::dataplane::Changes) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(5), changes.next()).await.is_ok_and(|w| w.is_some())
}

/// Whether a wake-up is already waiting (after the coalescing window).
async fn pending(changes: &mut ovnet_agent::dataplane::Changes) -> bool {
    let window = ovnet_agent::dataplane::netlink::COALESCE * 4;
    tokio::time::timeout(window, changes.next()).await.is_ok()
}

/// Remote endpoint `i` behind `peer`: its FDB and neighbour ops.
fn remote_ops(i: u32, peer: Ipv4Addr) -> [Op; 2] {
    let ip = Ipv4Addr::from(u32::from(ip4("10.77.0.0")) + 10 + i);
    [add_fdb(Mac::endpoint(ip), peer), Op::AddNeigh { dev: VX.into(), ip, mac: Mac::endpoint(ip) }]
}

#[tokio::test]
async fn changes_wake_on_others_changes_not_on_ours() {
    let (h, dp) = host_dp("ch", "192.0.2.1").await;
    let mut changes = dp.changes().await.expect("subscribe");
    let peer = ip4("192.0.2.2");
    // Our own changes do not wake us. Making links can, once: their carrier
    // and operational state settle after the ACK.
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[peer], &[(ip4("10.77.0.9"), peer)])).await;
    let mut settled = 0;
    while pending(&mut changes).await {
        settled += 1;
    }
    assert!(settled <= 1, "our own links woke us {settled} times");
    // Entries in bulk (several batches), replaced, and removed: never.
    let bulk: Vec<Op> = (0..400).flat_map(|i| remote_ops(i, peer)).collect();
    apply_ok(&dp, &bulk).await;
    let moved: Vec<Op> = (0..400).flat_map(|i| remote_ops(i, ip4("192.0.2.3"))).collect();
    apply_ok(&dp, &moved).await;
    let removed: Vec<Op> = (0..400)
        .flat_map(|i| remote_ops(i, peer))
        .map(|op| match op {
            Op::AddFdb { dev, mac, .. } => Op::DelFdb { dev, mac, dst: ip4("192.0.2.3") },
            Op::AddNeigh { dev, ip, .. } => Op::DelNeigh { dev, ip },
            other => other,
        })
        .collect();
    apply_ok(&dp, &removed).await;
    assert!(!pending(&mut changes).await, "woken by our own entries");

    // Entries deleted by hand wake the loop.
    h.ip(&format!("neigh del 10.77.0.9 dev {VX}"));
    assert!(woken(&mut changes).await, "no wake-up for a deleted neighbour entry");
    run(&["bridge", "-n", &h.name, "fdb", "del", "00:00:00:00:00:00", "dev", VX, "dst", "192.0.2.2", "self"]);
    assert!(woken(&mut changes).await, "no wake-up for a deleted FDB entry");
    h.ip(&format!("link set {VX} mtu 1400"));
    assert!(woken(&mut changes).await, "no wake-up for a changed MTU");
    // A burst made by hand is one wake-up (two if a loaded machine stretches it).
    for i in 0..20 {
        h.ip(&format!("neigh replace 10.77.1.{i} lladdr 02:00:00:00:01:{i:02x} dev {VX} nud permanent"));
    }
    assert!(woken(&mut changes).await, "no wake-up for neighbours added by hand");
    let mut more = 0;
    while pending(&mut changes).await {
        more += 1;
    }
    assert!(more <= 1, "a burst must coalesce, got {} wake-ups", more + 1);

    // Others' links and neighbours do not.
    h.ip("link add other0 type veth peer name other1");
    h.ip("neigh add 192.0.2.77 lladdr 02:00:00:00:00:77 dev ul0");
    assert!(!pending(&mut changes).await, "woken by a foreign link or neighbour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_change_during_our_own_still_wakes() {
    let (h, dp) = host_dp("chw", "192.0.2.1").await;
    let peer = ip4("192.0.2.2");
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[peer], &[(ip4("10.77.0.9"), peer)])).await;
    let mut changes = dp.changes().await.expect("subscribe");
    let bulk: Vec<Op> = (0..3000).flat_map(|i| remote_ops(i, peer)).collect();
    let applying = tokio::spawn({
        let dp = dp.clone();
        async move { dp.apply(&bulk).await.len() }
    });
    // While (or right after) we add entries, someone deletes one of ours.
    let name = h.name.clone();
    tokio::task::spawn_blocking(move || {
        run(&[
            "bridge",
            "-n",
            &name,
            "fdb",
            "del",
            "00:00:00:00:00:00",
            "dev",
            VX,
            "dst",
            "192.0.2.2",
            "self",
        ])
    })
    .await
    .expect("bridge fdb del");
    assert_eq!(applying.await.expect("apply task"), 0);
    assert!(woken(&mut changes).await, "a deletion by hand was taken for ours");
}

#[tokio::test]
async fn bulk_entries_report_each_failure_and_apply_the_rest_in_order() {
    let (h, dp) = host_dp("bulk", "192.0.2.1").await;
    let (peer_a, peer_b) = (ip4("192.0.2.2"), ip4("192.0.2.3"));
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[peer_a], &[])).await;
    // An IPv6 VXLAN device refuses IPv4 destinations (EAFNOSUPPORT).
    h.ip("link add ovvx6 type vxlan id 6 local 2001:db8::1 dstport 4789 nolearning");
    let refused = Op::AddFdb { dev: "ovvx6".into(), mac: Mac::endpoint(ip4("10.77.9.9")), dst: peer_a };
    let missing = Op::AddNeigh { dev: "ovvxmissing".into(), ip: ip4("10.77.9.8"), mac: Mac::ZERO };
    let mut ops: Vec<Op> = (0..150).flat_map(|i| remote_ops(i, peer_a)).collect();
    ops.insert(101, refused.clone());
    ops.insert(250, missing.clone());
    // Later in the same run: move entry 0 to another VTEP, then delete what it left behind.
    ops.extend(remote_ops(0, peer_b));
    ops.push(Op::DelFdb { dev: VX.into(), mac: Mac::endpoint(ip4("10.77.0.10")), dst: peer_a });
    ops.push(Op::DelNeigh { dev: "ovvxmissing".into(), ip: ip4("10.77.9.8") });

    let errors: Vec<String> = dp.apply(&ops).await.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with(&refused.to_string()), "{errors:#?}");
    assert!(
        errors[1].starts_with(&missing.to_string()) && errors[1].contains("does not exist"),
        "{errors:#?}"
    );

    let observed = dp.observe().await.expect("observe");
    let entries = &observed.fdb[VX];
    assert_eq!(entries.len(), 151, "150 endpoints and a flood entry");
    assert!(entries.contains(&fdb(Mac::endpoint(ip4("10.77.0.10")), peer_b)), "moved, not deleted");
    assert!(entries.contains(&fdb(Mac::endpoint(ip4("10.77.0.159")), peer_a)));
    assert_eq!(observed.neigh[VX].len(), 150);
    assert!(!observed.fdb.contains_key("ovvx6"));
    // Replayed, everything is already there: no errors but the refused one.
    assert_eq!(dp.apply(&ops).await.len(), 2);
    assert_eq!(dp.observe().await.expect("observe"), observed);
}

#[tokio::test]
async fn the_cached_view_follows_every_change() {
    let (h, dp) = host_dp("cache", "192.0.2.1").await;
    let _changes = dp.changes().await.expect("subscribe");
    let (peer_a, peer_b) = (ip4("192.0.2.2"), ip4("192.0.2.3"));
    // The cached view (taken first) must equal a fresh dump after each step.
    async fn same(dp: &NetlinkDataplane, step: &str) {
        let cached = dp.observe_cached().await.expect("observe_cached");
        assert_eq!(cached, dp.observe().await.expect("observe"), "after {step}");
    }
    same(&dp, "nothing").await;
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[peer_a], &[(ip4("10.77.0.9"), peer_a)])).await;
    same(&dp, "a new datapath").await;
    let bulk: Vec<Op> = (0..300).flat_map(|i| remote_ops(i, peer_a)).collect();
    apply_ok(&dp, &bulk).await;
    same(&dp, "entries in bulk").await;

    h.ip(&format!("neigh del 10.77.0.9 dev {VX}"));
    h.ip(&format!("neigh replace 10.77.0.10 lladdr 02:00:00:00:00:10 dev {VX} nud permanent"));
    h.ip(&format!("neigh replace 10.77.7.7 lladdr 02:00:00:00:07:07 dev {VX} nud permanent"));
    h.ip(&format!("neigh change 10.77.0.11 lladdr 02:42:0a:4d:00:0b dev {VX} nud reachable"));
    run(&["bridge", "-n", &h.name, "fdb", "del", "00:00:00:00:00:00", "dev", VX, "dst", "192.0.2.2", "self"]);
    run(&[
        "bridge",
        "-n",
        &h.name,
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        VX,
        "dst",
        "192.0.2.3",
        "self",
    ]);
    same(&dp, "changes by hand").await;
    // A unicast MAC moved: the kernel announces replace and append alike.
    apply_ok(&dp, &remote_ops(5, peer_b)).await;
    run(&[
        "bridge",
        "-n",
        &h.name,
        "fdb",
        "append",
        "02:42:0a:4d:00:10",
        "dev",
        VX,
        "dst",
        "192.0.2.4",
        "self",
    ]);
    same(&dp, "a moved and a doubled MAC").await;
    // Down, the kernel drops even permanent neighbours; up again, they stay gone.
    h.ip(&format!("link set {VX} down"));
    h.ip(&format!("link set {VX} up"));
    same(&dp, "the VXLAN device down and up").await;

    // A second network, then the first one gone.
    let mut second = bridge_ops("ovbr4097", "10.78.0.1", 24).to_vec();
    let (local, vx2) = (ip4("192.0.2.1"), "ovvx4097");
    second.push(Op::CreateVxlan {
        name: vx2.into(),
        vni: 4097,
        local,
        port: 4789,
        mtu: 1450,
        master: "ovbr4097".into(),
    });
    second.push(Op::AddFdb { dev: vx2.into(), mac: Mac::ZERO, dst: peer_b });
    apply_ok(&dp, &second).await;
    same(&dp, "a second network").await;
    apply_ok(&dp, &[Op::DeleteLink { name: VX.into() }, Op::DeleteLink { name: BR.into() }]).await;
    same(&dp, "the first network removed").await;
    h.ip(&format!("link del {vx2}"));
    same(&dp, "a VXLAN device deleted by hand").await;
}

#[tokio::test]
async fn facts_read_offloads_udp_ports_and_the_kernel() {
    let (_h, dp) = host_dp("fx", "192.0.2.1").await;
    apply_ok(&dp, &datapath_ops(ip4("192.0.2.1"), &[], &[])).await;
    let facts = dp.facts(vec![VX.into(), "ul0".into()]).await;
    let release = facts.kernel.expect("kernel release");
    assert!(release.chars().next().is_some_and(|c| c.is_ascii_digit()), "{release}");
    assert!(facts.udp_ports.expect("udp ports").contains(&4789), "the VXLAN socket is bound");
    let vx = &facts.devices[VX];
    let features = vx.features.as_ref().expect("ethtool features of the VXLAN device");
    assert!(features.iter().any(|f| f.starts_with("tx-checksum")), "{features:?}");
    assert!(vx.udp_csum.is_some(), "udpcsum of a VXLAN device is known");
    assert!(facts.devices["ul0"].features.is_ok());
    assert_eq!(facts.devices["ul0"].udp_csum, None);
}
