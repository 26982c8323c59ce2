//! The firewall table `inet ovnet` against the real kernel through `nft`
//! (needs root and the nftables package). Each test works in namespaces of
//! its own, removed by a guard even when it fails.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ovnet_agent::dataplane::{Dataplane, NetlinkDataplane};
use ovnet_agent::model::{Firewall, FirewallState, Outbound, Published};
use ovnet_agent::op::Op;
use ovnet_ipam_store::Proto;

/// A namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("ovfw{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        sh(&format!("ip netns add {name}"));
        Netns(name)
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from("/run/netns").join(&self.0)
    }

    /// `nft ARGS` inside, which must succeed; returns stdout.
    fn nft(&self, args: &str) -> String {
        sh(&format!("ip netns exec {} nft {args}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("running sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fw(bridges: &[&str]) -> Firewall {
    Firewall { isolated: bridges.iter().map(|b| b.to_string()).collect(), ..Firewall::default() }
}

const RULE_4096: &str =
    r#"iifname "ovbr4096" oifname "ovbr*" oifname != "ovbr4096" counter packets 0 bytes 0 drop"#;

#[tokio::test]
async fn the_table_is_written_whole_read_back_and_others_are_left_alone() {
    let ns = Netns::new();
    ns.nft("add table inet mine");
    ns.nft("'add chain inet mine c { type filter hook forward priority 10; policy accept; }'");
    ns.nft("add rule inet mine c iifname lo accept");
    let mine = ns.nft("list table inet mine");
    let dp = NetlinkDataplane::in_netns(&ns.path()).await.expect("dataplane");
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Missing);

    let errors = dp.apply(&[Op::SyncFirewall { firewall: fw(&["ovbr4096", "ovbr4097"]) }]).await;
    assert!(errors.is_empty(), "{errors:?}");
    let listed = ns.nft("list table inet ovnet");
    assert!(listed.contains("type filter hook forward priority filter; policy accept;"), "{listed}");
    assert!(listed.contains(RULE_4096), "{listed}");
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(fw(&["ovbr4096", "ovbr4097"])));

    // Rewritten whole, to a smaller set; the other table is as it was.
    assert!(dp.apply(&[Op::SyncFirewall { firewall: fw(&["ovbr4096"]) }]).await.is_empty());
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(fw(&["ovbr4096"])));
    assert_eq!(ns.nft("list table inet mine"), mine);

    // Hand edits: an extra rule is seen; a deleted table is seen by a fresh
    // read, while the cached view still vouches for what was written.
    ns.nft("add rule inet ovnet forward iifname lo accept");
    assert!(matches!(dp.observe().await.unwrap().firewall, FirewallState::Altered(_)));
    assert!(dp.apply(&[Op::SyncFirewall { firewall: fw(&["ovbr4096"]) }]).await.is_empty());
    ns.nft("delete table inet ovnet");
    assert_eq!(dp.observe_cached().await.unwrap().firewall, FirewallState::Rules(fw(&["ovbr4096"])));
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Missing);
    assert_eq!(ns.nft("list table inet mine"), mine);
}

#[tokio::test]
async fn the_logged_command_makes_the_same_table() {
    let (by_json, by_shell) = (Netns::new(), Netns::new());
    let op = Op::SyncFirewall { firewall: fw(&["ovbr4096", "ovbr5000"]) };
    let dp = NetlinkDataplane::in_netns(&by_json.path()).await.expect("dataplane");
    assert!(dp.apply(std::slice::from_ref(&op)).await.is_empty());
    // The log line, replayed by an operator, twice (it replaces, so it is idempotent).
    for _ in 0..2 {
        sh(&format!("ip netns exec {} {op}", by_shell.0));
    }
    let listing = |ns: &Netns| ns.nft("list table inet ovnet");
    assert_eq!(listing(&by_shell), listing(&by_json));
    let dp = NetlinkDataplane::in_netns(&by_shell.path()).await.expect("dataplane");
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(fw(&["ovbr4096", "ovbr5000"])));
}

