//! `ovagent --docker-sync` against real lab dockerds: the mirror of ovnet's
//! networks into every host's dockerd, and the janitor of Docker endpoints
//! that Docker forgot without telling the plugin.

use std::time::Duration;

use ovnet_tests::bench::docker::synced_host;
use ovnet_tests::docker::Dockerd;
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

/// How long a mirror or janitor change may take to show.
const CONVERGE: Duration = Duration::from_secs(20);

fn lab(hosts: usize) -> Lab {
    Lab::start(LabOptions { hosts, ..Default::default() }).unwrap()
}

/// The names of dockerd's `ovnet` networks.
fn ovnet_networks(d: &Dockerd) -> Vec<String> {
    let out = d.docker_ok(&["network", "ls", "--filter", "driver=ovnet", "--format", "{{.Name}}"]).unwrap();
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

fn wait_networks(lab: &Lab, d: &Dockerd, want: &[&str]) {
    let what = format!("docker network ls on {} to show {want:?}", d.host);
    if let Err(e) = poll(&what, CONVERGE, || (ovnet_networks(d) == want).then_some(())) {
        panic!("{e}: has {:?}\n{}\n{}", ovnet_networks(d), lab.logs(), d.log());
    }
}

/// The etcd endpoint records (key, JSON) of `network`.
fn endpoint_records(lab: &Lab, network: &str) -> Vec<(String, serde_json::Value)> {
    let prefix = format!("{}/endpoints/{network}/", lab.prefix);
    lab.etcd_dump()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
        .collect()
}

#[test]
fn networks_made_anywhere_show_in_every_dockerd_and_go_with_ovnet() {
    let mut lab = lab(2);
    let d = synced_host(&mut lab, 1).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.61.0.0/16", "demo"]).unwrap();
    wait_networks(&lab, &d, &["demo"]);
    let subnet =
        d.docker_ok(&["network", "inspect", "demo", "--format", "{{range .IPAM.Config}}{{.Subnet}}{{end}}"]);
    assert_eq!(subnet.unwrap(), "10.61.0.0/16");
    let ipam = d.docker_ok(&["network", "inspect", "demo", "--format", "{{.IPAM.Driver}}"]).unwrap();
    assert_eq!(ipam, "ovnet");

    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "db"]).unwrap();
    wait_networks(&lab, &d, &["db", "demo"]);
    lab.ovctl_ok(0, &["network", "rm", "demo"]).unwrap();
    wait_networks(&lab, &d, &["db"]);
    let bridge = d.docker_ok(&["network", "ls", "--filter", "name=^bridge$", "-q"]).unwrap();
    assert!(!bridge.is_empty(), "Docker's own networks are left alone");
}

#[test]
fn the_mirror_catches_up_after_dockerd_and_agent_restarts() {
    let mut lab = lab(2);
    let mut d = synced_host(&mut lab, 1).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "keep"]).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "gone"]).unwrap();
    wait_networks(&lab, &d, &["gone", "keep"]);

    // Changes while dockerd is down reach it when it is back.
    d.stop_daemon().unwrap();
    lab.ovctl_ok(0, &["network", "rm", "gone"]).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "new"]).unwrap();
    d.start_daemon().unwrap();
    wait_networks(&lab, &d, &["keep", "new"]);

    // A network removed from dockerd by hand comes back.
    d.docker_ok(&["network", "rm", "keep"]).unwrap();
    wait_networks(&lab, &d, &["keep", "new"]);

    // Changes while the agent is down reach dockerd when it is back.
    lab.stop_agent(1).unwrap();
    lab.ovctl_ok(0, &["network", "rm", "new"]).unwrap();
    lab.start_agent(1).unwrap();
    wait_networks(&lab, &d, &["keep"]);
}

#[test]
fn a_network_in_use_stays_until_its_last_container_goes() {
    let mut lab = lab(2);
    let d = synced_host(&mut lab, 1).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "busy"]).unwrap();
    wait_networks(&lab, &d, &["busy"]);
    d.docker_ok(&["create", "--name", "idle", "--network", "busy", IMAGE, "sleep", "600"]).unwrap();
    lab.ovctl_ok(0, &["network", "rm", "busy"]).unwrap();
    // The removal is seen (an etcd change wakes a pass) yet the network stays.
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "marker"]).unwrap();
    wait_networks(&lab, &d, &["busy", "marker"]);
    d.docker_ok(&["rm", "idle"]).unwrap();
    wait_networks(&lab, &d, &["marker"]);
}

