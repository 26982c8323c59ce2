//! Which peers count as alive, with a short hold on vanished `alive/` keys.
//!
//! A host whose `alive/` key disappears is kept for [`HOLD`] before its
//! entries are removed. The design decision: etcd can delete every `alive/`
//! key at once and the agents re-register within a fraction of a second (an
//! etcd frozen past the lease TTL expires all leases when it resumes);
//! dropping and re-adding every remote entry in between would lose traffic
//! for nothing. A host that is really dead is still removed within the
//! lease TTL + [`HOLD`] + one pass. Pure: time is passed in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ovnet_ipam_store::AliveRecord;
use tokio::time::Instant;

/// How long a vanished `alive/` key still counts.
pub const HOLD: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Liveness {
    /// Peers alive in the last state seen, with their VTEPs.
    seen: BTreeMap<String, Ipv4Addr>,
    /// Peers whose key vanished: VTEP and when it vanished.
    held: BTreeMap<String, (Ipv4Addr, Instant)>,
}

impl Liveness {
    /// The peers (other than `me`) to program at `now`: alive in `alive`, or
    /// vanished from it less than [`HOLD`] ago.
    pub fn peers(
        &mut self,
        alive: &BTreeMap<String, AliveRecord>,
        me: &str,
        now: Instant,
    ) -> BTreeMap<String, Ipv4Addr> {
        let current: BTreeMap<String, Ipv4Addr> =
            alive.values().filter(|a| a.name != me).map(|a| (a.name.clone(), a.vtep)).collect();
        for (name, vtep) in &self.seen {
            if !current.contains_key(name) {
                self.held.entry(name.clone()).or_insert((*vtep, now));
            }
        }
        self.held.retain(|name, (_, since)| !current.contains_key(name) && now < *since + HOLD);
        self.seen = current.clone();
        let mut peers = current;
        for (name, (vtep, _)) in &self.held {
            peers.entry(name.clone()).or_insert(*vtep);
        }
        peers
    }

    /// When the next held peer runs out, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|(_, since)| *since + HOLD).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(names: &[(&str, u8)]) -> BTreeMap<String, AliveRecord> {
        names
            .iter()
            .map(|(n, i)| {
                (
                    n.to_string(),
                    AliveRecord { v: 1, name: n.to_string(), vtep: [192, 0, 2, *i].into(), started_at: 0 },
                )
            })
            .collect()
    }

    #[test]
    fn a_vanished_peer_is_held_then_dropped() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let p = l.peers(&alive(&[("h1", 1), ("h2", 2)]), "h1", t0);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["h2"], "never myself");
        assert_eq!(l.next_deadline(), None);
        let p = l.peers(&alive(&[("h1", 1)]), "h1", t0 + Duration::from_millis(100));
        assert_eq!(p.get("h2"), Some(&Ipv4Addr::new(192, 0, 2, 2)), "held");
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_millis(100) + HOLD));
        let p = l.peers(&alive(&[("h1", 1)]), "h1", t0 + Duration::from_millis(100) + HOLD);
        assert!(p.is_empty(), "dropped after the hold: {p:?}");
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn a_peer_back_within_the_hold_was_never_dropped() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        l.peers(&alive(&[("h2", 2)]), "h1", t0);
        assert!(l.peers(&alive(&[]), "h1", t0).contains_key("h2"));
        let p = l.peers(&alive(&[("h2", 9)]), "h1", t0 + Duration::from_millis(500));
        assert_eq!(p.get("h2"), Some(&Ipv4Addr::new(192, 0, 2, 9)), "its new VTEP");
        assert_eq!(l.next_deadline(), None);
        // A later loss starts a fresh hold.
        let t1 = t0 + Duration::from_secs(10);
        assert!(l.peers(&alive(&[]), "h1", t1).contains_key("h2"));
        assert_eq!(l.next_deadline(), Some(t1 + HOLD));
    }

    #[test]
    fn a_host_never_seen_alive_is_not_held() {
        let mut l = Liveness::default();
        assert!(l.peers(&alive(&[]), "h1", Instant::now()).is_empty());
    }
}
