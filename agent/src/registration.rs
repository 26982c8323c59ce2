//! Registers this host in etcd and keeps its liveness key alive.
//!
//! `hosts/<name>` is the persistent registration; `alive/<name>` is attached
//! to an etcd lease refreshed every TTL/3. When the lease is gone (TTL 0 on a
//! keep-alive, e.g. after etcd was frozen or down longer than the TTL) a new
//! lease is granted and both keys are written again. The lease is never
//! revoked on shutdown: a restarting agent must not make peers drop the
//! entries toward its containers.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ovnet_ipam_store::{AliveRecord, EtcdStore, HostRecord};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Keeps this host registered until dropped. `registered` turns true after
/// the first successful registration.
pub async fn run(
    store: EtcdStore,
    node: String,
    vtep: Ipv4Addr,
    ttl: Duration,
    registered: watch::Sender<bool>,
    metrics: Metrics,
) {
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let started_at = unix_now();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        let lease = match register(&store, &node, vtep, ttl_secs, started_at).await {
            Ok(lease) => lease,
            Err(e) => {
                metrics.etcd_error();
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "registering host in etcd failed");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        metrics.etcd_ok();
        registered.send_replace(true);
        info!(node = %node, vtep = %vtep, lease, ttl = ttl_secs, "host registered");
        keep_alive(&store, lease, ttl, &metrics).await;
    }
}

async fn register(
    store: &EtcdStore,
    node: &str,
    vtep: Ipv4Addr,
    ttl: i64,
    started_at: u64,
) -> Result<i64, ovnet_ipam_store::Error> {
    let lease = store.grant_lease(ttl).await?;
    let host = HostRecord { v: 1, name: node.to_string(), vtep, registered_at: unix_now() };
    let alive = AliveRecord { v: 1, name: node.to_string(), vtep, started_at };
    store.register_host(&host, &alive, lease).await?;
    Ok(lease)
}

/// Returns when the lease is lost, so the caller registers again.
async fn keep_alive(store: &EtcdStore, lease: i64, ttl: Duration, metrics: &Metrics) {
    let period = (ttl / 3).max(Duration::from_millis(500));
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(period).await;
        match store.keep_alive_once(lease).await {
            Ok(0) => {
                warn!(lease, "etcd lease expired; registering again");
                return;
            }
            Ok(_) => {
                metrics.etcd_ok();
                failing_since = None;
            }
            Err(e) => {
                metrics.etcd_error();
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                warn!(error = %e, lease, "lease keep-alive failed");
                if since.elapsed() > ttl {
                    return;
                }
            }
        }
    }
}
