//! The invariants of a chaos run over snapshots: pure functions from what
//! was observed (etcd's records, an `ovctl` call's outcome, loss windows) to
//! the violations found, each a sentence with its evidence.
//!
//! The design decision: nothing here talks to a process or a kernel, so every
//! rule is unit-tested on hand-made snapshots, and the runner only gathers.

use std::collections::BTreeMap;
use std::time::Duration;

use ovnet_ipam_store::keys::Keys;
use ovnet_ipam_store::state::ClusterState;

/// The control-plane promise: an answer within this long.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Decodes a dump of the prefix (bad records are skipped, as the agents do).
pub fn state_of(prefix: &str, dump: &BTreeMap<String, String>) -> ClusterState {
    let keys = Keys::new(prefix);
    ClusterState::from_kvs(&keys, 0, dump.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))).0
}

/// Allocation: no subnet, VNI, block or address held twice, every endpoint
/// inside a block of its own host.
pub fn allocation(state: &ClusterState) -> Vec<String> {
    let mut v = Vec::new();
    let nets: Vec<_> = state.networks.values().collect();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if a.vni == b.vni {
                v.push(format!("VNI {} held by networks {:?} and {:?}", a.vni, a.name, b.name));
            }
            if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network()) {
                v.push(format!("subnets overlap: {:?} {} and {:?} {}", a.name, a.subnet, b.name, b.subnet));
            }
        }
    }
    let blocks: Vec<_> = state.all_blocks().collect();
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[i + 1..] {
            let overlap = a.cidr.contains(&b.cidr.network()) || b.cidr.contains(&a.cidr.network());
            if a.network == b.network && overlap {
                v.push(format!(
                    "blocks overlap in {:?}: {} ({}) and {} ({})",
                    a.network, a.cidr, a.host, b.cidr, b.host
                ));
            }
        }
    }
    let mut netns_seen: BTreeMap<(&str, &str, &str), std::net::Ipv4Addr> = BTreeMap::new();
    for e in state.all_endpoints() {
        let owner = blocks.iter().find(|b| b.network == e.network && b.cidr.contains(&e.ip));
        match owner {
            None => {
                v.push(format!("endpoint {} in {:?} (host {}) lies in no block", e.ip, e.network, e.host))
            }
            Some(b) if b.host != e.host => v.push(format!(
                "endpoint {} in {:?} belongs to host {} but its block {} belongs to {}",
                e.ip, e.network, e.host, b.cidr, b.host
            )),
            Some(_) => {}
        }
        if let Some(other) = netns_seen.insert((&e.host, &e.network, &e.netns), e.ip) {
            v.push(format!(
                "namespace {} on {} holds two addresses in {:?}: {other} and {}",
                e.netns, e.host, e.network, e.ip
            ));
        }
    }
    v
}

/// No leak: at the end etcd holds only host records (`hosts/`, `alive/`).
pub fn leftovers(prefix: &str, dump: &BTreeMap<String, String>) -> Vec<String> {
    let keys = Keys::new(prefix);
    let (hosts, alive) = (keys.hosts_prefix(), keys.alive_prefix());
    dump.keys()
        .filter(|k| !k.starts_with(&hosts) && !k.starts_with(&alive))
        .map(|k| format!("left in etcd: {k}"))
        .collect()
}

/// The rules of an `nft list ruleset` that name one of our bridges
/// (`ovbr4096`): what a removed network may leave behind. Rules that name
/// them all by the wildcard `"ovbr*"` stand for the host, not a network,
/// and stay by design (the agent's `DOCKER-USER` accept rules on a host
/// with Docker, the DNS server's `inet ovnet_dns` table).
pub fn ovbr_rules(ruleset: &str) -> Vec<String> {
    let mut chain = "";
    let mut found = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim();
            continue;
        }
        let names_one = line
            .match_indices("ovbr")
            .any(|(i, _)| line[i + "ovbr".len()..].chars().next().is_some_and(|c| c.is_ascii_digit()));
        if names_one {
            found.push(format!("{line} (chain {chain})"));
        }
    }
    found
}

/// How one `ovctl` call ended.
#[derive(Clone, Debug)]
pub struct Call {
    pub ok: bool,
    pub took: Duration,
    pub stderr: String,
    /// Whether an etcd quorum was up for the whole call, for none of it, or
    /// changed during it (None).
    pub quorum: Option<bool>,
}

