//! The reconcile loop: wake, observe, plan, apply, back off.
//!
//! Level-triggered: a new cluster snapshot or the periodic resync only wakes
//! the loop; each pass compares the whole desired state with the whole
//! observed kernel state, so whatever was missed or changed by hand is
//! repaired. After each pass it publishes the networks whose datapath is
//! built here, which `connect` waits for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ovnet_ipam_store::ClusterState;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::dataplane::Dataplane;
use crate::desired::{HostContext, desired};
use crate::model::LinkKind;
use crate::plan::plan;
use crate::watch::StateRx;

/// Names of the networks whose bridge and VXLAN device exist on this host.
pub type ReadyTx = watch::Sender<Arc<BTreeSet<String>>>;
pub type ReadyRx = watch::Receiver<Arc<BTreeSet<String>>>;

/// Runs until dropped.
pub async fn run<D: Dataplane>(
    dp: D,
    me: HostContext,
    mut state_rx: StateRx,
    ready: ReadyTx,
    resync: Duration,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut retry: Option<Duration> = None;
    let mut first = true;
    loop {
        let state = state_rx.borrow_and_update().clone();
        if let Some(state) = state {
            let (built, ok) = pass(&dp, &me, &state).await;
            if ok && first {
                info!(networks = built.len(), revision = state.revision, "datapath in sync with etcd");
                first = false;
            }
            ready.send_if_modified(|cur| {
                let changed = **cur != built;
                if changed {
                    *cur = Arc::new(built);
                }
                changed
            });
            if ok {
                backoff.reset();
                retry = None;
            } else {
                retry = Some(backoff.next_delay());
            }
        }
        tokio::select! {
            changed = state_rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(retry.unwrap_or(resync)) => debug!("periodic resync"),
        }
    }
}

/// One pass. Returns the networks whose datapath is built, and false when
/// something failed and the pass should be retried soon.
async fn pass<D: Dataplane>(dp: &D, me: &HostContext, state: &ClusterState) -> (BTreeSet<String>, bool) {
    let want = desired(state, me);
    let observed = match dp.observe().await {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "observing the kernel failed");
            return (BTreeSet::new(), false);
        }
    };
    let ops = plan(&want, &observed);
    for op in &ops {
        info!(revision = state.revision, "{op}");
    }
    let errors = if ops.is_empty() { Vec::new() } else { dp.apply(&ops).await };
    for e in &errors {
        warn!(error = %e, "kernel operation failed; will retry");
    }
    let observed = if errors.is_empty() { None } else { dp.observe().await.ok() };
    let built = want
        .networks
        .values()
        .filter(|n| match &observed {
            None => true,
            Some(o) => {
                o.links.get(&n.bridge.name).is_some_and(|l| l.kind == LinkKind::Bridge)
                    && o.links.contains_key(&n.vxlan.name)
            }
        })
        .map(|n| n.network.clone())
        .collect();
    (built, errors.is_empty())
}
