//! Docker containers on ovnet: a real dockerd (with Docker's defaults:
//! iptables on, FORWARD policy DROP, bridge netfilter) per lab host,
//! driving the agent's `ovnet` network and IPAM plugin.

use std::collections::BTreeMap;
use std::time::Duration;

use ovnet_tests::docker::{Dockerd, docker_host, ping_tally};
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

fn lab(hosts: usize) -> Lab {
    Lab::start(LabOptions { hosts, ..Default::default() }).unwrap()
}

/// `docker network create` of ovnet network `name` on `d`, with `extra`
/// flags (e.g. `--subnet CIDR`).
fn create(d: &Dockerd, name: &str, extra: &str) {
    d.run(&format!("network create -d ovnet --ipam-driver ovnet --ipam-opt network={name} {extra} {name}"))
        .unwrap();
}

/// The subnet of docker network `name` on `d`.
fn subnet(d: &Dockerd, name: &str) -> String {
    d.docker_ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", name]).unwrap()
}

/// Starts a container that sleeps on `network` (with `extra` run flags);
/// returns its address there.
fn sleeper(d: &Dockerd, name: &str, network: &str, extra: &str) -> String {
    d.run(&format!("run -d --name {name} --network {network} {extra} {IMAGE} sleep 3600")).unwrap();
    address(d, name, network)
}

fn address(d: &Dockerd, name: &str, network: &str) -> String {
    let format =
        format!("{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}");
    d.docker_ok(&["inspect", "-f", &format, name]).unwrap()
}

/// One ping from container `name` to `ip`.
fn pings(d: &Dockerd, name: &str, ip: &str) -> bool {
    d.docker(&["exec", name, "ping", "-c1", "-W1", ip]).map(|o| o.status.success()).unwrap_or(false)
}

fn reaches(d: &Dockerd, name: &str, ip: &str) {
    poll(&format!("{name} on {} to reach {ip}", d.host), Duration::from_secs(10), || {
        pings(d, name, ip).then_some(())
    })
    .unwrap();
}

/// Host `host`'s Docker endpoints in etcd (address keys whose record says
/// docker) and its docker endpoint mappings.
fn docker_records_of(lab: &Lab, host: &str) -> Vec<String> {
    let dump = lab.etcd_dump().unwrap();
    let (mine, mapping) = (format!("\"host\":\"{host}\""), format!("/docker/{host}/endpoints/"));
    dump.into_iter()
        .filter(|(k, v)| {
            (k.contains("/endpoints/") && v.contains("\"runtime\":\"docker\"") && v.contains(&mine))
                || k.contains(&mapping)
        })
        .map(|(k, _)| k)
        .collect()
}

fn docker_records(lab: &Lab) -> Vec<String> {
    docker_records_of(lab, "h1")
}

/// Host `i`'s veths of ours (`ovve...` host ends, `ovtp...` container ends).
fn veths(lab: &Lab, i: usize) -> Vec<String> {
    lab.links(i).unwrap().into_iter().filter(|l| l.starts_with("ovve") || l.starts_with("ovtp")).collect()
}