/// Takes about a minute: without the plugin, dockerd retries each call for 30 s.
#[test]
fn a_container_removed_while_the_agent_was_down_is_released_when_it_returns() {
    let mut lab = lab(1);
    let d = synced_host(&mut lab, 0).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.62.0.0/16", "demo"]).unwrap();
    wait_networks(&lab, &d, &["demo"]);
    let id =
        d.docker_ok(&["run", "-d", "--name", "web", "--network", "demo", IMAGE, "sleep", "600"]).unwrap();

    // The janitor names the endpoint's container.
    let named = poll("the endpoint record to name its container", CONVERGE, || {
        let recs = endpoint_records(&lab, "demo");
        let c = &recs.first()?.1["container"];
        (c["id"] == id.as_str() && c["name"] == "web").then(|| recs[0].1.clone())
    });
    let record =
        named.unwrap_or_else(|e| panic!("{e}: {:?}\n{}", endpoint_records(&lab, "demo"), lab.logs()));
    let veth = record["host_ifname"].as_str().unwrap().to_string();
    assert!(lab.links(0).unwrap().contains(&veth));

    // The container is removed while the agent is down: dockerd's calls
    // to the plugin fail (after its retries) and it goes on without it.
    lab.kill_agent(0);
    d.docker_ok(&["rm", "-f", "web"]).unwrap();
    lab.start_agent(0).unwrap();
    let clean = poll("the forgotten endpoint released (etcd and veth)", CONVERGE, || {
        let gone = endpoint_records(&lab, "demo").is_empty() && !lab.links(0).ok()?.contains(&veth);
        gone.then_some(())
    });
    if let Err(e) = clean {
        panic!("{e}: {:?}\n{}\n{}", endpoint_records(&lab, "demo"), lab.logs(), d.log());
    }
    assert!(lab.hosts[0].log().contains("released an endpoint that dockerd no longer has"), "{}", lab.logs());
    let mappings = format!("{}/docker/h1/endpoints/", lab.prefix);
    let left: Vec<String> =
        lab.etcd_dump().unwrap().into_keys().filter(|k| k.starts_with(&mappings)).collect();
    assert!(left.is_empty(), "the plugin's EndpointID mapping goes too: {left:?}");
}

/// A NetworkID mapping of a docker network that dockerd no longer has
/// (removed while the agent was down, or lost with dockerd's data root) is
/// forgotten; the mapping of the network dockerd has, and one too young to
/// judge (dockerd calls CreateNetwork before it lists the network), stay.
#[test]
fn the_mapping_of_a_docker_network_dockerd_no_longer_has_is_forgotten() {
    let mut lab = lab(1);
    let d = synced_host(&mut lab, 0).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.63.0.0/16", "demo"]).unwrap();
    wait_networks(&lab, &d, &["demo"]);
    let real = d.docker_ok(&["network", "inspect", "--format", "{{.Id}}", "demo"]).unwrap();
    let prefix = format!("{}/docker/h1/networks/", lab.prefix);
    let mappings = || -> Vec<String> {
        let dump = lab.etcd_dump().unwrap();
        dump.into_keys().filter_map(|k| k.strip_prefix(&prefix).map(str::to_string)).collect()
    };
    assert_eq!(mappings(), std::slice::from_ref(&real), "the mirror's network is mapped");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (stale, young) = ("f".repeat(64), "e".repeat(64));
    let (etcd_put, at) = (|k: &str, v: &[u8]| lab.etcd_put(k, v).unwrap(), "docker/h1/networks");
    etcd_put(&format!("{at}/{stale}"), br#"{"network":"demo","created_at":1}"#);
    let fresh = format!(r#"{{"network":"demo","created_at":{}}}"#, now + 3_600);
    etcd_put(&format!("{at}/{young}"), fresh.as_bytes());
    assert_eq!(mappings().len(), 3);
    // A docker event wakes the sync loop (as would its periodic pass).
    d.docker_ok(&["network", "create", "-d", "bridge", "wake"]).unwrap();
    let forgotten =
        poll("the stale mapping forgotten", CONVERGE, || (!mappings().contains(&stale)).then_some(()));
    if let Err(e) = forgotten {
        panic!("{e}: {:?}\n{}", mappings(), lab.logs());
    }
    let mut left = mappings();
    left.sort();
    let mut want = vec![real, young];
    want.sort();
    assert_eq!(left, want, "the real and the young mapping stay");
}
