//! Issue #15's first finding: with a three-member etcd cluster, losing one
//! member (killed: the leader, or the first endpoint the agents were given;
//! or frozen) must not make a control-plane call fail while the other two
//! hold quorum. Each round breaks a member and at once runs `ovctl network
//! create` (reads, then a guarded transaction) on a host; it must succeed
//! within 5 s, and so must a `network connect` right after it. Before the fix, etcd-client's random balancing kept sending
//! requests to the broken member, and a request stalled there (a frozen
//! member, or etcd 3.4 dropping a read-index during the election) used up
//! the whole 4 s request timeout.

use std::time::{Duration, Instant};

use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

/// The control-plane promise under test: with quorum, an answer within 5 s.
const WITH_QUORUM: Duration = Duration::from_secs(5);

/// Times `ovctl network create NAME` on host `host`; the failure, if any.
fn create(lab: &Lab, host: usize, name: &str, broken: &str) -> Option<String> {
    let start = Instant::now();
    let out = lab.ovctl(host, &["network", "create", "-d", "overlay", name]).unwrap();
    let took = start.elapsed();
    (!out.status.success() || took > WITH_QUORUM).then(|| {
        format!(
            "{broken}: `network create {name}` on h{} took {took:?}: {}",
            host + 1,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Times `ovctl network connect net0 NETNS` on host `host` (ovchaos seed
/// 1796586899932911411: the allocation's transaction, sent to a follower
/// whose leader had just been killed, got no answer within the request
/// timeout; it is now sent again to the next member). The failure, if any.
fn connect(lab: &Lab, host: usize, netns: &str, broken: &str) -> Option<String> {
    let start = Instant::now();
    let out = lab.ovctl(host, &["network", "connect", "net0", netns]).unwrap();
    let took = start.elapsed();
    (!out.status.success() || took > WITH_QUORUM).then(|| {
        format!(
            "{broken}: `network connect net0 {netns}` on h{} took {took:?}: {}",
            host + 1,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn wait_for_leader(lab: &Lab) {
    poll("an etcd leader", Duration::from_secs(15), || lab.etcd_leader().ok()).unwrap();
}

#[test]
fn losing_one_etcd_member_of_three_never_fails_a_call() {
    let mut lab = Lab::start(LabOptions { hosts: 2, etcd_members: 3, ..Default::default() }).unwrap();
    lab.create_network(0, "-d overlay net0").unwrap();
    let mut failures = Vec::new();
    for r in 0..6 {
        // Alternate: the first endpoint every agent was given, then the leader.
        let victim = if r % 2 == 0 { 0 } else { lab.etcd_leader().unwrap() };
        let netns = lab.container(&format!("c{r}")).unwrap();
        lab.etcd_member(victim).stop();
        failures.extend(create(&lab, r % 2, &format!("killed{r}"), &format!("member {victim} killed")));
        failures.extend(connect(&lab, r % 2, &netns, &format!("member {victim} killed")));
        lab.etcd_member(victim).restart().unwrap();
        wait_for_leader(&lab);
    }
    assert!(failures.is_empty(), "with quorum, calls failed:\n{}\n{}", failures.join("\n"), lab.logs());
    assert_eq!(lab.panics(), 0, "an agent panicked:\n{}", lab.logs());
}

/// A frozen member keeps its connections open and answers nothing. When the
/// frozen one is the leader, a request sent to another member before the
/// election is stuck there too. Tries used to wait 1 s, 1.5 s, 2 s, one
/// member after the other, and on a loaded machine the third was often the
/// frozen member again: "reading networks: ... leader changed" after 4 s in
/// 2 of 5 runs beside two busy loops, and ovchaos seed 1796600384664797030
/// lost two connects that way. Now a read is hedged (a try every 600 ms
/// after the first second, earlier ones kept in flight) and a guarded
/// transaction is sent again every 600 ms: 9 of 9 runs beside two busy loops.
#[test]
fn a_frozen_etcd_member_never_fails_a_call() {
    let mut lab = Lab::start(LabOptions { hosts: 2, etcd_members: 3, ..Default::default() }).unwrap();
    lab.create_network(0, "-d overlay net0").unwrap();
    let mut failures = Vec::new();
    for victim in 0..3 {
        let netns: Vec<String> = (0..3).map(|k| lab.container(&format!("f{victim}-{k}")).unwrap()).collect();
        lab.etcd_member(victim).freeze().unwrap();
        for (k, netns) in netns.iter().enumerate() {
            let name = format!("frozen{victim}-{k}");
            let broken = format!("member {victim} frozen");
            failures.extend(create(&lab, k % 2, &name, &broken));
            failures.extend(connect(&lab, (k + 1) % 2, netns, &broken));
        }
        lab.etcd_member(victim).thaw().unwrap();
        wait_for_leader(&lab);
    }
    assert!(failures.is_empty(), "with quorum, calls failed:\n{}\n{}", failures.join("\n"), lab.logs());
    assert_eq!(lab.panics(), 0, "an agent panicked:\n{}", lab.logs());
}

/// ovchaos (an etcd member frozen, lease TTL 3 s): a lease renewal sent to
/// the frozen member waited the whole 4 s request timeout, the host's lease
/// ran out, and every other host dropped its entries (pings lost for 0.9 s
/// with quorum up). A renewal now moves on to the next member after 1 s.
/// (This lab does not reproduce the expiry reliably without the fix: it
/// guards the outcome.)
#[test]
#[ignore = "flaky under load: a frozen member can still outlast a 2 s lease (#15)"]
fn a_frozen_etcd_member_does_not_let_a_short_host_lease_expire() {
    use ovnet_tests::pings::PingStream;
    let opts = LabOptions { hosts: 2, etcd_members: 3, lease_ttl: 2 };
    let mut lab = Lab::start(opts).unwrap();
    lab.create_network(0, "-d overlay net").unwrap();
    let (c1, _) = lab.connected(0, "net", "c1").unwrap();
    let (_c2, ip2) = lab.connected(1, "net", "c2").unwrap();
    poll("c1 to ping c2", Duration::from_secs(10), || ovnet_tests::netns::ping(&c1, &ip2).then_some(()))
        .unwrap();
    let stream = PingStream::start(&c1, &ip2, Duration::from_millis(10), 1200).unwrap();
    // Whichever member an agent prefers, it is frozen once, past the TTL.
    for m in 0..3 {
        lab.etcd_member(m).freeze().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        lab.etcd_member(m).thaw().unwrap();
        poll("an etcd leader", Duration::from_secs(15), || lab.etcd_leader().ok()).unwrap();
    }
    let tally = stream.finish().unwrap();
    assert_eq!(tally.lost(), 0, "pings lost while one member of three was frozen:\n{}", lab.logs());
    assert_eq!(lab.panics(), 0);
}
