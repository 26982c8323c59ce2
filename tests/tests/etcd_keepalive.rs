//! An idle agent keeps its etcd watch. etcd refuses HTTP/2 pings sent more
//! often than its `--grpc-keepalive-min-time` (5 s by default) on a
//! connection that carries nothing else, and closes it after a few
//! ("too many pings"). With the agent's keep-alive at 2 s, every idle agent's
//! watch broke about every 8 s ("etcd watch interrupted ... h2 protocol
//! error") and was opened again: each time a window in which the agent's
//! view did not move. The keep-alive is now 6 s.

use std::time::Duration;

use ovnet_tests::{Lab, LabOptions};

#[test]
fn an_idle_agent_keeps_its_etcd_watch() {
    let lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "idle"]).unwrap();
    // Nothing happens for 20 s: before the fix, two or three breaks.
    std::thread::sleep(Duration::from_secs(20));
    let log = lab.hosts[0].log();
    let breaks: Vec<&str> = log.lines().filter(|l| l.contains("etcd watch interrupted")).collect();
    assert!(
        breaks.is_empty(),
        "the watch of an idle agent broke {} times:\n{}",
        breaks.len(),
        breaks.join("\n")
    );
}
