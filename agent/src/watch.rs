//! Keeps a decoded copy of every record under the prefix, fed by one etcd
//! watch, and publishes it as a `ClusterState` after each change.
//!
//! The copy is listed once, then kept current by watching from the listed
//! revision + 1; only the keys a watch batch names are decoded, and the
//! published state is copied only when a reader still holds the previous one.
//! When the watch breaks it resumes after the last event it applied (a
//! batch's revision is its last event's, never the response header's, which
//! etcd stamps with the current revision while it is still catching a
//! watcher up); when etcd says that revision was compacted, it lists again (flannel's
//! `LeaseWatcher.Reset`). Consumers only see whole snapshots, never events;
//! each carries the instant its newest change was received, so the reconcile
//! loop can measure how long that change took to reach the kernel.

use std::collections::BTreeSet;
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
    state: Arc<ClusterState>,
    /// Keys whose value is bad, each logged once until it changes.
    bad: BTreeSet<String>,
}

impl Cache {
    /// Replaces everything with a fresh listing.
    fn reset(&mut self, store: &EtcdStore, revision: i64, kvs: Vec<(String, Vec<u8>)>) {
        let kvs = kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        let (state, bad) = ClusterState::from_kvs(store.keys(), revision, kvs);
        self.state = Arc::new(state);
        let before = std::mem::take(&mut self.bad);
        for b in bad {
            if !before.contains(&b.key) {
                warn!(key = %b.key, reason = %b.reason, "skipping invalid record in etcd");
            }
            self.bad.insert(b.key);
        }
    }

    /// Applies one watched change, decoding only its key.
    fn apply(&mut self, store: &EtcdStore, key: &str, value: Option<&[u8]>) {
        let state = Arc::make_mut(&mut self.state);
        match state.apply(store.keys(), key, value) {
            Ok(()) => {
                self.bad.remove(key);
            }
            Err(b) => {
                if self.bad.insert(b.key.clone()) {
                    warn!(key = %b.key, reason = %b.reason, "skipping invalid record in etcd");
                }
            }
        }
    }

    fn publish(&self, tx: &StateTx, received: Instant) {
        tx.send_replace(Some(Snapshot { state: self.state.clone(), received }));
    }
}

/// Runs until the task is dropped; never returns an error, it retries.
pub async fn run(store: EtcdStore, tx: StateTx, metrics: Metrics) {
    let mut cache = Cache::default();
    let mut relist = true;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        match follow(&store, &tx, &mut cache, &mut relist, &mut backoff, &metrics).await {
            Err(ovnet_ipam_store::Error::Compacted { compact_revision }) => {
                info!(
                    revision = cache.state.revision,
                    compact_revision, "watch revision compacted; listing again"
                );
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
        let received = Instant::now();
        metrics.etcd_ok();
        cache.reset(store, revision, kvs);
        *relist = false;
        cache.publish(tx, received);
    }
    let from = cache.state.revision + 1;
    let mut w = store.watch(from).await?;
    info!(revision = from, "watching etcd from revision");
    while let Some(batch) = w.next().await? {
        let received = Instant::now();
        backoff.reset();
        metrics.etcd_ok();
        if batch.events.is_empty() {
            // A progress notification: nothing changed up to its revision.
            let state = Arc::make_mut(&mut cache.state);
            state.revision = state.revision.max(batch.revision);
            continue;
        }
        for ev in &batch.events {
            match ev {
                WatchEvent::Put { key, value } => cache.apply(store, key, Some(value)),
                WatchEvent::Delete { key } => cache.apply(store, key, None),
            }
        }
        let state = Arc::make_mut(&mut cache.state);
        state.revision = state.revision.max(batch.revision);
        cache.publish(tx, received);
    }
    Err(ovnet_ipam_store::Error::EtcdUnavailable("etcd watch stream ended".into()))
}
