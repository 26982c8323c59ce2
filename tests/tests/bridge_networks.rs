//! Local bridge networks (`ovctl network create -d bridge`) in the lab: a
//! network of the host that created it, a bridge without VXLAN there and
//! nothing anywhere else; listed everywhere, connectable only on its host,
//! freed with its host.

use std::time::Duration;

use ovnet_tests::lab::poll;
use ovnet_tests::netns::ping;
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);

fn wait_ping(lab: &Lab, from: &str, ip: &str) {
    if let Err(e) = poll(&format!("{from} to ping {ip}"), CONVERGE, || ping(from, ip).then_some(())) {
        panic!("{e}\n{}", lab.logs());
    }
}

fn inspect(lab: &Lab, i: usize, network: &str) -> serde_json::Value {
    serde_json::from_str(&lab.ovctl_ok(i, &["network", "inspect", network]).unwrap()).unwrap()
}

/// `ovctl ARGS` on host `i` fails with `expect` in its one-line message,
/// exit 1, and leaves etcd and host `i`'s kernel as they were.
fn refused(lab: &Lab, i: usize, args: &[&str], expect: &str) {
    let (etcd, kernel) = (lab.etcd_dump().unwrap(), lab.kernel(i).unwrap());
    let out = lab.ovctl(i, args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ovctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains(expect), "ovctl {args:?}: expected {expect:?} in: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(lab.etcd_dump().unwrap(), etcd, "ovctl {args:?} wrote to etcd");
    assert_eq!(lab.kernel(i).unwrap(), kernel, "ovctl {args:?} changed the kernel");
}

/// Waits until host `i` has built overlay network `name` (so it has seen
/// every etcd change made before it was created).
fn caught_up(lab: &Lab, i: usize, name: &str) {
    let vni = inspect(lab, 0, name)["vni"].as_u64().unwrap();
    let want = [format!("ovbr{vni}"), format!("ovvx{vni}")];
    poll(&format!("host {i} to build {name}"), CONVERGE, || {
        let links = lab.links(i).ok()?;
        want.iter().all(|w| links.contains(w)).then_some(())
    })
    .unwrap();
}

#[test]
fn a_bridge_network_lives_on_its_host_only() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    let id = lab.ovctl_ok(0, &["network", "create", "-d", "bridge", "lan"]).unwrap();
    assert_eq!(id.len(), 16, "prints the network id: {id:?}");
    let net = inspect(&lab, 1, "lan");
    assert_eq!((net["driver"].as_str(), net["host"].as_str()), (Some("bridge"), Some("h1")), "{net}");
    let vni = net["vni"].as_u64().unwrap();
    let (br, vx) = (format!("ovbr{vni}"), format!("ovvx{vni}"));
    poll("the bridge on h1", CONVERGE, || lab.links(0).ok()?.contains(&br).then_some(())).unwrap();

    // Listed on every host with its driver and host.
    let table = lab.ovctl_ok(1, &["network", "ls"]).unwrap();
    let row = table.lines().find(|l| l.starts_with("lan ")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cells[2], cells[3]), ("bridge", "h1"), "{table}");

    // Two containers on h1 ping each other and the gateway.
    let (c1, ip1) = lab.connected(0, "lan", "c1").unwrap();
    let (c2, ip2) = lab.connected(0, "lan", "c2").unwrap();
    wait_ping(&lab, &c1, &ip2);
    wait_ping(&lab, &c2, &ip1);
    wait_ping(&lab, &c1, net["gateway"].as_str().unwrap());
    assert_eq!(inspect(&lab, 1, "lan")["endpoints"].as_array().unwrap().len(), 2);

    // An overlay network made after it, built on h2: h2 has seen the bridge
    // network and both connects, and built nothing for them.
    lab.ovctl_ok(1, &["network", "create", "-d", "overlay", "wan"]).unwrap();
    caught_up(&lab, 1, "wan");
    caught_up(&lab, 0, "wan");
    let h1 = lab.kernel(0).unwrap();
    assert!(h1.contains(&br) && !h1.iter().any(|e| e.contains(&vx)), "h1: a bridge, no VXLAN: {h1:?}");
    let h2 = lab.kernel(1).unwrap();
    assert!(!h2.iter().any(|e| e.contains(&br) || e.contains(&vx)), "h2: nothing for lan: {h2:?}");
    let to_lan = |e: &String| e.contains(&ip1) || e.contains(&ip2);
    assert!(!h2.iter().any(to_lan), "h2: no entries toward lan's containers: {h2:?}");
    for i in 0..2 {
        let out = lab.ovctl(i, &["doctor"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "doctor on h{} found problems:\n{text}", i + 1);
    }

    // Connect on h2: refused naming h1, nothing changed.
    let c3 = lab.container("c3").unwrap();
    refused(&lab, 1, &["network", "connect", "lan", &c3], "is a bridge network of host \"h1\"");
    refused(&lab, 1, &["network", "connect", "--ip", "10.128.9.9", "lan", &c3], "host \"h1\"");
    refused(&lab, 1, &["network", "conflist", "lan"], "is a bridge network of host \"h1\"");
    assert!(lab.ovctl_ok(0, &["network", "conflist", "lan"]).unwrap().contains("\"name\": \"lan\""));

    // An agent restart on h1 keeps the network and its containers.
    lab.stop_agent(0).unwrap();
    lab.start_agent(0).unwrap();
    poll("h1 to report ready and unchanged", CONVERGE, || {
        let out = lab.ovctl(0, &["doctor"]).ok()?;
        out.status.success().then_some(())
    })
    .unwrap();
    assert_eq!(lab.kernel(0).unwrap(), h1, "h1's kernel after the restart");
    wait_ping(&lab, &c1, &ip2);
    let (c4, ip4) = lab.connected(0, "lan", "c4").unwrap();
    wait_ping(&lab, &c4, &ip1);
    wait_ping(&lab, &c2, &ip4);

    // rm: refused while endpoints remain, from any host; then allowed from h2.
    refused(&lab, 1, &["network", "rm", "lan"], "still in use by 3 endpoints");
    for c in [&c1, &c2, &c4] {
        lab.ovctl_ok(0, &["network", "disconnect", "lan", c]).unwrap();
    }
    lab.ovctl_ok(1, &["network", "rm", "lan"]).unwrap();
    poll("h1 to delete lan's bridge", CONVERGE, || (!lab.links(0).ok()?.contains(&br)).then_some(()))
        .unwrap();
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
    record(&Outcome {
        category: "fault".into(),
        test: "a_bridge_network_lives_on_its_host_only".into(),
        scenario: "`network create -d bridge` on h1, 2 containers there, connect on h2, h1's agent \
                   restarted, `network rm` from h2"
            .into(),
        held: "listed on both hosts as bridge of h1; the containers pinged each other; h1 held its bridge \
               and no VXLAN device, h2 nothing for it; doctor clean on both; connect on h2 refused naming h1 \
               with etcd and kernel unchanged; after the restart the same kernel and pings; rm from h2 \
               refused while in use, then removed it and h1 deleted the bridge"
            .into(),
        operations: 12,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn unknown_drivers_are_refused() {
    let lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let supported = "supported drivers: overlay, bridge";
    refused(&lab, 0, &["network", "create", "-d", "macvlan", "a"], supported);
    refused(&lab, 0, &["network", "create", "-d", "Bridge", "a"], supported);
    refused(&lab, 0, &["network", "create", "-d", "", "a"], supported);
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
    record(&Outcome {
        category: "bad input".into(),
        test: "unknown_drivers_are_refused".into(),
        scenario: "network create -d macvlan, -d Bridge and an empty driver".into(),
        held: "each refused with a message naming the supported drivers and a non-zero exit; etcd and the \
               host's kernel unchanged"
            .into(),
        operations: 3,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn a_removed_host_takes_its_bridge_networks_with_it() {
    let mut lab = Lab::start(LabOptions { hosts: 2, lease_ttl: 2, ..Default::default() }).unwrap();
    lab.ovctl_ok(1, &["network", "create", "-d", "bridge", "--subnet", "10.77.0.0/24", "lan2"]).unwrap();
    let vni = inspect(&lab, 0, "lan2")["vni"].as_u64().unwrap();
    lab.connected(1, "lan2", "c1").unwrap();
    let held = |lab: &Lab| -> Vec<String> {
        let dump = lab.etcd_dump().unwrap();
        let keys = dump.into_keys();
        keys.filter(|k| k.contains("/lan2") || k.ends_with(&format!("/vnis/{vni}"))).collect()
    };
    assert_eq!(held(&lab).len(), 4, "network, VNI, block, endpoint: {:?}", held(&lab));

    lab.kill_agent(1);
    let removed =
        poll("host rm h2 once its lease ran out", CONVERGE, || lab.ovctl_ok(0, &["host", "rm", "h2"]).ok())
            .unwrap();
    assert_eq!(removed, "h2 (blocks: 1, endpoints: 1)");
    assert_eq!(held(&lab), Vec::<String>::new(), "h2's bridge network went with it");
    assert!(!lab.ovctl_ok(0, &["network", "ls"]).unwrap().contains("lan2"));
    // Its subnet and name are free again.
    lab.ovctl_ok(0, &["network", "create", "-d", "bridge", "--subnet", "10.77.0.0/24", "lan2"]).unwrap();
    assert_eq!(inspect(&lab, 0, "lan2")["host"], "h1");
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
    record(&Outcome {
        category: "fault".into(),
        test: "a_removed_host_takes_its_bridge_networks_with_it".into(),
        scenario: "h2 made a bridge network with a container, its agent was killed, then `ovctl host rm h2`"
            .into(),
        held:
            "the network, its VNI, block and endpoint left etcd with the host (they sit on its reservation); \
               the name and subnet were free for h1 at once"
                .into(),
        operations: 4,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn docker_makes_a_bridge_network_with_o_driver_bridge() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    let d = ovnet_tests::docker::docker_host(&mut lab, 0).unwrap();
    let create = "network create -d ovnet --ipam-driver ovnet --ipam-opt network=dlan";

    // An unknown driver: refused before anything is written.
    let etcd = lab.etcd_dump().unwrap();
    let out = d.docker(&format!("{create} -o driver=macvlan dlan").split_whitespace().collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.unwrap().stderr).to_string();
    assert!(stderr.contains("unsupported driver \"macvlan\""), "{stderr}");
    assert_eq!(lab.etcd_dump().unwrap(), etcd, "a refused docker network create wrote to etcd");

    d.run(&format!("{create} -o driver=bridge dlan")).unwrap();
    let net = inspect(&lab, 1, "dlan");
    assert_eq!((net["driver"].as_str(), net["host"].as_str()), (Some("bridge"), Some("h1")), "{net}");
    let vni = net["vni"].as_u64().unwrap();
    let image = ovnet_tests::image::IMAGE;
    let address = |name: &str| {
        let format = "{{with index .NetworkSettings.Networks \"dlan\"}}{{.IPAddress}}{{end}}";
        d.docker_ok(&["inspect", "-f", format, name]).unwrap()
    };
    for name in ["da", "db"] {
        d.run(&format!("run -d --name {name} --network dlan {image} sleep 3600")).unwrap();
    }
    let b = address("db");
    poll("da to reach db", CONVERGE, || {
        let out = d.docker(&["exec", "da", "ping", "-c1", "-W1", &b]).ok()?;
        out.status.success().then_some(())
    })
    .unwrap();
    let (h1, h2) = (lab.links(0).unwrap(), lab.links(1).unwrap());
    assert!(h1.contains(&format!("ovbr{vni}")) && !h1.contains(&format!("ovvx{vni}")), "{h1:?}");
    assert!(!h2.iter().any(|l| l.ends_with(&vni.to_string())), "{h2:?}");
    // On h2 the network is h1's: connect refused.
    let c = lab.container("c").unwrap();
    refused(&lab, 1, &["network", "connect", "dlan", &c], "bridge network of host \"h1\"");
    d.run("rm -f da db").unwrap();
    assert_eq!(inspect(&lab, 0, "dlan")["endpoints"].as_array().unwrap().len(), 0);
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
}

#[test]
fn podman_uses_a_bridge_network_through_the_conflist_of_its_host_only() {
    use ovnet_tests::podman::{self, Podman};
    let dir = tempfile::Builder::new().prefix("ovcni").tempdir().unwrap();
    let opts =
        ovnet_tests::lab::AgentOptions { extra_args: podman::agent_args(dir.path()), ..Default::default() };
    let lab = Lab::start_with(LabOptions { hosts: 2, ..Default::default() }, opts).unwrap();
    let conf = |i: usize| podman::conf_dir(dir.path(), &lab.hosts[i].name);
    let pod = Podman::start(&lab, 0, dir.path(), &conf(0)).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "bridge", "plan"]).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "pwan"]).unwrap();
    for (i, file) in [(0, "plan.conflist"), (0, "pwan.conflist"), (1, "pwan.conflist")] {
        poll(&format!("{file} on host {i}"), CONVERGE, || conf(i).join(file).exists().then_some(())).unwrap();
    }
    assert!(!conf(1).join("plan.conflist").exists(), "h2 has no conflist of h1's bridge network");

    pod.run("a", "plan").unwrap();
    pod.run("b", "plan").unwrap();
    let b = pod.ip("b", "plan").unwrap();
    poll("a to reach b", CONVERGE, || pod.ping("a", &b).then_some(())).unwrap();
    assert_eq!(inspect(&lab, 1, "plan")["endpoints"].as_array().unwrap().len(), 2);
    pod.ok(&["rm", "-f", "a", "b"]).unwrap();
    assert_eq!(inspect(&lab, 0, "plan")["endpoints"].as_array().unwrap().len(), 0, "podman rm freed them");
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
}

#[test]
fn a_bridge_network_goes_when_its_dead_hosts_grace_runs_out() {
    let agents = ovnet_tests::lab::AgentOptions {
        extra_args: vec!["--block-grace".into(), "4s".into()],
        ..Default::default()
    };
    let mut lab =
        Lab::start_with(LabOptions { hosts: 2, lease_ttl: 2, ..Default::default() }, agents).unwrap();
    lab.ovctl_ok(1, &["network", "create", "-d", "bridge", "lan3"]).unwrap();
    lab.connected(1, "lan3", "c1").unwrap();
    let held = |lab: &Lab| {
        let dump = lab.etcd_dump().unwrap();
        dump.iter().filter(|(k, v)| k.contains("lan3") || v.contains("\"lan3\"")).count()
    };
    assert_eq!(held(&lab), 4, "network, VNI, block, endpoint");
    lab.kill_agent(1);
    // Dead but within the grace: still listed, still h2's.
    poll("h2 to be dead", CONVERGE, || {
        let hosts = lab.ovctl_ok(0, &["host", "ls", "--format", "json"]).ok()?;
        let hosts: Vec<serde_json::Value> = serde_json::from_str(&hosts).ok()?;
        hosts.iter().any(|h| h["name"] == "h2" && h["alive"] == false).then_some(())
    })
    .unwrap();
    assert_eq!(inspect(&lab, 0, "lan3")["host"], "h2");
    poll("h2's reservation to run out", Duration::from_secs(20), || (held(&lab) == 0).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{:?}", lab.etcd_dump()));
    assert!(!lab.ovctl_ok(0, &["network", "ls"]).unwrap().contains("lan3"));
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
    record(&Outcome {
        category: "fault".into(),
        test: "a_bridge_network_goes_when_its_dead_hosts_grace_runs_out".into(),
        scenario: "block grace 4 s, lease TTL 2 s: h2 made a bridge network with a container, its agent was \
                   killed and left dead"
            .into(),
        held: "while h2 was dead within the grace the network stayed listed as h2's; when the grace ran out \
               etcd dropped the network, its VNI, block and endpoint with h2's reservation"
            .into(),
        operations: 2,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// The store refuses every way of taking an address of a bridge network
/// for another host, whoever asks (the agent's pre-check, Docker's IPAM,
/// the watch cache's offer), and writes nothing.
#[tokio::test]
async fn the_store_gives_a_bridge_networks_addresses_to_its_host_only() {
    use ovnet_ipam_store::{ClusterState, Error, EtcdStore, NewEndpoint, NewNetwork, StoreConfig};
    let etcd = ovnet_tests::Etcd::start_local().unwrap();
    let cfg = StoreConfig { endpoints: vec![etcd.endpoint()], prefix: "/ovb".into(), ..Default::default() };
    let s = EtcdStore::connect(cfg).await.unwrap();
    let req = NewNetwork {
        name: "lan".into(),
        driver: "bridge".into(),
        host: Some("h1".into()),
        subnet: None,
        vni: None,
        block_prefix: None,
        mtu: 1450,
        internal: false,
    };
    let lan = s.create_network(req.clone()).await.unwrap();
    assert_eq!(lan.owner(), Some("h1"));
    let e = s.create_network(NewNetwork { host: None, name: "x".into(), ..req }).await.unwrap_err();
    assert!(matches!(e, Error::InvalidHostName { .. }), "a bridge network needs its host: {e}");
    let ep = |host: &str| NewEndpoint {
        id: format!("{host}-1"),
        network: "lan".into(),
        host: host.into(),
        netns: format!("/run/netns/{host}-c"),
        ifname: "eth0".into(),
        host_ifname: format!("ovve{host}"),
        ip: None,
        container: None,
        name: String::new(),
        aliases: Vec::new(),
        ports: Vec::new(),
    };
    let other = |e: Error| matches!(&e, Error::NetworkOfOtherHost { owner, host, .. } if owner == "h1" && host == "h2");
    let before = s.list_endpoints(Some("lan")).await.unwrap();
    assert!(other(s.allocate_endpoint(ep("h2")).await.unwrap_err()));
    assert!(other(s.offer_endpoint(&ep("h2"), |_| false).await.unwrap_err()));
    assert!(other(s.lease_block("lan", "h2").await.unwrap_err()));
    let mut state = ClusterState::default();
    state.networks.insert("lan".into(), lan.clone());
    assert!(other(s.offer_endpoint_cached(&state, &ep("h2"), |_| false).unwrap_err()));
    assert_eq!(s.list_endpoints(Some("lan")).await.unwrap(), before);
    assert!(s.list_blocks(Some("lan")).await.unwrap().is_empty(), "no block leased to h2");
    let mine = s.allocate_endpoint(ep("h1")).await.unwrap();
    assert_eq!(mine.host, "h1");
}
