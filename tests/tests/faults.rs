//! Faults in the lab (real etcd, real agents, real namespaces): etcd stopped,
//! frozen and losing its leader, agents killed and stopped, hosts dying and
//! coming back, containers dying without a disconnect, bad records in etcd.
//! Each test counts the pings it kept flowing and records what held
//! (`ovnet_tests::report`), which becomes docs/reliability.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::netns::ping;
use ovnet_tests::pings::{PingStream, PingTally};
use ovnet_tests::report::{Outcome, record};

/// What one test did and what held, for the reliability table.
struct Row<'a> {
    category: &'a str,
    test: &'a str,
    scenario: &'a str,
    held: &'a str,
}

/// Records the outcome of a test whose assertions passed, after checking
/// that no agent panicked.
fn held(lab: &Lab, row: Row, pings: Option<PingTally>, operations: u64) {
    let panics = lab.panics();
    assert_eq!(panics, 0, "an agent panicked:\n{}", lab.logs());
    let pings = pings.unwrap_or(PingTally { sent: 0, received: 0, duplicates: 0 });
    record(&Outcome {
        category: row.category.into(),
        test: row.test.into(),
        scenario: row.scenario.into(),
        held: row.held.into(),
        pings_sent: pings.sent,
        pings_lost: pings.lost(),
        operations,
        panics,
        ..Default::default()
    })
    .unwrap();
}
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);
const EVERY_10MS: Duration = Duration::from_millis(10);

fn wait_ping(lab: &Lab, from: &str, ip: &str) {
    if let Err(e) = poll(&format!("{from} to ping {ip}"), CONVERGE, || ping(from, ip).then_some(())) {
        panic!("{e}\n{}", lab.logs());
    }
}

fn mac_of(ip: &str) -> String {
    let octets: Vec<String> =
        ip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap_or(0))).collect();
    format!("02:42:{}", octets.join(":"))
}

/// Creates `net` and connects container `cN` on every host; waits until c1
/// reaches all the others. Returns (netns, address) per host.
fn network_with_a_container_per_host(lab: &mut Lab, net: &str) -> Vec<(String, String)> {
    lab.create_network(0, &format!("-d overlay {net}")).unwrap();
    let cs: Vec<(String, String)> =
        (0..lab.hosts.len()).map(|i| lab.connected(i, net, &format!("c{}", i + 1)).unwrap()).collect();
    for (a, (ns, _)) in cs.iter().enumerate() {
        for (b, (_, ip)) in cs.iter().enumerate() {
            if a != b {
                wait_ping(lab, ns, ip);
            }
        }
    }
    cs
}

/// Pings at 10 ms between every ordered pair of containers on different hosts.
fn ping_all_pairs(cs: &[(String, String)], count: u64) -> Vec<PingStream> {
    let mut streams = Vec::new();
    for (a, (ns, _)) in cs.iter().enumerate() {
        for (b, (_, ip)) in cs.iter().enumerate() {
            if a != b {
                streams.push(PingStream::start(ns, ip, EVERY_10MS, count).unwrap());
            }
        }
    }
    streams
}

/// Waits for every stream; returns the summed tally.
fn finish(streams: Vec<PingStream>) -> PingTally {
    let mut total = PingTally { sent: 0, received: 0, duplicates: 0 };
    for s in streams {
        let t = s.finish().unwrap();
        total.sent += t.sent;
        total.received += t.received;
        total.duplicates += t.duplicates;
    }
    total
}

fn assert_no_loss(lab: &Lab, t: &PingTally, during: &str) {
    assert_eq!(t.lost(), 0, "{} of {} pings lost {during}\n{}", t.lost(), t.sent, lab.logs());
}

/// Runs `ovctl ARGS` on host `i`, expecting a failure saying etcd is
/// unreachable within 5 s.
fn fails_fast_with_etcd_unreachable(lab: &Lab, i: usize, args: &[&str]) {
    let started = Instant::now();
    let out = lab.ovctl(i, args).unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ovctl {args:?} succeeded with etcd unreachable");
    assert!(stderr.contains("etcd is unreachable"), "ovctl {args:?}: {stderr}");
    assert!(took < Duration::from_secs(5), "ovctl {args:?} took {took:?} to fail");
}

