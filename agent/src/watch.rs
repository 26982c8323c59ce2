//! Keeps a local copy of every key under the prefix, fed by one etcd watch,
//! and publishes a parsed `ClusterState` after each change.
//!
//! The copy is listed once, then kept current by watching from the listed
//! revision + 1. When the watch breaks it resumes from the last revision it
//! saw; when etcd says that revision was compacted, it lists again (flannel's
//! `LeaseWatcher.Reset`). Consumers only see whole snapshots, never events;
//! each carries the instant its newest change was received, so the reconcile
//! loop can measure how long that change took to reach the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ovnet_ipam_store::{ClusterState, EtcdStore, WatchEvent};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// One published view of the cluster.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub state: Arc<ClusterState>,
    /// When the listing or watch batch that produced it arrived.
    pub received: Instant,
}

impl Snapshot {
    pub fn new(state: ClusterState) -> Self {
        Snapshot { state: Arc::new(state), received: Instant::now() }
    }
}

/// The published view: `None` until the first listing succeeded.
pub type StateRx = watch::Receiver<Option<Snapshot>>;
pub type StateTx = watch::Sender<Option<Snapshot>>;

#[derive(Default)]
struct Cache {
    revision: i64,
    kvs: BTreeMap<String, Vec<u8>>,
    /// Keys whose bad value was already logged, so each is logged once.
    bad: BTreeSet<String>,
}

impl Cache {
    fn publish(&mut self, store: &EtcdStore, tx: &StateTx) {
        let received = Instant::now();
        let kvs = self.kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        let (state, bad) = ClusterState::from_kvs(store.keys(), self.revision, kvs);
        let now: BTreeSet<String> = bad.iter().map(|b| b.key.clone()).collect();
        for b in bad.iter().filter(|b| !self.bad.contains(&b.key)) {
            warn!(key = %b.key, reason = %b.reason, "skipping invalid record in etcd");
        }
        self.bad = now;
        tx.send_replace(Some(Snapshot { state: Arc::new(state), received }));
    }
}

/// Runs until the task is dropped; never returns an error, it retries.
pub async fn run(store: EtcdStore, tx: StateTx, metrics: Metrics) {
    let mut cache = Cache::default();
    let mut relist = true;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    loop {
        match follow(&store, &tx, &mut cache, &mut relist, &mut backoff, &metrics).await {
            Err(ovnet_ipam_store::Error::Compacted { compact_revision }) => {
                info!(revision = cache.revision, compact_revision, "watch revision compacted; listing again");
                relist = true;
            }
            Err(e) => {
                metrics.etcd_error();
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "etcd watch interrupted");
                tokio::time::sleep(delay).await;
            }
            Ok(()) => {}
        }
    }
}

async fn follow(
    store: &EtcdStore,
    tx: &StateTx,
    cache: &mut Cache,
    relist: &mut bool,
    backoff: &mut Backoff,
    metrics: &Metrics,
) -> Result<(), ovnet_ipam_store::Error> {
    if *relist {
        let (revision, kvs) = store.snapshot().await?;
        metrics.etcd_ok();
        cache.revision = revision;
        cache.kvs = kvs.into_iter().collect();
        *relist = false;
        cache.publish(store, tx);
    }
    let mut w = store.watch(cache.revision + 1).await?;
    while let Some(batch) = w.next().await? {
        backoff.reset();
        metrics.etcd_ok();
        if batch.events.is_empty() {
            continue; // progress notification
        }
        for ev in batch.events {
            match ev {
                WatchEvent::Put { key, value } => {
                    cache.kvs.insert(key, value);
                }
                WatchEvent::Delete { key } => {
                    cache.kvs.remove(&key);
                }
            }
        }
        cache.revision = cache.revision.max(batch.revision);
        cache.publish(store, tx);
    }
    Err(ovnet_ipam_store::Error::EtcdUnavailable("etcd watch stream ended".into()))
}
