//! Finds what connect/disconnect left behind: endpoints of this host whose
//! veth is gone (the container's namespace was deleted without a
//! disconnect), and veths of ours that no endpoint record names (an agent
//! killed in the middle of a connect).
//!
//! The design decision: nothing is cleaned on one sighting. A connect or
//! disconnect in progress is skipped by name (`busy`), and a finding must
//! last [`DEAD_AFTER`] / [`ORPHAN_AFTER`] across passes, so the short gap
//! between a finished connect and its record reaching the watch cache is
//! never mistaken for a leak. Pure: time is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ovnet_ipam_store::EndpointRecord;
use tokio::time::Instant;

use crate::local::Local;
use crate::model::{DEVICE_PREFIX, LinkKind, Observed, veth_temp_name};

/// How long an endpoint must lack its veth before its address is released.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);
/// How long a veth must lack an endpoint record before it is deleted.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(5);
/// How soon a release that did not take effect is asked for again.
const RESEND_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Leaks {
    /// Endpoint (by veth name) -> first seen without its veth, last release asked.
    dead: BTreeMap<String, (Instant, Option<Instant>)>,
    /// Veth name -> first seen without a record.
    orphans: BTreeMap<String, Instant>,
}

/// What to clean now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Endpoint records to release in etcd.
    pub release: Vec<EndpointRecord>,
    /// Veths to delete.
    pub delete: Vec<String>,
}

impl Leaks {
    /// Compares this host's endpoint records with its veths at `now`.
    pub fn update(
        &mut self,
        local: &Local,
        observed: &Observed,
        busy: &BTreeSet<String>,
        now: Instant,
    ) -> Found {
        let mine: BTreeMap<&str, &EndpointRecord> =
            local.records().map(|e| (e.host_ifname.as_str(), e)).collect();
        let mut found = Found::default();

        // Docker endpoints are Docker's to free (ReleaseAddress), and exist
        // without a veth between the address and CreateEndpoint.
        let dead_now: BTreeMap<&str, &EndpointRecord> = mine
            .iter()
            .filter(|(_, e)| !is_docker(e))
            .filter(|(name, _)| !observed.links.contains_key(**name) && !busy.contains(**name))
            .map(|(n, e)| (*n, *e))
            .collect();
        self.dead.retain(|name, _| dead_now.contains_key(name.as_str()));
        for (name, ep) in dead_now {
            let (since, asked) = self.dead.entry(name.to_string()).or_insert((now, None));
            let due = asked.is_none_or(|t| now >= t + RESEND_AFTER);
            if now >= *since + DEAD_AFTER && due {
                *asked = Some(now);
                found.release.push(ep.clone());
            }
        }

        // The container end of a Docker veth waits on the host for Docker to move it.
        let waiting: BTreeSet<String> =
            local.records().filter(|e| is_docker(e)).map(|e| veth_temp_name(&e.id)).collect();
        let veth = format!("{DEVICE_PREFIX}ve");
        let temp = format!("{DEVICE_PREFIX}tp");
        let orphans_now: BTreeSet<&str> = observed
            .links
            .values()
            .filter(|l| l.kind == LinkKind::Veth && (l.name.starts_with(&veth) || l.name.starts_with(&temp)))
            .map(|l| l.name.as_str())
            .filter(|n| !mine.contains_key(n) && !busy.contains(*n) && !waiting.contains(*n))
            .collect();
        self.orphans.retain(|name, _| orphans_now.contains(name.as_str()));
        for name in orphans_now {
            let since = *self.orphans.entry(name.to_string()).or_insert(now);
            if now >= since + ORPHAN_AFTER {
                found.delete.push(name.to_string());
            }
        }
        found
    }

    /// When a pending finding becomes due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let dead = self.dead.values().map(|(since, asked)| match asked {
            None => *since + DEAD_AFTER,
            Some(t) => *t + RESEND_AFTER,
        });
        let orphans = self.orphans.values().map(|since| *since + ORPHAN_AFTER);
        dead.chain(orphans).min()
    }
}

/// An endpoint Docker asked for: Docker frees it, the leak finder does not.
fn is_docker(e: &EndpointRecord) -> bool {
    e.container.as_ref().is_some_and(|c| c.runtime == "docker")
}

/// Veth names a connect or disconnect is working on right now, shared
/// between the API and the reconcile loop.
#[derive(Clone, Debug, Default)]
pub struct Busy(Arc<Mutex<BTreeSet<String>>>);

/// Removes its names from [`Busy`] when dropped.
pub struct BusyGuard {
    busy: Busy,
    names: Vec<String>,
}

impl Busy {
    fn set(&self) -> MutexGuard<'_, BTreeSet<String>> {
        // The set stays consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `names` busy until the guard is dropped.
    pub fn hold(&self, names: &[String]) -> BusyGuard {
        self.set().extend(names.iter().cloned());
        BusyGuard { busy: self.clone(), names: names.to_vec() }
    }