/// Polls until host `i` holds FDB entries for `mac`, within `within`.
fn programmed_on(lab: &Lab, hosts: &[usize], mac: &str, within: Duration) {
    for &i in hosts {
        if let Err(e) = poll(&format!("{mac} programmed on h{}", i + 1), within, || {
            lab.fdb(i).ok()?.iter().any(|e| e.contains(mac)).then_some(())
        }) {
            panic!("{e}\n{}", lab.logs());
        }
    }
}

/// The records under `blocks/` and `endpoints/`, as etcd holds them.
fn ownership(lab: &Lab) -> BTreeMap<String, String> {
    let mut dump = lab.etcd_dump().unwrap();
    dump.retain(|k, _| k.contains("/blocks/") || k.contains("/endpoints/"));
    dump
}

fn log_marks(lab: &Lab) -> Vec<usize> {
    lab.hosts.iter().map(|h| h.log().len()).collect()
}

fn logged_since(lab: &Lab, marks: &[usize], i: usize) -> String {
    lab.hosts[i].log().get(marks[i]..).unwrap_or_default().to_string()
}

/// Every agent logs that it watches etcd again after `marks`.
fn all_watching_again(lab: &Lab, marks: &[usize]) {
    for i in 0..lab.hosts.len() {
        if let Err(e) = poll("the agent to watch etcd again", Duration::from_secs(15), || {
            logged_since(lab, marks, i).contains("watching etcd from revision").then_some(())
        }) {
            panic!("h{}: {e}\n{}", i + 1, lab.logs());
        }
    }
}

fn all_alive(lab: &Lab, n: usize) {
    poll("every host alive", Duration::from_secs(15), || {
        let hosts: Vec<serde_json::Value> =
            serde_json::from_str(&lab.ctl(0, "host ls --format json").ok()?).ok()?;
        (hosts.iter().filter(|h| h["alive"] == true).count() == n).then_some(())
    })
    .unwrap();
}

#[test]
fn etcd_stopped_for_30s() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let streams = ping_all_pairs(&cs, 4000);
    lab.etcd.stop();
    let stopped = Instant::now();
    let spare = lab.container("spare").unwrap();
    let calls: [&[&str]; 4] = [
        &["network", "ls"],
        &["network", "create", "-d", "overlay", "during"],
        &["network", "connect", "net", &spare],
        &["host", "ls"],
    ];
    for (i, args) in calls.iter().enumerate() {
        fails_fast_with_etcd_unreachable(&lab, i % 3, args);
    }
    // The outage itself lasts 30 s.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    let marks = log_marks(&lab);
    lab.etcd.restart().unwrap();
    all_watching_again(&lab, &marks);
    all_alive(&lab, 3);
    // A change made right after recovery reaches the other hosts within 2 s.
    let (_c4, ip4) = lab.connected(0, "net", "c4").unwrap();
    programmed_on(&lab, &[1, 2], &mac_of(&ip4), Duration::from_secs(2));
    let tally = finish(streams);
    assert_no_loss(&lab, &tally, "while etcd was stopped");
    held(
        &lab,
        Row {
            category: "fault",
            test: "etcd_stopped_for_30s",
            scenario: "etcd stopped for 30 s, then started again on the same data",
            held: "pings at 10 ms between all 6 host pairs; 4 ovctl calls failed in < 5 s saying etcd is unreachable; every agent watched again, all hosts alive; a connect right after recovery programmed on the 2 others within 2 s",
        },
        Some(tally),
        calls.len() as u64 + 1,
    );
}