/// What a call's outcome means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    /// Failed for a reason of its own (the name exists, the address is taken).
    OwnReason,
    /// Failed, rightly, because etcd had no quorum.
    Unreachable,
    Violation(String),
}

/// Failures that are the request's own fault, not the cluster's.
const OWN_REASONS: [&str; 9] = [
    "already exists",
    "is already used",
    "not found",
    "still in use",
    "is already connected",
    "is not connected",
    "which belongs to host",
    "no free",
    "is alive",
];

/// The control-plane rule for one call.
pub fn judge(call: &Call) -> Verdict {
    if call.took > ANSWER_WITHIN {
        return Verdict::Violation(format!(
            "no answer within {ANSWER_WITHIN:?} (took {:.1?}): {}",
            call.took,
            call.stderr.trim()
        ));
    }
    if call.ok {
        return Verdict::Succeeded;
    }
    let unreachable = call.stderr.contains("etcd is unreachable");
    if OWN_REASONS.iter().any(|r| call.stderr.contains(r)) && !unreachable {
        return Verdict::OwnReason;
    }
    match call.quorum {
        Some(true) => Verdict::Violation(format!("failed with an etcd quorum up: {}", call.stderr.trim())),
        Some(false) if !unreachable => {
            Verdict::Violation(format!("without quorum, failed without saying so: {}", call.stderr.trim()))
        }
        _ => Verdict::Unreachable,
    }
}

/// A stretch of lost pings between two replies.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    pub from_host: usize,
    pub to_host: usize,
    pub lost: u64,
    /// Seconds since the start: the last reply before, the first after.
    pub start: f64,
    pub end: f64,
}

/// A host dead by design from `start` to `end` seconds (end: after it was
/// back and had time to converge).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeadWindow {
    pub host: usize,
    pub start: f64,
    pub end: f64,
}