#[test]
fn docker_containers_across_hosts_isolated_and_through_an_agent_restart() {
    let mut lab = lab(2);
    let d1 = docker_host(&mut lab, 0).unwrap();
    let d2 = docker_host(&mut lab, 1).unwrap();
    create(&d1, "demo", "");
    create(&d2, "demo", &format!("--subnet {}", subnet(&d1, "demo")));
    let a = sleeper(&d1, "ca", "demo", "");
    let b = sleeper(&d2, "cb", "demo", "");
    reaches(&d1, "ca", &b);
    reaches(&d2, "cb", &a);
    let mtu = d1.docker_ok(&["exec", "ca", "cat", "/sys/class/net/eth0/mtu"]).unwrap();
    assert_eq!(mtu, "1450", "the lab's underlay MTU 1500 - 50 of VXLAN");

    // A second network: its containers reach each other, not demo's.
    create(&d1, "other", "");
    create(&d2, "other", &format!("--subnet {}", subnet(&d1, "other")));
    let o1 = sleeper(&d1, "o1", "other", "");
    let o2 = sleeper(&d2, "o2", "other", "");
    reaches(&d2, "o2", &o1);
    assert!(!pings(&d2, "o2", &a), "other's container reaches demo's");
    assert!(!pings(&d1, "ca", &o2), "demo's container reaches other's");
    // docker network rm on one host forgets only that host's view.
    d2.run("rm -f o2").unwrap();
    d2.run("network rm other").unwrap();
    assert!(lab.ctl(0, "network inspect other").is_ok(), "the ovnet network stays");
    let h2_networks =
        lab.etcd_dump().unwrap().into_keys().filter(|k| k.contains("/docker/h2/networks/")).count();
    assert_eq!(h2_networks, 1, "h2 maps only demo now");

    // The agent restarts under running containers: the datapath stays.
    let stream = d1.ping_stream("ca", &b, Duration::from_millis(10), 400).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_agent(0).unwrap();
    lab.start_agent(0).unwrap();
    let (sent, received) = ping_tally(stream).unwrap();
    assert_eq!((sent, received), (400, 400), "pings lost while the agent restarted");
    // The restarted agent knows the endpoints from etcd alone.
    assert_eq!(docker_records_of(&lab, "h1").len(), 4, "ca and o1: endpoint and mapping each");
    d1.run("rm -f ca o1").unwrap();
    assert_eq!(docker_records_of(&lab, "h1"), Vec::<String>::new());
    assert_eq!(veths(&lab, 0), Vec::<String>::new());
    assert_eq!(docker_records_of(&lab, "h2").len(), 2, "h2's cb is untouched");
    assert_eq!(lab.panics(), 0);
}

#[test]
fn docker_connect_disconnect_rm_and_dockerd_restart_leave_nothing_behind() {
    let mut lab = lab(1);
    let d = docker_host(&mut lab, 0).unwrap();
    create(&d, "demo", "--subnet 10.77.0.0/16");
    let (_peer_ns, peer) = lab.connected(0, "demo", "peer").unwrap();
    let baseline = veths(&lab, 0);
    assert_eq!(baseline.len(), 1, "the peer's veth");

    // connect / disconnect a running container, with --ip honoured.
    d.run(&format!("run -d --name box {IMAGE} sleep 3600")).unwrap();
    d.run("network connect --ip 10.77.0.50 demo box").unwrap();
    assert_eq!(address(&d, "box", "demo"), "10.77.0.50");
    reaches(&d, "box", &peer);
    assert_eq!(docker_records(&lab).len(), 2, "the endpoint and its docker mapping");
    let sandbox = format!("\"netns\":\"{}/netns/", d.exec_root().display());
    poll("the endpoint record to name box's sandbox", Duration::from_secs(5), || {
        let dump = lab.etcd_dump().ok()?;
        dump.values().any(|v| v.contains("\"ip\":\"10.77.0.50\"") && v.contains(&sandbox)).then_some(())
    })
    .unwrap();
    assert_eq!(veths(&lab, 0).len(), 2);
    d.run("network disconnect demo box").unwrap();
    assert_eq!(docker_records(&lab), Vec::<String>::new());
    assert_eq!(veths(&lab, 0), baseline);
    d.run("network connect demo box").unwrap();
    reaches(&d, "box", &peer);
    d.run("rm -f box").unwrap();
    assert_eq!(docker_records(&lab), Vec::<String>::new());
    assert_eq!(veths(&lab, 0), baseline);

    // dockerd restarts: a --restart always container comes back on ovnet.
    let mut d = d;
    sleeper(&d, "web", "demo", "--restart always");
    reaches(&d, "web", &peer);
    d.stop_daemon().unwrap();
    d.start_daemon().unwrap();
    let back = poll("web to run again", Duration::from_secs(20), || {
        let ip = address(&d, "web", "demo");
        let running = d.docker_ok(&["inspect", "-f", "{{.State.Running}}", "web"]).ok()?;
        (running == "true" && !ip.is_empty()).then_some(ip)
    })
    .unwrap();
    reaches(&d, "web", &peer);
    assert_eq!(docker_records(&lab).len(), 2, "web's endpoint and mapping, nothing older: {back}");
    assert_eq!(veths(&lab, 0).len(), 2);
    d.run("rm -f web").unwrap();
    assert_eq!(docker_records(&lab), Vec::<String>::new());
    assert_eq!(veths(&lab, 0), baseline);
    assert_eq!(lab.panics(), 0);
}