#[test]
fn etcd_frozen_past_the_lease_ttl() {
    let mut lab = Lab::start(LabOptions { lease_ttl: 4, ..Default::default() }).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let marks = log_marks(&lab);
    let streams = ping_all_pairs(&cs, 2000);
    lab.etcd.freeze().unwrap();
    let frozen = Instant::now();
    fails_fast_with_etcd_unreachable(&lab, 0, &["network", "ls"]);
    fails_fast_with_etcd_unreachable(&lab, 1, &["network", "create", "-d", "overlay", "during"]);
    // Frozen for 10 s, well past the 4 s lease TTL: every lease is gone when it thaws.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(frozen.elapsed()));
    lab.etcd.thaw().unwrap();
    for i in 0..3 {
        poll("the agent to register again", Duration::from_secs(15), || {
            logged_since(&lab, &marks, i).contains("registering again").then_some(())
        })
        .unwrap_or_else(|e| panic!("h{}: {e}\n{}", i + 1, lab.logs()));
    }
    all_alive(&lab, 3);
    let (_c4, ip4) = lab.connected(1, "net", "c4").unwrap();
    programmed_on(&lab, &[0, 2], &mac_of(&ip4), Duration::from_secs(2));
    let tally = finish(streams);
    assert_no_loss(&lab, &tally, "while etcd was frozen");
    held(
        &lab,
        Row {
            category: "fault",
            test: "etcd_frozen_past_the_lease_ttl",
            scenario: "etcd frozen (SIGSTOP) for 10 s with a 4 s lease TTL, then resumed: every lease has expired",
            held: "pings at 10 ms between all 6 host pairs; ovctl failed in < 5 s saying etcd is unreachable; every agent saw its lease gone and registered again; a connect after resume programmed on the others within 2 s",
        },
        Some(tally),
        3,
    );
}

#[test]
fn etcd_leader_killed_in_a_three_member_cluster() {
    let mut lab = Lab::start(LabOptions { etcd_members: 3, ..Default::default() }).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let streams = ping_all_pairs(&cs, 1500);
    let leader = lab.etcd_leader().unwrap();
    lab.etcd_member(leader).stop();
    // The agents carry on through the other two members.
    lab.create_network(1, "-d overlay after").unwrap();
    let (a1, _) = lab.connected(0, "after", "a1").unwrap();
    let (_a3, a3_ip) = lab.connected(2, "after", "a3").unwrap();
    wait_ping(&lab, &a1, &a3_ip);
    let (_c4, ip4) = lab.connected(1, "net", "c4").unwrap();
    programmed_on(&lab, &[0, 2], &mac_of(&ip4), CONVERGE);
    let tally = finish(streams);
    assert_no_loss(&lab, &tally, "while the etcd leader was killed");
    held(
        &lab,
        Row {
            category: "fault",
            test: "etcd_leader_killed_in_a_three_member_cluster",
            scenario: "three-member etcd cluster; the leader is killed (SIGKILL)",
            held: "pings at 10 ms between all 6 host pairs; network create and 3 connects through the other members; the new containers ping across hosts",
        },
        Some(tally),
        4,
    );
}

#[test]
fn agent_killed_and_stopped_restarts_without_loss_or_duplicates() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let kernel_before: Vec<Vec<String>> = (0..3).map(|i| lab.kernel(i).unwrap()).collect();
    let owned_before = ownership(&lab);
    let streams = ping_all_pairs(&cs, 2000);
    let mark = lab.hosts[1].log().len();
    for (round, how) in ["SIGKILL", "SIGTERM"].iter().enumerate() {
        if *how == "SIGKILL" {
            lab.kill_agent(1);
        } else {
            lab.stop_agent(1).unwrap();
        }
        lab.start_agent(1).unwrap();
        poll("the restarted agent's first pass", CONVERGE, || {
            (lab.hosts[1].log().matches("datapath in sync").count() == round + 2).then_some(())
        })
        .unwrap();
    }
    let tally = finish(streams);
    assert_no_loss(&lab, &tally, "across SIGKILL and SIGTERM restarts");
    for (i, before) in kernel_before.iter().enumerate() {
        let now = lab.kernel(i).unwrap();
        assert_eq!(&now, before, "host {} changed across the restarts", i + 1);
        let mut dedup = now.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), now.len(), "duplicates on host {}: {now:?}", i + 1);
    }
    assert_eq!(ownership(&lab), owned_before, "blocks or endpoints changed across the restarts");
    let restarted = lab.hosts[1].log()[mark..].to_string();
    for change in ["ip link add", "ip link del", "bridge fdb", "ip neigh"] {
        assert!(!restarted.contains(change), "the restarted agent changed the kernel:\n{restarted}");
    }
    held(
        &lab,
        Row {
            category: "fault",
            test: "agent_killed_and_stopped_restarts_without_loss_or_duplicates",
            scenario: "h2's agent killed (SIGKILL) and restarted, then stopped (SIGTERM) and restarted",
            held: "pings at 10 ms between all 6 host pairs; every host's devices, FDB and neighbour entries identical before and after, none duplicated; blocks and endpoints in etcd unchanged; the restarted agent changed nothing in the kernel",
        },
        Some(tally),
        4,
    );
}

