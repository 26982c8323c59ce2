//! The outside world (#12): outbound NAT, `--internal` networks and
//! published ports, on real namespaces. An "outside" namespace sits on the
//! underlay beside the hosts but is no ovnet host; a tiny server there and
//! in containers answers with the address it saw, so each check tells
//! whether the source was masqueraded or preserved.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ovnet_tests::echo::{Echo, OUTSIDE_IP, Proto, ask};
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::netns::Netns;
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

const H1: &str = "172.30.0.11";
const WAIT: Duration = Duration::from_secs(2);

fn outside(lab: &Lab) -> Netns {
    ovnet_tests::echo::outside(lab).unwrap()
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::from((ip.parse::<Ipv4Addr>().unwrap(), port))
}

fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// The table `inet ovnet` of host `i` as `nft` lists it, counters taken out.
fn table(lab: &Lab, i: usize) -> String {
    let out = lab.hosts[i].ns.exec("nft", &["list", "table", "inet", "ovnet"]).unwrap();
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace().peekable();
    let mut kept = Vec::new();
    while let Some(w) = words.next() {
        kept.push(w);
        if w == "packets" || w == "bytes" {
            words.next();
        }
    }
    kept.join(" ")
}

fn gateway(lab: &Lab, network: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.ctl(0, &format!("network inspect {network}")).unwrap()).unwrap();
    v["gateway"].as_str().unwrap().to_string()
}