/// etcd under the lab's prefix but the keys that change by themselves.
fn etcd_settled(lab: &Lab) -> BTreeMap<String, String> {
    let mut dump = lab.etcd_dump().unwrap();
    dump.retain(|k, _| !k.contains("/alive/") && !k.contains("/hosts/"));
    dump
}

#[test]
fn docker_refuses_bad_networks_with_what_to_type_and_changes_nothing() {
    let mut lab = lab(1);
    let d = docker_host(&mut lab, 0).unwrap();
    create(&d, "demo", "--subnet 10.77.0.0/16");
    let (etcd, kernel) = (etcd_settled(&lab), lab.kernel(0).unwrap());
    let networks = d.run("network ls --format {{.Name}}").unwrap();
    let ipam = "--ipam-driver ovnet --ipam-opt network";
    for (args, want) in [
        ("network create -d ovnet bad1".to_string(), "--ipam-driver ovnet"),
        (
            format!("network create -d ovnet {ipam}=demo --subnet 10.99.0.0/16 bad2"),
            "use --subnet 10.77.0.0/16",
        ),
        (format!("network create -d ovnet {ipam}=fresh -o color=blue bad3"), "unknown option -o color"),
        (
            format!("network create -d ovnet {ipam}=fresh --ipam-opt colour=red bad4"),
            "unknown option --ipam-opt colour",
        ),
        (format!("network create -d ovnet {ipam}=demo bad5"), "add --subnet 10.77.0.0/16"),
        ("network create -d ovnet --ipam-driver ovnet bad6".to_string(), "--ipam-opt network=NAME"),
    ] {
        let out = d.docker(&args.split_whitespace().collect::<Vec<_>>()).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args} succeeded");
        assert!(err.contains(want), "{args}: {err}");
    }
    assert_eq!(etcd_settled(&lab), etcd, "etcd changed");
    assert_eq!(lab.kernel(0).unwrap(), kernel, "the kernel changed");
    assert_eq!(d.run("network ls --format {{.Name}}").unwrap(), networks);
}

/// POSTs `body` to `/<method>` on the plugin socket: (status, body).
fn plugin_call(socket: &std::path::Path, method: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let request = format!(
        "POST /{method} HTTP/1.0\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), serde_json::from_str(body).unwrap())
}

/// A one-host lab whose agent serves the plugin on a socket of its own
/// (in the returned directory, which must outlive the lab).
fn plugin_lab() -> (tempfile::TempDir, std::path::PathBuf, Lab) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ovnet.sock");
    let flag = format!("--docker-plugin=unix://{}", socket.display());
    let opts = ovnet_tests::lab::AgentOptions { extra_args: vec![flag], ..Default::default() };
    let lab = Lab::start_with(LabOptions { hosts: 1, ..Default::default() }, opts).unwrap();
    (dir, socket, lab)
}

