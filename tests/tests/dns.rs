//! Names across hosts (#13): the agents' DNS servers in the lab, asked from
//! container namespaces as a user would (`getent hosts`, busybox
//! `nslookup`, `ping NAME`) and with raw queries (round robin, PTR, TCP,
//! scoping, malformed packets, a flood), with real etcd and agents.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ovnet_tests::dns::{Outside, addresses, getent, query, raw};
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(2);
/// `--dns-address`'s default.
const FIXED: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 53);

/// A lab whose agents forward to the resolvers of `resolv_conf`.
fn lab(resolv_conf: &str, lease_ttl: u64) -> Lab {
    let opts =
        AgentOptions { extra_args: vec!["--resolv-conf".into(), resolv_conf.into()], ..Default::default() };
    Lab::start_with(LabOptions { lease_ttl, ..Default::default() }, opts).unwrap()
}

/// Connects a new container on host `i` with `--name`/`--alias` flags.
fn named(lab: &mut Lab, i: usize, network: &str, name: &str, flags: &[&str]) -> (String, String) {
    let ns = lab.container(name).unwrap();
    let mut args = vec!["network", "connect", network, &ns];
    args.extend_from_slice(flags);
    let ip = lab.ovctl_ok(i, &args).unwrap();
    (ns, ip)
}

fn resolves(lab: &Lab, ns: &str, name: &str, want: Option<&str>) {
    let r = poll(&format!("{name} -> {want:?} from {ns}"), CONVERGE, || {
        (getent(ns, name).as_deref() == want).then_some(())
    });
    if let Err(e) = r {
        panic!("{e}: got {:?}\n{}", getent(ns, name), lab.logs());
    }
}

/// The A answer to `name`; `Err(None)` when none came in time.
fn a(ns: &str, server: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>, Option<ResponseCode>> {
    let m = query(ns, server, name, RecordType::A, false, WAIT).map_err(|_| None)?;
    addresses(&m).map_err(Some)
}

#[test]
fn names_aliases_round_robin_and_scoping_across_three_hosts() {
    let mut lab = lab("/dev/null", 10);
    lab.create_network(0, "-d overlay --subnet 10.71.0.0/16 blue").unwrap();
    lab.create_network(0, "-d overlay --subnet 10.72.0.0/16 red").unwrap();
    let (c1, ip1) = named(&mut lab, 0, "blue", "c1", &["--name", "web", "--alias", "www"]);
    let (c2, ip2) = named(&mut lab, 1, "blue", "c2", &["--name", "db", "--alias", "www"]);
    let (c3, ip3) = named(&mut lab, 2, "blue", "c3", &["--name", "cache", "--alias", "www", "--alias", "kv"]);
    let (r1, rip) = named(&mut lab, 0, "red", "r1", &["--name", "only-red"]);

    // By name, NAME.NETWORK and alias, across hosts, as a user asks.
    resolves(&lab, &c1, "db", Some(&ip2));
    resolves(&lab, &c1, "cache.blue", Some(&ip3));
    resolves(&lab, &c2, "kv", Some(&ip3));
    resolves(&lab, &c3, "web", Some(&ip1));
    let out = lab.containers_exec(&c1, &["ping", "-c", "1", "-W", "2", "cache"]).unwrap();
    assert!(out.contains("1 received"), "ping by name: {out}");
    let busybox = ovnet_tests::image::busybox_path();
    let out = lab.containers_exec(&c2, &[busybox.to_str().unwrap(), "nslookup", "web.blue"]).unwrap();
    assert!(out.contains(&ip1), "busybox nslookup: {out}");
    // The fixed address answers the same, through the container's gateway.
    assert_eq!(a(&c1, FIXED, "db"), Ok(vec![ip2.parse().unwrap()]));
    // TCP too.
    let m = query(&c1, "10.71.0.1".parse().unwrap(), "web.blue.", RecordType::A, true, WAIT).unwrap();
    assert_eq!(addresses(&m), Ok(vec![ip1.parse().unwrap()]));
    // PTR.
    let arpa = ip2.split('.').rev().collect::<Vec<_>>().join(".") + ".in-addr.arpa.";
    let m = query(&c1, "10.71.0.1".parse().unwrap(), &arpa, RecordType::PTR, false, WAIT).unwrap();
    assert_eq!(m.answers.first().map(|r| r.data.to_string()), Some("db.blue.".to_string()));

    round_robin(&c1, [&ip1, &ip2, &ip3]);
    scoping(&lab, &c1, &r1, &rip);

    unique_names_and_inspect(&mut lab, &ip3);

    let gw: Ipv4Addr = "10.71.0.1".parse().unwrap();
    disconnect_and_dead_namespace(&mut lab, gw, &c2, [&c1, &c3]);
    assert_eq!(lab.panics(), 0);
}

/// A name is unique on its network; aliases may be shared; labels only;
/// `inspect` shows them (`ip3` is `cache`'s address).
fn unique_names_and_inspect(lab: &mut Lab, ip3: &str) {
    // A name is unique on its network; aliases may be shared; labels only.
    let (c4, _) = (lab.container("c4").unwrap(), ());
    let out = lab.ovctl(1, &["network", "connect", "blue", &c4, "--name", "web"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"web\" is taken"), "{err}");
    let out = lab.ovctl(1, &["network", "connect", "blue", &c4, "--alias", "Not_A_Label"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("invalid DNS name"), "{err}");
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(0, "network inspect blue").unwrap()).unwrap();
    let eps = inspect["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 3, "{inspect}");
    let e3 = eps.iter().find(|e| e["ip"] == ip3).unwrap();
    assert_eq!((&e3["name"], &e3["aliases"]), (&"cache".into(), &serde_json::json!(["www", "kv"])));
}

/// An alias of three endpoints: all three answered, the first one rotating.
fn round_robin(ns: &str, ips: [&String; 3]) {
    let gw: Ipv4Addr = "10.71.0.1".parse().unwrap();
    let want: BTreeSet<Ipv4Addr> = ips.iter().map(|s| s.parse().unwrap()).collect();
    let mut firsts = BTreeSet::new();
    for _ in 0..6 {
        let got = a(ns, gw, "www").unwrap();
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), want);
        firsts.insert(got[0]);
    }
    assert_eq!(firsts.len(), 3, "the first address rotates: {firsts:?}");
}