    /// The names busy now.
    pub fn names(&self) -> BTreeSet<String> {
        self.set().clone()
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut set = self.busy.set();
        for n in &self.names {
            set.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use ovnet_ipam_store::ClusterState;

    use super::*;
    use crate::model::ObservedLink;
    use crate::testutil::endpoint;

    fn veth(name: &str) -> ObservedLink {
        ObservedLink {
            name: name.into(),
            index: 1,
            kind: LinkKind::Veth,
            mtu: 1450,
            mac: None,
            up: true,
            master: None,
            addrs: BTreeSet::new(),
        }
    }

    fn observed(names: &[&str]) -> Observed {
        Observed { links: names.iter().map(|n| (n.to_string(), veth(n))).collect(), ..Default::default() }
    }

    /// h1's endpoints, as h1 sees them.
    fn state() -> (Local, String) {
        let mut s = ClusterState::default();
        let e = endpoint("blue", "h1", [10, 128, 0, 2]);
        let name = e.host_ifname.clone();
        s.insert_endpoint(e);
        s.insert_endpoint(endpoint("blue", "h2", [10, 128, 1, 2]));
        (Local::of(&s, "h1"), name)
    }

    #[test]
    fn an_endpoint_without_its_veth_is_released_after_the_wait_once() {
        let (s, name) = state();
        let mut l = Leaks::default();
        let t0 = Instant::now();
        let none = BTreeSet::new();
        assert_eq!(l.update(&s, &observed(&[]), &none, t0), Found::default());
        assert_eq!(l.next_deadline(), Some(t0 + DEAD_AFTER));
        let f = l.update(&s, &observed(&[]), &none, t0 + DEAD_AFTER);
        assert_eq!(f.release.len(), 1);
        assert_eq!(f.release[0].host_ifname, name);
        assert!(l.update(&s, &observed(&[]), &none, t0 + DEAD_AFTER).release.is_empty(), "asked once");
        let later = t0 + DEAD_AFTER + RESEND_AFTER;
        assert_eq!(l.update(&s, &observed(&[]), &none, later).release.len(), 1, "asked again");
    }

    #[test]
    fn a_veth_that_comes_back_or_is_busy_is_not_a_leak() {
        let (s, name) = state();
        let mut l = Leaks::default();
        let t0 = Instant::now();
        let none = BTreeSet::new();
        l.update(&s, &observed(&[]), &none, t0);
        l.update(&s, &observed(&[&name]), &none, t0 + Duration::from_millis(10));
        assert_eq!(l.update(&s, &observed(&[]), &none, t0 + DEAD_AFTER), Found::default(), "clock restarted");
        let busy = BTreeSet::from([name.clone()]);
        let mut l = Leaks::default();
        l.update(&s, &observed(&[]), &busy, t0);
        assert_eq!(l.update(&s, &observed(&[]), &busy, t0 + DEAD_AFTER * 5), Found::default());
    }

    #[test]
    fn a_veth_without_a_record_is_deleted_after_the_wait() {
        let (s, name) = state();
        let mut l = Leaks::default();
        let t0 = Instant::now();
        let none = BTreeSet::new();
        let links = observed(&[&name, "ovveorphan", "ovtpleft", "ovbr4096"]);
        assert!(l.update(&s, &links, &none, t0).delete.is_empty());
        let mut f = l.update(&s, &links, &none, t0 + ORPHAN_AFTER).delete;
        f.sort();
        assert_eq!(f, ["ovtpleft", "ovveorphan"], "only veths of ours without a record");
        // Another host's endpoint record does not own a veth here.
        assert!(!f.iter().any(|n| n == &name));
    }

    #[test]
    fn docker_endpoints_are_never_leaks() {
        let mut s = ClusterState::default();
        let mut e = endpoint("blue", "h1", [10, 128, 0, 2]);
        e.container = Some(ovnet_ipam_store::ContainerRef { runtime: "docker".into(), ..Default::default() });
        let temp = veth_temp_name(&e.id);
        s.insert_endpoint(e);
        let local = Local::of(&s, "h1");
        let (mut l, t0, none) = (Leaks::default(), Instant::now(), BTreeSet::new());
        let links = observed(&[&temp]);
        l.update(&local, &links, &none, t0);
        let later = t0 + DEAD_AFTER + ORPHAN_AFTER;
        assert_eq!(l.update(&local, &links, &none, later), Found::default(), "no veth yet, its peer waits");
    }

    #[test]
    fn busy_names_last_as_long_as_their_guard() {
        let busy = Busy::default();
        let g = busy.hold(&["ovvea".to_string(), "ovtpa".to_string()]);
        let _h = busy.hold(&["ovveb".to_string()]);
        assert_eq!(busy.names().len(), 3);
        drop(g);
        assert_eq!(busy.names(), BTreeSet::from(["ovveb".to_string()]));
    }
}