/// A table of 5,000 rules (NAT and published ports will multiply them) is
/// one transaction too big for default socket buffers: it is written, read
/// back and compared.
#[tokio::test]
async fn a_table_of_5000_rules_is_written_and_read_back() {
    let ns = Netns::new();
    let dp = NetlinkDataplane::in_netns(&ns.path()).await.expect("dataplane");
    let names: Vec<String> = (0..5_000).map(|i| format!("ovbr{}", 4096 + i)).collect();
    let big = Firewall { isolated: names.iter().cloned().collect(), ..Firewall::default() };
    let errors = dp.apply(&[Op::SyncFirewall { firewall: big.clone() }]).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(big));
    let listed = ns.nft("list table inet ovnet");
    assert_eq!(listed.matches(" drop").count(), 5_000);
    // Written again whole (the old table deleted in the same transaction).
    let fewer = Firewall { isolated: names[..10].iter().cloned().collect(), ..Firewall::default() };
    assert!(dp.apply(&[Op::SyncFirewall { firewall: fewer.clone() }]).await.is_empty());
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(fewer));
}

/// Internal networks, masquerade and published ports: written, read back
/// as written, listed by `nft` as the logged command makes them, and a
/// published port's rule deleted by hand is seen.
#[tokio::test]
async fn nat_rules_are_written_read_back_and_match_the_logged_command() {
    let (by_netlink, by_shell) = (Netns::new(), Netns::new());
    let p = Published {
        proto: Proto::Tcp,
        host_ip: "172.30.0.11".parse().unwrap(),
        host_port: 8080,
        ip: "10.1.0.2".parse().unwrap(),
        port: 80,
    };
    let nat = Firewall {
        internal: ["ovbr4097".to_string()].into(),
        outbound: [Outbound { bridge: "ovbr4096".into(), subnet: "10.1.0.0/16".parse().unwrap() }].into(),
        published: [p, Published { proto: Proto::Udp, host_port: 5353, port: 53, ..p }].into(),
        guard: ovnet_agent::model::Guard {
            ports: [2379, 7070].into(),
            addrs: ["172.30.0.254:2379".parse().unwrap(), "172.30.0.12:7070".parse().unwrap()].into(),
        },
        cut: ["172.30.0.13".parse().unwrap()].into(),
        ..fw(&["ovbr4096", "ovbr4097"])
    };
    let op = Op::SyncFirewall { firewall: nat.clone() };
    let dp = NetlinkDataplane::in_netns(&by_netlink.path()).await.expect("dataplane");
    let errors = dp.apply(std::slice::from_ref(&op)).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(dp.observe().await.unwrap().firewall, FirewallState::Rules(nat.clone()));
    sh(&format!("ip netns exec {} {op}", by_shell.0));
    let listing = by_netlink.nft("list table inet ovnet");
    assert_eq!(by_shell.nft("list table inet ovnet"), listing);
    for want in [
        "ip daddr 172.30.0.11 tcp dport 8080 counter packets 0 bytes 0 dnat ip to 10.1.0.2:80",
        "ip saddr 10.1.0.0/16 oifname != \"ovbr4096\" counter packets 0 bytes 0 masquerade",
        "oifname \"ovbr4097\" iifname != \"ovbr4097\" counter packets 0 bytes 0 drop",
        "iifname \"ovbr*\" ip daddr 172.30.0.254 tcp dport 2379 counter packets 0 bytes 0 drop",
        "iifname \"ovbr*\" tcp dport 7070 counter packets 0 bytes 0 drop",
        "ip saddr 172.30.0.13 udp dport 4789 counter packets 0 bytes 0 drop",
    ] {
        assert!(listing.contains(want), "{want} not in {listing}");
    }
    let shell = NetlinkDataplane::in_netns(&by_shell.path()).await.expect("dataplane");
    assert_eq!(shell.observe().await.unwrap().firewall, FirewallState::Rules(nat));

    // One DNAT rule deleted by hand: the table is no longer ours.
    let handles = by_netlink.nft("-a list chain inet ovnet prerouting");
    let line = handles.lines().find(|l| l.contains("dport 8080")).expect("the rule");
    let handle = line.rsplit(' ').next().unwrap();
    by_netlink.nft(&format!("delete rule inet ovnet prerouting handle {handle}"));
    match dp.observe().await.unwrap().firewall {
        FirewallState::Altered(why) => {
            assert!(why.contains("lacks the rules ip daddr 172.30.0.11 tcp dport 8080"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