/// Whether a loss is excused: it overlaps a window in which its source or
/// destination host was dead by design.
pub fn excused(loss: &Loss, dead: &[DeadWindow]) -> bool {
    dead.iter().any(|d| {
        (d.host == loss.from_host || d.host == loss.to_host) && loss.start < d.end && d.start < loss.end
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "/c";

    fn dump(entries: &[(&str, serde_json::Value)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (format!("{P}/{k}"), v.to_string())).collect()
    }

    fn net(name: &str, subnet: &str, vni: u32) -> (String, serde_json::Value) {
        let gw = subnet.replace(".0/16", ".1").replace(".0/24", ".1");
        (
            format!("networks/{name}"),
            json!({"v":1,"id":"x","name":name,"driver":"overlay","subnet":subnet,"gateway":gw,
                   "vni":vni,"mtu":1450,"block_prefix":26,"created_at":0}),
        )
    }

    fn block(net: &str, cidr: &str, host: &str) -> (String, serde_json::Value) {
        (
            format!("blocks/{net}/{}", cidr.replace("/", "_")),
            json!({"v":1,"network":net,"cidr":cidr,"host":host}),
        )
    }

    fn ep(net: &str, ip: &str, host: &str, netns: &str) -> (String, serde_json::Value) {
        (
            format!("endpoints/{net}/{ip}"),
            json!({"v":1,"id":"e","network":net,"host":host,"netns":netns,"ip":ip,
                   "mac":"02:42:0a:00:00:02","ifname":"eth0","host_ifname":"ovve1","created_at":0}),
        )
    }

    fn state(entries: Vec<(String, serde_json::Value)>) -> ClusterState {
        let d: BTreeMap<String, String> =
            entries.into_iter().map(|(k, v)| (format!("{P}/{k}"), v.to_string())).collect();
        state_of(P, &d)
    }

    #[test]
    fn a_clean_cluster_has_no_allocation_violation() {
        let s = state(vec![
            net("a", "10.1.0.0/16", 4096),
            net("b", "10.2.0.0/16", 4097),
            block("a", "10.1.0.0/26", "h1"),
            block("a", "10.1.0.64/26", "h2"),
            ep("a", "10.1.0.2", "h1", "/run/netns/c1"),
            ep("a", "10.1.0.66", "h2", "/run/netns/c2"),
        ]);
        assert_eq!(s.networks.len(), 2, "the fixtures must decode");
        assert_eq!(s.all_endpoints().count(), 2, "the fixtures must decode");
        assert!(allocation(&s).is_empty(), "{:?}", allocation(&s));
    }

    #[test]
    fn double_holdings_and_foreign_blocks_are_violations() {
        let s = state(vec![
            net("a", "10.1.0.0/16", 4096),
            net("b", "10.1.0.0/24", 4096),
            block("a", "10.1.0.0/26", "h1"),
            ep("a", "10.1.0.2", "h2", "/run/netns/c1"),
            ep("a", "10.1.1.9", "h1", "/run/netns/c1"),
        ]);
        let v = allocation(&s).join("\n");
        assert!(v.contains("VNI 4096 held by networks"), "{v}");
        assert!(v.contains("subnets overlap"), "{v}");
        assert!(v.contains("belongs to host h2 but its block 10.1.0.0/26 belongs to h1"), "{v}");
        assert!(v.contains("10.1.1.9 in \"a\" (host h1) lies in no block"), "{v}");
    }

    #[test]
    fn only_host_records_may_be_left() {
        let d = dump(&[("hosts/h1", json!({})), ("alive/h1", json!({})), ("networks/x", json!({}))]);
        assert_eq!(leftovers(P, &d), vec![format!("left in etcd: {P}/networks/x")]);
    }

    #[test]
    fn only_rules_naming_one_bridge_are_left_behind() {
        let standing = r#"table ip filter {
	chain DOCKER-USER {
		iifname "ovbr*" oifname "ovbr*"  counter packets 62636 bytes 5261072 accept
		oifname "ovbr*" ct status dnat  counter packets 63114 bytes 5301576 accept
		counter packets 9 bytes 756 return
	}
}
table inet ovnet_dns {
	chain output {
		oifname "ovbr*" icmp type destination-unreachable icmp code port-unreachable @th,240,16 0x35 drop
	}
}"#;
        assert_eq!(ovbr_rules(standing), Vec::<String>::new());
        let left = r#"table inet ovnet {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "ovbr4096" oifname "ovbr*" oifname != "ovbr4096" counter packets 0 bytes 0 drop
	}
}"#;
        let found = ovbr_rules(&format!("{standing}\n{left}"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(r#"iifname "ovbr4096""#) && found[0].ends_with("(chain forward)"));
    }

    #[test]
    fn calls_are_judged_by_quorum_time_and_reason() {
        let call = |ok, ms, stderr: &str, quorum| Call {
            ok,
            took: Duration::from_millis(ms),
            stderr: stderr.into(),
            quorum,
        };
        let unreachable = "ovctl: etcd is unreachable: reading networks: no answer";
        assert_eq!(judge(&call(true, 900, "", Some(true))), Verdict::Succeeded);
        assert!(matches!(judge(&call(true, 5100, "", Some(true))), Verdict::Violation(_)));
        assert_eq!(judge(&call(false, 10, "network \"a\" already exists", Some(true))), Verdict::OwnReason);
        let foreign = "address 10.1.3.1 lies in block 10.1.3.0/24, which belongs to host \"h3\"";
        assert_eq!(judge(&call(false, 10, foreign, Some(true))), Verdict::OwnReason);
        let gone = "namespace x is not connected to network a on host h3";
        assert_eq!(judge(&call(false, 10, gone, Some(true))), Verdict::OwnReason);
        assert!(matches!(judge(&call(false, 4000, unreachable, Some(true))), Verdict::Violation(_)));
        assert_eq!(judge(&call(false, 4000, unreachable, Some(false))), Verdict::Unreachable);
        assert_eq!(judge(&call(false, 4000, unreachable, None)), Verdict::Unreachable);
        assert!(matches!(judge(&call(false, 4000, "internal error", Some(false))), Verdict::Violation(_)));
        assert!(matches!(judge(&call(false, 9000, unreachable, Some(false))), Verdict::Violation(_)));
    }

    #[test]
    fn loss_is_excused_only_around_a_dead_host() {
        let dead = [DeadWindow { host: 2, start: 10.0, end: 20.0 }];
        let loss = |from_host, to_host, start, end| Loss { from_host, to_host, lost: 5, start, end };
        assert!(excused(&loss(0, 2, 12.0, 13.0), &dead));
        assert!(excused(&loss(2, 1, 19.0, 21.0), &dead));
        assert!(!excused(&loss(0, 1, 12.0, 13.0), &dead));
        assert!(!excused(&loss(0, 2, 21.0, 22.0), &dead));
    }
}