#[test]
fn dead_host_is_dropped_in_time_and_returns_with_its_addresses() {
    let ttl = 2;
    let mut lab = Lab::start(LabOptions { lease_ttl: ttl, ..Default::default() }).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let h3 = lab.hosts[2].ip.to_string();
    let owned_before = ownership(&lab);
    lab.kill_agent(2);
    let killed = Instant::now();
    let budget = Duration::from_secs(ttl + 2);
    for i in [0, 1] {
        let left = budget.saturating_sub(killed.elapsed());
        poll("h3's flood, FDB and neighbour entries removed within TTL + 2 s", left, || {
            let gone = !lab.fdb(i).ok()?.iter().any(|e| e.ends_with(&h3))
                && !lab.neigh(i).ok()?.iter().any(|e| e.contains(&cs[2].1));
            gone.then_some(())
        })
        .unwrap_or_else(|e| panic!("h{}: {e}\n{}", i + 1, lab.logs()));
    }
    let dropped_after = killed.elapsed();
    // Liveness is not ownership: h3's blocks and endpoint stay reserved.
    assert_eq!(ownership(&lab), owned_before, "a dead host's records changed");
    let out = lab.ovctl(0, &["host", "rm", "h1"]).unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is alive"));
    assert_eq!(ownership(&lab), owned_before);
    // The host comes back: its container is reachable again without a reconnect.
    lab.start_agent(2).unwrap();
    wait_ping(&lab, &cs[0].0, &cs[2].1);
    wait_ping(&lab, &cs[2].0, &cs[1].1);
    assert_eq!(ownership(&lab), owned_before, "the returning host got other addresses");
    held(
        &lab,
        Row {
            category: "fault",
            test: "dead_host_is_dropped_in_time_and_returns_with_its_addresses",
            scenario: &format!("h3's agent killed with a {ttl} s lease TTL, later started again"),
            held: &format!(
                "h3's entries gone from h1 and h2 after {:.1} s (budget TTL + 2 s); its blocks and endpoint kept; host rm of a live host refused; back, its container pinged again with the same address and no reconnect",
                dropped_after.as_secs_f64()
            ),
        },
        None,
        2,
    );
}

