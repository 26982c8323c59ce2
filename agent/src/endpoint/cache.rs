//! Connect's and disconnect's pre-checks served from the watch cache.
//!
//! Reading every endpoint of a network from etcd made each call cost as much
//! as the network is large (and fail past etcd-client's message limit). The
//! cache holds the same records. The design decision: before trusting it, a
//! call waits until the cache shows this agent's own earlier writes (the
//! endpoints it connected are there, those it disconnected gone), since
//! connect and disconnect of this host are the only writers of this host's
//! endpoints; when the cache does not catch up within [`CATCH_UP`], the call
//! asks etcd, as before. Other hosts' records may lag: the claim's
//! transaction guards against that (see `ovnet_ipam_store::store::cached`).

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use ovnet_ipam_store::{EndpointRecord, NetworkRecord};

use super::Endpoints;
use crate::dataplane::Dataplane;
use crate::error::AgentError;
use crate::watch::{Snapshot, StateRx};

/// How long a call waits for the cache to show this agent's own writes: the
/// watch shows them within milliseconds; a cache that lags longer has lost
/// etcd, and the etcd read after it must still fit in the 5 s a call may
/// take (chaos finding: 2 s here plus a 4 s read failed calls in 6 s).
const CATCH_UP: Duration = Duration::from_millis(500);

/// One write of this agent the cache must show before it is trusted.
#[derive(Clone, Debug)]
struct Written {
    network: String,
    ip: Ipv4Addr,
    present: bool,
}

pub(super) struct Cache {
    state: StateRx,
    pending: Mutex<Vec<Written>>,
}

impl Cache {
    pub(super) fn new(state: StateRx) -> Cache {
        Cache { state, pending: Mutex::new(Vec::new()) }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Written>> {
        // Only pushed to and cleared: a poisoned lock still holds a valid list.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn shows(snap: &Snapshot, w: &Written) -> bool {
    let there = snap.state.endpoint_map(&w.network).is_some_and(|m| m.contains_key(&w.ip));
    there == w.present
}

impl<D: Dataplane> Endpoints<D> {
    /// The cache, once it shows this agent's own writes; `None` without a
    /// cache or when it does not catch up in time (then ask etcd).
    pub(super) async fn cached(&self) -> Option<Snapshot> {
        let cache = self.cache.as_ref()?;
        let pending = cache.pending().clone();
        let mut rx = cache.state.clone();
        let caught_up = tokio::time::timeout(
            CATCH_UP,
            rx.wait_for(|s| s.as_ref().is_some_and(|s| pending.iter().all(|w| shows(s, w)))),
        )
        .await;
        // Either way these writes need no more waiting: the cache showed
        // them, or this call asks etcd (and so may the next ones).
        let mut now = cache.pending();
        let seen = pending.len().min(now.len());
        now.drain(..seen);
        drop(now);
        match caught_up {
            Ok(Ok(snap)) => snap.clone(),
            _ => None,
        }
    }

    /// Notes a write of an endpoint of this host, which the cache must show
    /// before it is used again.
    pub(super) fn wrote(&self, network: &str, ip: Ipv4Addr, present: bool) {
        if let Some(cache) = &self.cache {
            cache.pending().push(Written { network: network.to_string(), ip, present });
        }
    }

    /// A network and its endpoints: from the cache when it can be trusted,
    /// else read from etcd.
    pub(super) async fn endpoints_of(
        &self,
        network: &str,
    ) -> Result<(NetworkRecord, Vec<EndpointRecord>), AgentError> {
        if let Some(snap) = self.cached().await
            && let Some(net) = snap.state.networks.get(network)
        {
            let eps = snap.state.endpoints_of(network).cloned().collect();
            return Ok((net.clone(), eps));
        }
        Ok(self.store.network_endpoints(network).await?)
    }
}