#[test]
fn containers_reach_outside_masqueraded_and_internal_networks_do_not() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let out = outside(&lab);
    let _server = Echo::start(&out.path(), 8000).unwrap();
    lab.create_network(0, "--subnet 10.91.0.0/16 web").unwrap();
    lab.create_network(0, "--internal --subnet 10.92.0.0/16 sealed").unwrap();
    let (c1, _) = lab.connected(0, "web", "c1").unwrap();
    let (c2, _) = lab.connected(0, "sealed", "c2").unwrap();

    let seen = ask(&path(&c1), Proto::Tcp, at(OUTSIDE_IP, 8000), WAIT).unwrap();
    assert_eq!(seen, H1, "the outside saw {seen}, not h1's address");
    assert_eq!(ask(&path(&c1), Proto::Udp, at(OUTSIDE_IP, 8000), WAIT).unwrap(), H1);
    let sealed = ask(&path(&c2), Proto::Tcp, at(OUTSIDE_IP, 8000), WAIT);
    assert!(sealed.is_err(), "a container of an internal network reached outside: {sealed:?}");
    assert!(!ovnet_tests::netns::ping(&c2, OUTSIDE_IP), "an internal network pinged outside");

    let ls: Vec<serde_json::Value> =
        serde_json::from_str(&lab.ctl(0, "network ls --format json").unwrap()).unwrap();
    let internal: BTreeMap<&str, bool> =
        ls.iter().map(|n| (n["name"].as_str().unwrap(), n["internal"].as_bool().unwrap())).collect();
    assert_eq!(internal, BTreeMap::from([("sealed", true), ("web", false)]));
    assert!(lab.ctl(0, "network ls").unwrap().contains("overlay (internal)"));
    let listed = table(&lab, 0);
    assert!(listed.contains("ip saddr 10.91.0.0/16 oifname != \"ovbr"), "{listed}");
    assert!(!listed.contains("10.92.0.0/16"), "the internal network is masqueraded: {listed}");

    // Published ports on an internal network are refused; nothing changes.
    let before = lab.etcd_dump().unwrap();
    let c3 = lab.container("c3").unwrap();
    let refused = lab.ovctl(0, &["network", "connect", "--publish", "8080:80", "sealed", &c3]).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("is internal"), "{err}");
    assert_eq!(lab.etcd_dump().unwrap(), before);

    // A host that drops forwarded traffic (Docker's FORWARD policy, without
    // the Docker plugin): the agent accepts ovnet's own in DOCKER-USER.
    lab.stop_agent(0).unwrap();
    let h1 = Netns::borrowed(&lab.hosts[0].ns.name);
    let drop = h1.exec("iptables", &["-P", "FORWARD", "DROP"]).unwrap();
    assert!(drop.status.success(), "{}", String::from_utf8_lossy(&drop.stderr));
    lab.start_agent(0).unwrap();
    let seen = poll("outside through FORWARD policy DROP", Duration::from_secs(10), || {
        ask(&path(&c1), Proto::Tcp, at(OUTSIDE_IP, 8000), WAIT).ok()
    })
    .unwrap();
    assert_eq!(seen, H1);
    let rules = h1.exec("iptables", &["-S", "DOCKER-USER"]).unwrap();
    assert!(String::from_utf8_lossy(&rules.stdout).contains("-i ovbr+ ! -o ovbr+"));
    record(&Outcome {
        category: "security".into(),
        test: "containers_reach_outside_masqueraded_and_internal_networks_do_not".into(),
        scenario: "a server in a namespace on the underlay that is no ovnet host; a container of a network \
                   and one of an --internal network on h1 call it (TCP, UDP, ping); --publish on the internal one; \
                   h1's FORWARD policy set to DROP without Docker"
            .into(),
        held: "the server saw h1's address (masquerade); the internal container reached nothing; the publish \
               was refused with etcd unchanged; with FORWARD DROP the agent's DOCKER-USER rules let the \
               container out"
            .into(),
        operations: 5,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// `ovctl network connect --publish SPEC... NET NS` on host `i`: (address, ports).
fn publish(
    lab: &Lab,
    i: usize,
    net: &str,
    ns: &str,
    specs: &[&str],
) -> anyhow::Result<(String, Vec<String>)> {
    let mut args = vec!["network", "connect", "--format", "json"];
    for s in specs {
        args.extend(["--publish", s]);
    }
    args.extend([net, ns]);
    let v: serde_json::Value = serde_json::from_str(&lab.ovctl_ok(i, &args)?)?;
    let ports = v["ports"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    Ok((v["ip"].as_str().unwrap().to_string(), ports))
}

#[test]
fn published_ports_are_reached_from_everywhere_and_survive_a_sigkill() {
    let opts = AgentOptions { resync_interval: Some(5), ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 2, ..Default::default() }, opts).unwrap();
    let out = outside(&lab);
    lab.create_network(0, "--subnet 10.93.0.0/16 web").unwrap();
    let c1 = lab.container("c1").unwrap();
    let _web = Echo::start(&path(&c1), 80).unwrap();
    let (c1_ip, ports) = publish(&lab, 0, "web", &c1, &["8080:80", "5353:80/udp"]).unwrap();
    assert_eq!(ports, ["8080:80/tcp", "5353:80/udp"]);

    let reach = |from: &str, proto, port| {
        poll(&format!("{proto:?} port {port} from {from}"), Duration::from_secs(10), || {
            ask(from, proto, at(H1, port), WAIT).ok()
        })
        .unwrap()
    };
    // Source preserved from outside and from another host; the host's own
    // address from the host; a container of the host comes back through it.
    // connect answers once the ports are forwarded: no waiting here.
    assert_eq!(ask(&out.path(), Proto::Tcp, at(H1, 8080), WAIT).unwrap(), OUTSIDE_IP);
    assert_eq!(reach(&out.path(), Proto::Udp, 5353), OUTSIDE_IP);
    assert_eq!(reach(&lab.hosts[1].ns.path(), Proto::Tcp, 8080), "172.30.0.12");
    assert_eq!(reach(&lab.hosts[0].ns.path(), Proto::Tcp, 8080), H1);
    let (c2, _) = lab.connected(0, "web", "c2").unwrap();
    assert_eq!(reach(&path(&c2), Proto::Tcp, 8080), gateway(&lab, "web"));
    assert_eq!(reach(&path(&c2), Proto::Udp, 5353), gateway(&lab, "web"));

    // inspect shows the ports; a second holder of 8080/tcp is refused,
    // naming the first, and nothing changes.
    let inspect = lab.ctl(0, "network inspect web").unwrap();
    assert!(inspect.contains("\"8080:80/tcp\"") && inspect.contains("\"5353:80/udp\""), "{inspect}");
    let before = (lab.etcd_dump().unwrap(), table(&lab, 0));
    let c3 = lab.container("c3").unwrap();
    let clash = lab.ovctl(0, &["network", "connect", "--publish", "8080:9000", "web", &c3]).unwrap();
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(!clash.status.success() && err.contains("tcp port 8080") && err.contains(&c1_ip), "{err}");
    assert_eq!((lab.etcd_dump().unwrap(), table(&lab, 0)), before);

    // Port 0: one is picked, reported, and forwarded.
    let c4 = lab.container("c4").unwrap();
    let _web4 = Echo::start(&path(&c4), 80).unwrap();
    let (_, picked) = publish(&lab, 0, "web", &c4, &["0:80"]).unwrap();
    let port: u16 = picked[0].split(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(ask(&out.path(), Proto::Tcp, at(H1, port), WAIT).unwrap(), OUTSIDE_IP);

    let (took, requests) = sigkill_under_a_stream(&mut lab, &out);
    let doctor_first = repaired_after_a_hand_deletion(&lab);

    // Disconnect: the rules go, the port answers no more.
    lab.ovctl_ok(0, &["network", "disconnect", "web", &c1]).unwrap();
    poll("the DNAT rules to go", Duration::from_secs(10), || {
        (!table(&lab, 0).contains("dport 8080")).then_some(())
    })
    .unwrap();
    assert!(ask(&out.path(), Proto::Tcp, at(H1, 8080), WAIT).is_err());
    record(&Outcome {
        category: "fault".into(),
        test: "published_ports_are_reached_from_everywhere_and_survive_a_sigkill".into(),
        scenario: "8080:80/tcp and 5353:80/udp published on h1 and reached from a namespace outside the cluster, \
                   from h2, from h1 and from a container on h1; a clash; port 0; h1's agent SIGKILLed and \
                   restarted under a stream of TCP requests from outside; a DNAT rule deleted by hand; disconnect"
            .into(),
        held: format!(
            "sources preserved from outside and h2, hairpin through the gateway; the clash refused naming the \
             holder with etcd and kernel unchanged; a stream of {requests} requests across the restart ({:.1} s) all \
             answered, the table identical after it; doctor reported the deleted rule{} and it came back; \
             the rules went with the endpoint",
            took.as_secs_f64(),
            if doctor_first { " first" } else { "" }
        ),
        operations: requests,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// SIGKILLs h1's agent and starts it again while the outside namespace
/// keeps asking port 8080; no request may fail, and the table must be
/// what it was. Returns how long the restart took and the requests made.
fn sigkill_under_a_stream(lab: &mut Lab, out: &Netns) -> (Duration, u64) {
    let before = table(lab, 0);
    let (stop, sent, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stream = {
        let (stop, sent, failed, from) = (stop.clone(), sent.clone(), failed.clone(), out.path());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if ask(&from, Proto::Tcp, at(H1, 8080), WAIT).is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    poll("the stream to run", Duration::from_secs(10), || (sent.load(Ordering::Relaxed) > 10).then_some(()))
        .unwrap();
    let started = Instant::now();
    lab.kill_agent(0);
    lab.start_agent(0).unwrap();
    let took = started.elapsed();
    let more = sent.load(Ordering::Relaxed) + 10;
    poll("the stream to go on", Duration::from_secs(10), || {
        (sent.load(Ordering::Relaxed) > more).then_some(())
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    stream.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed across the restart");
    assert_eq!(table(lab, 0), before, "the table changed across the restart");
    (took, sent.load(Ordering::Relaxed))
}

/// Deletes h1's prerouting DNAT rule for 8080 by hand: `ovctl doctor`
/// names it (tried again should a resync win the race), and the agent puts
/// it back. Returns whether doctor saw it before the repair.
fn repaired_after_a_hand_deletion(lab: &Lab) -> bool {
    let h1 = &lab.hosts[0].ns;
    let want = table(lab, 0);
    for _ in 0..3 {
        let listing = h1.exec("nft", &["-a", "list", "chain", "inet", "ovnet", "prerouting"]).unwrap();
        let text = String::from_utf8_lossy(&listing.stdout).to_string();
        let line = text.lines().find(|l| l.contains("dport 8080")).expect("the DNAT rule");
        let handle = line.rsplit(' ').next().unwrap();
        let del =
            h1.exec("nft", &["delete", "rule", "inet", "ovnet", "prerouting", "handle", handle]).unwrap();
        assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
        let doctor = lab.ovctl(0, &["doctor"]).unwrap();
        let report = String::from_utf8_lossy(&doctor.stdout).to_string();
        poll("the rule to come back", Duration::from_secs(15), || (table(lab, 0) == want).then_some(()))
            .unwrap();
        if !doctor.status.success() {
            assert!(report.contains("dport 8080"), "{report}");
            return true;
        }
    }
    panic!("doctor never saw the deleted rule");
}

#[test]
fn bad_port_specs_are_refused_and_change_nothing() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.create_network(0, "--subnet 10.94.0.0/16 web").unwrap();
    let c1 = lab.container("c1").unwrap();
    let before = (lab.etcd_dump().unwrap(), table(&lab, 0));
    for (spec, want) in [
        ("8080:0", "container port must be 1-65535"),
        ("8080:65536", "over 65535"),
        ("garbage", "bad port spec"),
        ("8080:80/sctp", "is not tcp or udp"),
        ("1.2.3:8080:80", "not an IPv4 address"),
    ] {
        let out = lab.ovctl(0, &["network", "connect", "--publish", spec, "web", &c1]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{spec}: {err}");
    }
    assert_eq!((lab.etcd_dump().unwrap(), table(&lab, 0)), before);
    assert!(lab.links(0).unwrap().iter().all(|l| !l.starts_with("ovve")));
    record(&Outcome {
        category: "bad input".into(),
        test: "bad_port_specs_are_refused_and_change_nothing".into(),
        scenario: "--publish 8080:0, 8080:65536, garbage, 8080:80/sctp, 1.2.3:8080:80".into(),
        held: "each refused with a message naming the problem, non-zero exit, etcd and the table unchanged, \
               no veth made"
            .into(),
        operations: 5,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}