/// Red sees its own name only; blue (`blue_ns`) does not see red's.
fn scoping(lab: &Lab, blue_ns: &str, red_ns: &str, red_ip: &str) {
    let gw: Ipv4Addr = "10.71.0.1".parse().unwrap();
    resolves(lab, red_ns, "only-red", Some(red_ip));
    assert_eq!(getent(red_ns, "web"), None);
    assert_eq!(a(red_ns, "10.72.0.1".parse().unwrap(), "web.blue"), Err(Some(ResponseCode::NXDomain)));
    // Asking blue's gateway does not help: the source address decides.
    assert_eq!(a(red_ns, gw, "web.blue"), Err(Some(ResponseCode::NXDomain)));
    assert_eq!(getent(blue_ns, "only-red"), None);
}

/// `gone_ns` disconnected: its name `db` goes from `others` within 2 s;
/// then a namespace deleted without a disconnect loses its name and its resolv.conf.
fn disconnect_and_dead_namespace(lab: &mut Lab, gw: Ipv4Addr, gone_ns: &str, others: [&String; 2]) {
    // Disconnect: the name goes everywhere within 2 s.
    lab.ovctl_ok(1, &["network", "disconnect", "blue", gone_ns]).unwrap();
    let started = Instant::now();
    for ns in others {
        poll("db gone", Duration::from_secs(2), || {
            (a(ns, gw, "db.blue") == Err(Some(ResponseCode::NXDomain))).then_some(())
        })
        .unwrap();
    }
    eprintln!("disconnect seen by both other hosts' DNS after {:?}", started.elapsed());
    assert!(!std::path::Path::new(&format!("/etc/netns/{gone_ns}/resolv.conf")).exists());

    // A namespace deleted without a disconnect: its name goes when the agent
    // releases the dead endpoint, and so does the resolv.conf ovnet wrote.
    let (gone, gone_ip) = named(lab, 2, "blue", "gone", &["--name", "gone"]);
    resolves(lab, others[0], "gone", Some(&gone_ip));
    assert!(std::path::Path::new(&format!("/etc/netns/{gone}/resolv.conf")).exists());
    ovnet_tests::netns::ip(&["netns", "del", &gone]).unwrap();
    poll("gone's name gone", CONVERGE, || {
        (a(others[0], gw, "gone.blue") == Err(Some(ResponseCode::NXDomain))).then_some(())
    })
    .unwrap();
    poll("gone's resolv.conf removed", CONVERGE, || {
        (!std::path::Path::new(&format!("/etc/netns/{gone}")).exists()).then_some(())
    })
    .unwrap();
    lab.delete_container(&gone);
}

