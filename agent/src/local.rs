//! This host's endpoint records, kept across passes.
//!
//! The loop needs them on every pass (to find leaks, and to count local and
//! remote endpoints for the metrics), and at scale they are a few among tens
//! of thousands. A network's endpoint map is shared between snapshots until
//! it changes, so [`Local::update`] scans only the networks whose map is not
//! the one it scanned before. Pure: [`Local::of`] computes the same from
//! scratch.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ovnet_ipam_store::{ClusterState, EndpointMap, EndpointRecord};

#[derive(Debug, Default)]
pub struct Local {
    node: String,
    /// By network: the endpoint map scanned, and the addresses in it of this
    /// host's endpoints (none: the network is still remembered, so it is not
    /// scanned again).
    networks: BTreeMap<String, (Arc<EndpointMap>, Vec<Ipv4Addr>)>,
    /// Endpoints of every network, this host's or not.
    total: usize,
    /// This host's among them.
    count: usize,
}

impl Local {
    /// This host's endpoints in `state`, found from scratch.
    pub fn of(state: &ClusterState, node: &str) -> Local {
        let mut l = Local::default();
        l.update(state, node);
        l
    }

    /// Catches up with `state`, scanning only the networks whose endpoint
    /// map changed since the last update.
    pub fn update(&mut self, state: &ClusterState, node: &str) {
        if self.node != node {
            self.node = node.to_string();
            self.networks.clear();
        }
        self.networks.retain(|name, (map, _)| state.endpoints.get(name).is_some_and(|m| Arc::ptr_eq(m, map)));
        for (name, map) in &state.endpoints {
            if !self.networks.contains_key(name) {
                let mine = map.values().filter(|e| e.host == node).map(|e| e.ip).collect();
                self.networks.insert(name.clone(), (map.clone(), mine));
            }
        }
        self.total = self.networks.values().map(|(map, _)| map.len()).sum();
        self.count = self.networks.values().map(|(_, mine)| mine.len()).sum();
    }

    /// This host's endpoints, by network and address.
    pub fn records(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.networks
            .values()
            .flat_map(|(map, mine)| mine.iter().filter_map(|ip| map.get(ip)).map(Arc::as_ref))
    }

    /// How many of the endpoints are this host's.
    pub fn count(&self) -> usize {
        self.count
    }

    /// How many endpoints are on other hosts.
    pub fn remote(&self) -> usize {
        self.total - self.count
    }
}

#[cfg(test)]
mod tests {
    use ovnet_ipam_store::Keys;

    use super::*;
    use crate::testutil::endpoint;

    fn ips(l: &Local) -> Vec<Ipv4Addr> {
        l.records().map(|e| e.ip).collect()
    }

    #[test]
    fn follows_changes_like_a_fresh_scan() {
        let mut s = ClusterState::default();
        s.insert_endpoint(endpoint("blue", "h1", [10, 128, 0, 2]));
        s.insert_endpoint(endpoint("blue", "h2", [10, 128, 1, 2]));
        s.insert_endpoint(endpoint("red", "h2", [10, 129, 1, 2]));
        let mut l = Local::default();
        l.update(&s, "h1");
        assert_eq!(ips(&l), [Ipv4Addr::new(10, 128, 0, 2)]);
        assert_eq!((l.count(), l.remote()), (1, 2));

        s.insert_endpoint(endpoint("red", "h1", [10, 129, 0, 3]));
        s.insert_endpoint(endpoint("green", "h1", [10, 130, 0, 4]));
        let mut removed = s.clone();
        removed.apply(&Keys::new("/x"), "/x/endpoints/blue/10.128.0.2", None).unwrap();
        for state in [&s, &removed] {
            l.update(state, "h1");
            let fresh = Local::of(state, "h1");
            assert_eq!(ips(&l), ips(&fresh));
            assert_eq!((l.count(), l.remote()), (fresh.count(), fresh.remote()));
        }
        assert_eq!(ips(&l), [Ipv4Addr::new(10, 130, 0, 4), Ipv4Addr::new(10, 129, 0, 3)]);
        assert_eq!((l.count(), l.remote()), (2, 2));

        l.update(&s, "h2");
        assert_eq!(ips(&l), ips(&Local::of(&s, "h2")), "another node: scanned afresh");
    }
}