/// `nstat` counter `name` in namespace `ns` (absolute, since boot of the namespace).
fn nstat(ns: &str, name: &str) -> u64 {
    let out = ovnet_tests::Netns::borrowed(ns).exec("nstat", &["-az", name]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A host whose agent is dead keeps its kernel: its containers go on
/// sending to the others, which cannot answer (their entries toward it are
/// gone). Those answers used to wait in the others' ARP queues, and queued
/// they held up the kernel's other ICMP answers: pings between two live
/// hosts lost packets every few seconds (148 of 1648 in this test before
/// the fix). A host that is not alive is now cut off at the others' input
/// as well.
#[test]
fn a_dead_hosts_containers_do_not_disturb_the_live_hosts() {
    let ttl = 2;
    let mut lab = Lab::start(LabOptions { lease_ttl: ttl, ..Default::default() }).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    // Quick neighbour timers in the containers: an unanswered entry goes
    // from REACHABLE to INCOMPLETE within seconds instead of a minute, and
    // stays there (answers queued) for 10 s at a time instead of 3.
    for (ns, _) in &cs {
        let ns = ovnet_tests::Netns::borrowed(ns);
        ns.sysctl("net.ipv4.neigh.eth0.base_reachable_time_ms", "1000").unwrap();
        ns.sysctl("net.ipv4.neigh.eth0.delay_first_probe_time", "1").unwrap();
        ns.sysctl("net.ipv4.neigh.eth0.mcast_solicit", "10").unwrap();
    }
    let (c1, c2, c3) = (&cs[0], &cs[1], &cs[2]);
    // c1 (on h1) pings c2 and c3 all along; its agent dies.
    let zombie = [
        PingStream::start(&c1.0, &c2.1, EVERY_10MS, 3000).unwrap(),
        PingStream::start(&c1.0, &c3.1, EVERY_10MS, 3000).unwrap(),
    ];
    lab.kill_agent(0);
    let h1 = lab.hosts[0].ip.to_string();
    let cut = format!("ip saddr {h1} udp dport 4789");
    for i in [1, 2] {
        poll(&format!("h{} to cut h1 off", i + 1), Duration::from_secs(ttl + 5), || {
            let out = ovnet_tests::Netns::borrowed(&lab.hosts[i].ns.name)
                .exec("nft", &["list", "chain", "inet", "ovnet", "input"])
                .ok()?;
            String::from_utf8_lossy(&out.stdout).contains(&cut).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    }
    // 15 s of pings between the live hosts, both ways, while c1 goes on.
    let errors_before = [nstat(&c2.0, "IcmpOutErrors"), nstat(&c3.0, "IcmpOutErrors")];
    let live = [
        PingStream::start(&c2.0, &c3.1, EVERY_10MS, 1500).unwrap(),
        PingStream::start(&c3.0, &c2.1, EVERY_10MS, 1500).unwrap(),
    ];
    let mut tally = PingTally { sent: 0, received: 0, duplicates: 0 };
    for s in live {
        let t = s.finish().unwrap();
        assert_eq!(t.lost(), 0, "pings between the live hosts lost {} of {}", t.lost(), t.sent);
        tally.sent += t.sent;
        tally.received += t.received;
        tally.duplicates += t.duplicates;
    }
    let errors_after = [nstat(&c2.0, "IcmpOutErrors"), nstat(&c3.0, "IcmpOutErrors")];
    assert_eq!(errors_before, errors_after, "ICMP answers that could not be sent");
    drop(zombie);
    // h1 comes back: no longer cut off, its container answers again.
    lab.start_agent(0).unwrap();
    wait_ping(&lab, &c2.0, &c1.1);
    wait_ping(&lab, &c1.0, &c3.1);
    held(
        &lab,
        Row {
            category: "fault",
            test: "a_dead_hosts_containers_do_not_disturb_the_live_hosts",
            scenario: &format!(
                "h1's agent killed with a {ttl} s lease TTL while its container pings the others at 10 ms; then started again"
            ),
            held: "h2 and h3 cut h1 off (its VXLAN traffic dropped on arrival); 15 s of 10 ms pings between h2 and h3 lost nothing and no ICMP answer failed; back, h1 answered again",
        },
        Some(tally),
        2,
    );
}

#[test]
fn blocks_are_reclaimed_after_the_grace_and_host_rm_is_immediate() {
    let agents = AgentOptions { extra_args: vec!["--block-grace".into(), "4s".into()], ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { lease_ttl: 2, ..Default::default() }, agents).unwrap();
    lab.create_network(0, "-d overlay --subnet 10.60.0.0/24 --block-prefix 26 net").unwrap();
    let (c1, _) = lab.connected(0, "net", "c1").unwrap();
    let (_c2, ip2) = lab.connected(1, "net", "c2").unwrap();
    let (_c3, ip3) = lab.connected(2, "net", "c3").unwrap();
    wait_ping(&lab, &c1, &ip3);
    let held_by = |lab: &Lab, host: &str| -> usize {
        let needle = format!("\"host\":\"{host}\"");
        lab.etcd_dump()
            .map(|d| {
                d.iter()
                    .filter(|(k, v)| k.ends_with(&format!("/hosts/{host}")) || v.contains(&needle))
                    .count()
            })
            .unwrap_or(usize::MAX)
    };
    assert_eq!(held_by(&lab, "h3"), 3, "h3: registration, block, endpoint");
    lab.kill_agent(2);
    // After TTL + grace, etcd itself drops everything h3 held.
    poll("h3's reservation to run out", Duration::from_secs(20), || (held_by(&lab, "h3") == 0).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{:?}", lab.etcd_dump()));
    // Any host may now take h3's address (and its block).
    let c5 = lab.container("c5").unwrap();
    assert_eq!(lab.ctl(0, &format!("network connect --ip {ip3} net {c5}")).unwrap(), ip3);

    // host rm: refused while h2 is alive, immediate once its lease is gone.
    lab.kill_agent(1);
    let out = lab.ovctl(0, &["host", "rm", "h2"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("is alive"), "{stderr}");
    let removed = poll("host rm h2 once its lease ran out", Duration::from_secs(10), || {
        lab.ovctl_ok(0, &["host", "rm", "h2"]).ok()
    })
    .unwrap();
    assert_eq!(removed, "h2 (blocks: 1, endpoints: 1)");
    assert_eq!(held_by(&lab, "h2"), 0, "{:?}", lab.etcd_dump());
    assert!(!lab.ctl(0, "host ls").unwrap().contains("h2"));
    let c6 = lab.container("c6").unwrap();
    assert_eq!(lab.ctl(0, &format!("network connect --ip {ip2} net {c6}")).unwrap(), ip2);
    held(
        &lab,
        Row {
            category: "fault",
            test: "blocks_are_reclaimed_after_the_grace_and_host_rm_is_immediate",
            scenario: "block grace 4 s, lease TTL 2 s: h3's agent killed and left dead; h2's agent killed, then `ovctl host rm h2`",
            held: "h3's registration, block and endpoint vanished from etcd after the grace and h1 took its address; host rm refused while h2 was alive, then removed its 1 block and 1 endpoint at once and h1 took that address",
        },
        None,
        5,
    );
}

#[test]
fn a_dead_container_and_an_orphan_veth_are_cleaned_up() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let (c2, ip2) = cs[1].clone();
    let mac2 = mac_of(&ip2);
    lab.delete_container(&c2);
    poll("the dead container's address released", Duration::from_secs(15), || {
        (!lab.etcd_dump().ok()?.keys().any(|k| k.ends_with(&format!("/endpoints/net/{ip2}")))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    for i in [0, 2] {
        poll("its entries gone from the others", CONVERGE, || {
            (!lab.fdb(i).ok()?.iter().any(|e| e.contains(&mac2))).then_some(())
        })
        .unwrap();
    }
    // The address can be handed out again.
    let c7 = lab.container("c7").unwrap();
    assert_eq!(lab.ctl(1, &format!("network connect --ip {ip2} net {c7}")).unwrap(), ip2);
    wait_ping(&lab, &cs[0].0, &ip2);

    // A veth pair of ours that no endpoint owns (a connect cut short) is deleted.
    let h2 = &lab.hosts[1].ns;
    h2.ip(&["link", "add", "ovveorphan01", "type", "veth", "peer", "name", "ovtporphan01"]).unwrap();
    poll("the orphan veth deleted", Duration::from_secs(20), || {
        let links = lab.links(1).ok()?;
        (!links.iter().any(|l| l.contains("orphan01"))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    // The live containers' veths were left alone.
    wait_ping(&lab, &cs[0].0, &ip2);
    wait_ping(&lab, &cs[0].0, &cs[2].1);
    held(
        &lab,
        Row {
            category: "fault",
            test: "a_dead_container_and_an_orphan_veth_are_cleaned_up",
            scenario: "a container's namespace deleted without disconnect; a veth pair of ours without an endpoint left on a host",
            held: "the endpoint's address released and its entries removed on the other hosts, then handed out again; the orphan veth deleted; live containers untouched",
        },
        None,
        3,
    );
}

#[test]
fn a_network_removed_while_an_agent_was_down_is_removed_when_it_starts() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    lab.create_network(0, "-d overlay --vni 7007 gone").unwrap();
    lab.create_network(0, "-d overlay --vni 7008 kept").unwrap();
    lab.stop_agent(2).unwrap();
    lab.ctl(0, "network rm gone").unwrap();
    let links = lab.links(2).unwrap();
    assert!(links.contains(&"ovbr7007".to_string()), "nothing touches h3 while its agent is down");
    lab.start_agent(2).unwrap();
    poll("h3's devices of the removed network deleted", CONVERGE, || {
        let links = lab.links(2).ok()?;
        (!links.iter().any(|l| l.ends_with("7007")) && links.contains(&"ovbr7008".to_string())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    held(
        &lab,
        Row {
            category: "fault",
            test: "a_network_removed_while_an_agent_was_down_is_removed_when_it_starts",
            scenario: "h3's agent stopped; a network removed; the agent started again",
            held: "h3 deleted the removed network's bridge and VXLAN device at start and kept the other network's",
        },
        None,
        1,
    );
}

#[test]
fn a_compacted_watch_revision_triggers_a_full_resync() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let marks = log_marks(&lab);
    // h2 is frozen while etcd restarts (its watch stream dies unread), then
    // misses a change that etcd compacts away before h2 runs again.
    lab.pause_agent(1).unwrap();
    lab.etcd.restart().unwrap();
    let (_c4, ip4) = lab.connected(0, "net", "c4").unwrap();
    lab.etcd_compact().unwrap();
    lab.resume_agent(1).unwrap();
    poll("h2 to list again after the compaction", Duration::from_secs(15), || {
        logged_since(&lab, &marks, 1).contains("compacted; listing again").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    programmed_on(&lab, &[1], &mac_of(&ip4), CONVERGE);
    wait_ping(&lab, &cs[1].0, &ip4);
    held(
        &lab,
        Row {
            category: "fault",
            test: "a_compacted_watch_revision_triggers_a_full_resync",
            scenario: "h2's agent frozen while etcd restarts and a container is connected elsewhere, then etcd compacted",
            held: "h2's watch found its revision compacted, listed everything again and programmed the new container",
        },
        None,
        1,
    );
}

#[test]
fn bad_records_in_etcd_are_logged_and_skipped() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let cs = network_with_a_container_per_host(&mut lab, "net");
    let bad: [(&str, &[u8]); 7] = [
        ("networks/garbage", b"\xff\x00\xfe not json at all"),
        ("networks/future", br#"{"v":99,"id":"x","name":"future"}"#),
        ("networks/truncated", br#"{"v":1,"id":"0123456789abcdef","name":"trunc"#),
        ("endpoints/net/10.128.200.200", br#"{"v":1,"id":"e","network":"net","#),
        ("blocks/net/10.128.200.0_24", b"[]"),
        ("hosts/bogus", b"null"),
        ("alive/bogus", br#"{"v":1,"name":"bogus","vtep":"not an ip","started_at":0}"#),
    ];
    for (key, value) in bad {
        lab.etcd_put(key, value).unwrap();
    }
    for i in 0..3 {
        for (key, _) in bad {
            poll("the bad record logged with its key", CONVERGE, || {
                let log = lab.hosts[i].log();
                log.lines().any(|l| l.contains("invalid record") && l.contains(key)).then_some(())
            })
            .unwrap_or_else(|e| panic!("h{} {key}: {e}\n{}", i + 1, lab.logs()));
        }
    }
    // Everything else keeps working, from the watch cache and from fresh reads.
    let names = lab.ctl(0, "network ls").unwrap();
    assert!(names.contains("net"), "{names}");
    lab.create_network(1, "-d overlay after").unwrap();
    let (a1, _) = lab.connected(0, "after", "a1").unwrap();
    let (_a2, a2_ip) = lab.connected(1, "after", "a2").unwrap();
    wait_ping(&lab, &a1, &a2_ip);
    wait_ping(&lab, &cs[0].0, &cs[2].1);
    // A restarted agent lists the bad records again and carries on.
    lab.kill_agent(2);
    lab.start_agent(2).unwrap();
    let (_a3, a3_ip) = lab.connected(2, "after", "a3").unwrap();
    wait_ping(&lab, &a1, &a3_ip);
    lab.ctl(0, "network inspect net").unwrap();
    held(
        &lab,
        Row {
            category: "bad data",
            test: "bad_records_in_etcd_are_logged_and_skipped",
            scenario: "7 bad values under the prefix: garbage bytes, a future version, truncated JSON, wrong types, under networks/, endpoints/, blocks/, hosts/ and alive/",
            held: "every agent logged each bad key once and skipped it; network ls/inspect, a create, 3 connects and an agent restart worked; pings across hosts",
        },
        None,
        6,
    );
}