/// Names that are not ovnet's go to the host's resolvers; when none answers,
/// SERVFAIL comes back within 5 s.
#[test]
fn forwards_to_the_hosts_resolver_and_fails_fast_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("resolv.conf");
    // The outside resolver sits on the underlay's gateway address.
    std::fs::write(&conf, "nameserver 172.30.0.254\n").unwrap();
    let mut lab = lab(conf.to_str().unwrap(), 10);
    let outside_ip: Ipv4Addr = "192.0.2.7".parse().unwrap();
    let names = vec![("outside.example.".to_string(), outside_ip)];
    let mut outside = Outside::start(&lab.underlay.path(), "172.30.0.254".parse().unwrap(), names).unwrap();
    lab.create_network(0, "-d overlay --subnet 10.73.0.0/16 green").unwrap();
    let (c1, _) = named(&mut lab, 0, "green", "c1", &["--name", "web"]);
    resolves(&lab, &c1, "outside.example", Some("192.0.2.7"));
    let gw: Ipv4Addr = "10.73.0.1".parse().unwrap();
    let m = query(&c1, gw, "outside.example.", RecordType::A, true, WAIT).unwrap();
    assert_eq!(addresses(&m), Ok(vec![outside_ip]), "over TCP");
    assert_eq!(a(&c1, gw, "nowhere.example."), Err(Some(ResponseCode::NXDomain)), "its error passes through");

    outside.stop();
    let started = Instant::now();
    let m = query(&c1, gw, "outside.example.", RecordType::A, false, Duration::from_secs(6)).unwrap();
    let took = started.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_secs(5), "SERVFAIL after {took:?}");
    eprintln!("SERVFAIL with the resolver down after {took:?}");
    // A resolver that does not answer at all (an address nobody has).
    std::fs::write(&conf, "nameserver 172.30.0.99\n").unwrap();
    let silent = poll("the agent to read its resolv.conf again", CONVERGE, || {
        let started = Instant::now();
        let m = query(&c1, gw, "outside.example.", RecordType::A, false, Duration::from_secs(6)).ok()?;
        let took = started.elapsed();
        (m.metadata.response_code == ResponseCode::ServFail && took > Duration::from_millis(500))
            .then_some(took)
    })
    .unwrap();
    assert!(silent < Duration::from_secs(5), "SERVFAIL after {silent:?}");
    eprintln!("SERVFAIL with a silent resolver after {silent:?}");
    // Our own names still answer.
    assert_eq!(a(&c1, gw, "web").map(|v| v.len()), Ok(1));
    record(&Outcome {
        category: "fault".into(),
        test: "forwards_to_the_hosts_resolver_and_fails_fast_without_one".into(),
        scenario: "a container asks the agent for a name only the host's resolver (in another namespace) knows, over UDP and TCP; then that resolver is stopped; then resolv.conf names one that never answers".into(),
        held: format!("answers and NXDOMAIN passed through; SERVFAIL after {took:.0?} with the resolver stopped, after {silent:.1?} with one that never answers (bound: 5 s); ovnet's own names still answered"),
        operations: 6,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// Lookups every 20 ms through an agent SIGKILL and restart; a dead host's
/// names go; malformed, oversize and 10,000 queries in a burst neither crash
/// the agent nor stall it.
#[test]
fn restart_gap_dead_host_and_flood() {
    let mut lab = lab("/dev/null", 4);
    lab.create_network(0, "-d overlay --subnet 10.74.0.0/16 blue").unwrap();
    let (c1, _) = named(&mut lab, 0, "blue", "c1", &["--name", "web"]);
    let (_c2, ip2) = named(&mut lab, 1, "blue", "c2", &["--name", "db"]);
    let (c3, _) = named(&mut lab, 2, "blue", "c3", &["--name", "cache"]);
    let gw: Ipv4Addr = "10.74.0.1".parse().unwrap();
    resolves(&lab, &c1, "db", Some(&ip2));

    // SIGKILL h1's agent and start it again while c1 (on h1) asks every 20 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (stop, c1) = (stop.clone(), c1.clone());
        std::thread::spawn(move || {
            let mut answered = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = query(&c1, gw, "db.blue.", RecordType::A, false, Duration::from_millis(200))
                    .is_ok_and(|m| addresses(&m).is_ok_and(|v| !v.is_empty()));
                answered.push((Instant::now(), ok));
                std::thread::sleep(Duration::from_millis(20));
            }
            answered
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    lab.kill_agent(0);
    // A user's lookup made while the agent is down succeeds with the
    // resolver options ovnet wrote (timeout:1 attempts:3).
    let user = {
        let c1 = c1.clone();
        std::thread::spawn(move || getent(&c1, "db"))
    };
    lab.start_agent(0).unwrap();
    poll("lookups again", CONVERGE, || (a(&c1, gw, "db") == Ok(vec![ip2.parse().unwrap()])).then_some(()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = asker.join().unwrap();
    assert!(answered.iter().any(|(_, ok)| *ok) && answered.last().is_some_and(|(_, ok)| *ok));
    let gap = longest_gap(&answered);
    eprintln!("DNS gap through an agent SIGKILL + restart: {gap:?} ({} lookups)", answered.len());
    assert!(gap < Duration::from_secs(1), "gap {gap:?}");
    assert_eq!(user.join().unwrap(), Some(ip2.clone()), "getent with ovnet's resolver options");
    // What keeps it working: the kernel's port-unreachable answers to DNS
    // queries are dropped while nothing listens.
    let out = ovnet_tests::Netns::borrowed(&lab.hosts[0].ns.name)
        .exec("nft", &["list", "table", "inet", "ovnet_dns"]);
    let text = String::from_utf8_lossy(&out.unwrap().stdout).to_string();
    assert!(
        text.contains("oifname \"ovbr*\"") && text.contains("port-unreachable") && text.contains("drop"),
        "{text}"
    );

    // Bad input and a flood at h1's server.
    let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0x12], vec![0xff; 11], vec![0xab; 12], vec![0x55; 4000]];
    junk.push(vec![0u8; 65000]);
    for bytes in junk {
        let _ = raw(&c1, gw, bytes.clone(), false, Duration::from_millis(300));
        let _ = raw(&c1, gw, bytes, true, Duration::from_millis(300));
    }
    let flood = flood(&c1, gw, 10_000);
    // A connect made during the flood converges.
    let (_c9, ip9) = named(&mut lab, 0, "blue", "c9", &["--name", "late"]);
    resolves(&lab, &c3, "late", Some(&ip9));
    let sent = flood.join().unwrap();
    eprintln!("flood: {sent} queries sent");
    assert_eq!(lab.agent_exit(0), None, "the agent still runs");
    assert_eq!(a(&c1, gw, "db"), Ok(vec![ip2.parse().unwrap()]));

    // A dead host's names go with its lease.
    lab.kill_agent(2);
    poll("cache gone after h3 died", Duration::from_secs(15), || {
        (a(&c1, gw, "cache.blue") == Err(Some(ResponseCode::NXDomain))).then_some(())
    })
    .unwrap();
    assert_eq!(lab.panics(), 0);
    record(&Outcome {
        category: "fault".into(),
        test: "restart_gap_dead_host_and_flood".into(),
        scenario: format!(
            "agent SIGKILLed and restarted while a container looks a name up every 20 ms ({} lookups); 12 malformed and oversize packets over UDP and TCP; {sent} queries in a burst with a connect during it; another host's agent killed",
            answered.len()
        ),
        held: format!(
            "longest gap in answers {gap:.0?} (< 1 s); the agent kept running; the name connected during the flood resolved on another host; the dead host's names went with its lease"
        ),
        operations: answered.len() as u64 + sent as u64 + 14,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// The longest time between the last answered lookup before a failure and
/// the next answered one.
fn longest_gap(answered: &[(Instant, bool)]) -> Duration {
    let mut last_ok: Option<Instant> = None;
    let mut gap = Duration::ZERO;
    for (t, ok) in answered {
        if *ok {
            if let Some(prev) = last_ok {
                gap = gap.max(t.duration_since(prev));
            }
            last_ok = Some(*t);
        }
    }
    gap
}

/// Sends `n` queries (one in ten malformed) from `ns` without waiting for
/// answers, in bursts of 500.
fn flood(ns: &str, server: Ipv4Addr, n: usize) -> std::thread::JoinHandle<usize> {
    let path = std::path::PathBuf::from(format!("/run/netns/{ns}"));
    std::thread::spawn(move || {
        ovnet_agent::netns::block_on_in_netns(&path, move || async move {
            let Ok(s) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else { return 0 };
            let mut q = hickory_proto::op::Message::query();
            let name = hickory_proto::rr::Name::from_ascii("web.blue.").unwrap();
            q.add_query(hickory_proto::op::Query::query(name, RecordType::A));
            let good = q.to_vec().unwrap();
            let mut sent = 0;
            for i in 0..n {
                let bytes: &[u8] =
                    if i % 10 == 0 { &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13] } else { &good };
                if s.send_to(bytes, (server, 53)).await.is_ok() {
                    sent += 1;
                }
                // In bursts of 500 over about half a second, so that the
                // connect made meanwhile meets it.
                if i % 500 == 499 {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            sent
        })
        .unwrap_or(0)
    })
}