#[test]
fn the_plugin_answers_repeated_unknown_and_garbage_calls() {
    let (_dir, socket, lab) = plugin_lab();
    let before = lab.etcd_dump().unwrap().len();
    let (code, v) = plugin_call(&socket, "Plugin.Activate", "");
    assert_eq!((code, v), (200, serde_json::json!({"Implements": ["NetworkDriver", "IpamDriver"]})));
    assert_eq!(plugin_call(&socket, "NetworkDriver.GetCapabilities", "{}").1["Scope"], "local");
    let ep = r#"{"NetworkID":"n1","EndpointID":"e1"}"#;
    for _ in 0..2 {
        // Docker repeats these for endpoints that are gone.
        assert_eq!(plugin_call(&socket, "NetworkDriver.Leave", ep), (200, serde_json::json!({})));
        assert_eq!(plugin_call(&socket, "NetworkDriver.DeleteEndpoint", ep), (200, serde_json::json!({})));
        let release = r#"{"PoolID":"demo/10.128.0.0/16","Address":"10.128.0.7"}"#;
        assert_eq!(plugin_call(&socket, "IpamDriver.ReleaseAddress", release), (200, serde_json::json!({})));
        assert_eq!(plugin_call(&socket, "NetworkDriver.DeleteNetwork", r#"{"NetworkID":"n1"}"#).0, 200);
    }
    assert_eq!(plugin_call(&socket, "NetworkDriver.DiscoverNew", "{}"), (200, serde_json::json!({})));
    for (method, body, want) in [
        ("NetworkDriver.CreateNetwork", "{not json", "invalid request body"),
        ("NetworkDriver.CreateEndpoint", r#"{"NetworkID":"n/1","EndpointID":"e1"}"#, "invalid NetworkID"),
        (
            "NetworkDriver.Join",
            r#"{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/x"}"#,
            "not known to ovnet",
        ),
        ("IpamDriver.RequestAddress", r#"{"PoolID":"nope"}"#, "not an ovnet pool"),
        ("IpamDriver.RequestPool", r#"{"Pool":"10.1.0.0/16","V6":true}"#, "IPv4 only"),
    ] {
        let (code, v) = plugin_call(&socket, method, body);
        assert_ne!(code, 200, "{method}");
        assert!(v["Err"].as_str().unwrap_or_default().contains(want), "{method}: {v}");
    }
    assert_eq!(lab.etcd_dump().unwrap().len(), before, "nothing written");
}

/// A CreateNetwork of the `--docker-sync` mirror (marked `-o
/// ovnet.mirrored`) joins the ovnet network and never creates it: ovchaos
/// (seed 9, `--runtimes`) saw a mirror pass racing `ovctl network rm` bring
/// the removed network back, to stay forever. A user's CreateNetwork still
/// creates the network it names.
#[test]
fn a_mirrored_docker_network_never_brings_back_a_removed_ovnet_network() {
    let (_dir, socket, lab) = plugin_lab();
    let create = |id: &str, name: &str, mark: &str| {
        let body = format!(
            r#"{{"NetworkID":"{id}","Options":{{"com.docker.network.generic":{{"network":"{name}"{mark}}}}},"IPv4Data":[{{"AddressSpace":"ovnet","Pool":"10.57.0.0/16","Gateway":"10.57.0.1/16"}}]}}"#
        );
        plugin_call(&socket, "NetworkDriver.CreateNetwork", &body)
    };
    let network =
        |name: &str| lab.etcd_dump().unwrap().contains_key(&format!("{}/networks/{name}", lab.prefix));
    let (code, v) = create("n1", "gone", r#","ovnet.mirrored":"true""#);
    assert_ne!(code, 200, "{v}");
    assert!(v["Err"].as_str().unwrap_or_default().contains("is gone"), "{v}");
    assert!(!network("gone"), "the mirror made the ovnet network");
    assert_eq!(create("n2", "made", ""), (200, serde_json::json!({})));
    assert!(network("made"), "a user's docker network create makes its ovnet network");
    let (code, v) = create("n3", "made", r#","ovnet.mirrored":"true""#);
    assert_eq!((code, v), (200, serde_json::json!({})), "the mirror joins a network that exists");
}
