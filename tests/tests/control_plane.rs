//! Containers never reach the control plane: once they reach the outside
//! (outbound NAT), each agent's own rules keep them from the etcd endpoints
//! it was given, its TCP API and its metrics listener, on this host and on
//! the others, while the hosts' own processes get through. An operator may
//! opt out with `--open-control-plane`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ovnet_tests::echo::{Echo, OUTSIDE_IP, outside};
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::{Lab, LabOptions, Netns};

/// Whether a TCP connection from namespace `ns` to `to` opens within 1 s
/// (a dropped SYN never does; an open port answers in a millisecond).
fn connects(ns: &str, to: SocketAddr) -> bool {
    let open = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "1", "bash", "-c", &open])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `from` gets through to `to` (polled: a listener may still be starting).
fn gets_through(lab: &Lab, from: &str, to: SocketAddr) {
    poll(&format!("{from} to reach {to}"), Duration::from_secs(10), || connects(from, to).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
}

/// The chain `inet ovnet input` on host `i`.
fn input_chain(lab: &Lab, i: usize) -> String {
    let out =
        Netns::borrowed(&lab.hosts[i].ns.name).exec("nft", &["list", "chain", "inet", "ovnet", "input"]);
    out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
}

#[test]
fn containers_are_refused_where_host_processes_get_through() {
    const METRICS: &str = "0.0.0.0:9475";
    let agents =
        AgentOptions { extra_args: vec!["--metrics-listen".into(), METRICS.into()], ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 2, ..Default::default() }, agents).unwrap();
    lab.create_network(0, "-d overlay --subnet 10.77.0.0/16 apps").unwrap();
    let (c1, _) = lab.connected(0, "apps", "c1").unwrap();
    let (c2, _) = lab.connected(1, "apps", "c2").unwrap();
    let (h1, h2) = (lab.hosts[0].ns.name.clone(), lab.hosts[1].ns.name.clone());
    let (vtep1, vtep2) = (lab.hosts[0].ip, lab.hosts[1].ip);

    // h2's agent serves its API on TCP at its VTEP.
    lab.kill_agent(1);
    let api = SocketAddr::from((vtep2, 7070));
    let listen = format!("tcp://{api}");
    lab.spawn_agent(1, &["--listen", &listen, "--insecure", "--metrics-listen", METRICS], &[]).unwrap();
    poll("h2's agent to keep containers from its API", Duration::from_secs(15), || {
        input_chain(&lab, 1).contains("tcp dport 7070").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));

    // Containers do reach the outside: what they are refused is the guard's.
    let out = outside(&lab).unwrap();
    let _web = Echo::start(&out.path(), 80).unwrap();
    let web = SocketAddr::from((OUTSIDE_IP.parse::<std::net::Ipv4Addr>().unwrap(), 80));
    gets_through(&lab, &c1, web);
    gets_through(&lab, &c2, web);

    let etcd: SocketAddr = lab.etcd.endpoint().trim_start_matches("http://").parse().unwrap();
    let metrics1 = SocketAddr::from((vtep1, 9475));
    let gateway_metrics = SocketAddr::from(([10, 77, 0, 1], 9475));
    // Each target: a host process gets through, a container of either host does not.
    for (what, to, host) in [
        ("etcd", etcd, &h1),
        ("etcd", etcd, &h2),
        ("h2's API", api, &h1),
        ("h2's API", api, &h2),
        ("h1's metrics", metrics1, &h2),
        ("h1's metrics", metrics1, &h1),
    ] {
        gets_through(&lab, host, to);
        for c in [&c1, &c2] {
            assert!(!connects(c, to), "container {c} reached {what} at {to}\n{}", lab.logs());
        }
    }
    // Nor through the gateway, which is an address of the host too.
    assert!(!connects(&c1, gateway_metrics), "c1 reached h1's metrics at its gateway");

    // --open-control-plane: h1's containers may.
    lab.kill_agent(0);
    lab.spawn_agent(0, &["--open-control-plane", "--metrics-listen", METRICS], &[]).unwrap();
    gets_through(&lab, &c1, etcd);
    gets_through(&lab, &c1, gateway_metrics);
    assert!(!input_chain(&lab, 0).contains("dport"), "{}", input_chain(&lab, 0));
    // h2's agent still keeps its own containers out.
    assert!(!connects(&c2, etcd), "c2 reached etcd");
    assert_eq!(lab.panics(), 0, "{}", lab.logs());
}
