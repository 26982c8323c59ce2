//! Races through the whole stack: many `ovctl` processes against the lab's
//! agents at the same moment, and pools that run out. Each test records its
//! outcome for the reliability report once its assertions passed.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Barrier;
use std::time::Duration;

use ipnet::Ipv4Net;
use ovnet_tests::lab::poll;
use ovnet_tests::report::record_race;
use ovnet_tests::{Lab, LabOptions};

/// Runs `ovctl` `n` times at once, the `i`th with `args(i)` against host
/// `i % hosts`; returns the outputs in order.
fn together(lab: &Lab, n: usize, args: impl Fn(usize) -> Vec<String> + Sync) -> Vec<Output> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..n)
            .map(|i| {
                let (start, args) = (&start, &args);
                s.spawn(move || {
                    let args = args(i);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    start.wait();
                    lab.ovctl(i % lab.hosts.len(), &args).expect("running ovctl")
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("an ovctl thread panicked")).collect()
    })
}

fn words(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// Keys of the lab's etcd under `<prefix>/<what>/`.
fn keys(lab: &Lab, what: &str) -> Vec<String> {
    let prefix = format!("{}/{what}/", lab.prefix);
    lab.etcd_dump().unwrap().into_keys().filter(|k| k.starts_with(&prefix)).collect()
}

fn race(lab: &Lab, test: &str, scenario: &str, held: &str, operations: usize, duplicates: usize) {
    assert_eq!(lab.panics(), 0, "an agent panicked:\n{}", lab.logs());
    record_race(test, scenario, held, operations, duplicates, lab.panics()).unwrap();
}

#[test]
fn sixty_four_creates_of_one_name_across_agents() {
    let lab = Lab::start(LabOptions::default()).unwrap();
    let outs = together(&lab, 64, |_| words("network create -d overlay same"));
    let won: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "successes: {:?}", won.iter().map(|o| &o.stdout).collect::<Vec<_>>());
    for lost in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(lost.status.code(), Some(1), "{}", stderr(lost));
        assert_eq!(stderr(lost), r#"ovctl: network "same" already exists"#);
    }
    assert_eq!(keys(&lab, "networks").len(), 1);
    assert_eq!(keys(&lab, "vnis").len(), 1);
    let id = String::from_utf8_lossy(&won[0].stdout).trim().to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(2, "network inspect same").unwrap()).unwrap();
    assert_eq!(inspect["id"], serde_json::Value::String(id), "the winner's network is the one in etcd");
    race(
        &lab,
        "sixty_four_creates_of_one_name_across_agents",
        "64 `ovctl network create same` at the same moment, spread over 3 agents",
        "exactly one succeeded; 63 exited 1 with `network \"same\" already exists`; etcd holds one network \
         and one VNI key, the winner's",
        64,
        won.len() - 1,
    );
}

#[test]
fn thirty_two_creates_without_subnet_across_agents() {
    let lab = Lab::start(LabOptions::default()).unwrap();
    let outs = together(&lab, 32, |i| words(&format!("network create -d overlay n{i}")));
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "create n{i}: {}", stderr(o));
    }
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&lab.ctl(0, "network ls --format json").unwrap()).unwrap();
    assert_eq!(listed.len(), 32);
    let vnis: BTreeSet<u64> = listed.iter().filter_map(|n| n["vni"].as_u64()).collect();
    let subnets: Vec<Ipv4Net> = listed.iter().filter_map(|n| n["subnet"].as_str()?.parse().ok()).collect();
    let mut overlapping = 0;
    for (i, a) in subnets.iter().enumerate() {
        overlapping +=
            subnets[i + 1..].iter().filter(|b| a.contains(&b.network()) || b.contains(&a.network())).count();
    }
    let duplicates = 32 - vnis.len() + overlapping;
    assert_eq!(duplicates, 0, "VNIs {vnis:?}, subnets {subnets:?}");
    assert_eq!(subnets.len(), 32);
    // Every host builds all 32: a bridge and a VXLAN device each.
    for h in 0..lab.hosts.len() {
        poll("every network's devices on every host", Duration::from_secs(30), || {
            (lab.links(h).ok()?.len() == 64).then_some(())
        })
        .unwrap();
    }
    race(
        &lab,
        "thirty_two_creates_without_subnet_across_agents",
        "32 `ovctl network create` of different networks without --subnet at the same moment, spread over 3 \
         agents",
        "all 32 created with 32 distinct VNIs and no two subnets overlapping; every host built all 64 devices",
        32,
        duplicates,
    );
}

/// `ovctl` on host `i` must fail with exit 1 and exactly `message`, with etcd unchanged.
fn exhausted(lab: &Lab, i: usize, command: &str, message: &str) {
    let before = lab.etcd_dump().unwrap();
    let out = lab.ovctl(i, &command.split_whitespace().collect::<Vec<_>>()).unwrap();
    assert_eq!(out.status.code(), Some(1), "ovctl {command}: {}", stderr(&out));
    assert_eq!(stderr(&out), format!("ovctl: {message}"));
    assert_eq!(lab.etcd_dump().unwrap(), before, "ovctl {command} wrote to etcd");
}

#[test]
fn pools_run_out_with_a_clear_error() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    // Subnets: one network holds the whole automatic pool.
    lab.create_network(0, "-d overlay --subnet 10.128.0.0/9 all").unwrap();
    exhausted(
        &lab,
        1,
        "network create -d overlay more",
        "no free subnet left in the address pool 10.128.0.0/9",
    );
    // Blocks and addresses: a /30 is one block with one address besides the gateway.
    lab.create_network(0, "-d overlay --subnet 10.85.0.0/30 tiny").unwrap();
    let (_c1, ip) = lab.connected(0, "tiny", "c1").unwrap();
    assert_eq!(ip, "10.85.0.2");
    let (c2, c3) = (lab.container("c2").unwrap(), lab.container("c3").unwrap());
    let full = r#"no free address left in network "tiny" (10.85.0.0/30)"#;
    exhausted(&lab, 1, &format!("network connect tiny {c2}"), full); // no block left for h2
    exhausted(&lab, 0, &format!("network connect tiny {c3}"), full); // no address left in h1's
    assert_eq!(keys(&lab, "blocks/tiny").len(), 1);
    race(
        &lab,
        "pools_run_out_with_a_clear_error",
        "the automatic subnet pool taken whole, then a create without --subnet; a /30 network full, then a \
         connect on the host owning its one block and on another host",
        "each refused with exit 1 and `no free subnet left in the address pool 10.128.0.0/9` or `no free \
         address left in network \"tiny\" (10.85.0.0/30)`, etcd unchanged (VNI exhaustion is a unit test: \
         16.7 million networks are out of reach)",
        3,
        0,
    );
}
