//! The reconcile loop: wake, observe, plan, apply, back off.
//!
//! Level-triggered: a new cluster snapshot, a netlink notification about our
//! devices or the periodic resync only wakes the loop; each pass compares the
//! whole desired state with the whole observed kernel state, so whatever was
//! missed or changed by hand is repaired. Passes woken by etcd or netlink
//! may take the FDB and neighbour entries from the dataplane's view kept by
//! its notifications (`observe_cached`); the resync and retries read the
//! kernel in full, so whatever that view missed is repaired there at the
//! latest. What woke a pass decides how its ops count: after a new snapshot
//! they are etcd's changes (timed from the snapshot's arrival), after a
//! netlink event or a resync they are drift corrections. After each pass it
//! publishes the networks whose datapath is built AND isolated here, which
//! `connect` waits for: a network whose firewall rule could not be written
//! is not ready (fail closed), and the write's error says why.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ovnet_ipam_store::{ClusterState, EndpointRecord};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::dataplane::{Changes, Dataplane, DataplaneError};
use crate::desired::{HostContext, Memo, desired_memo};
use crate::leaks::{Busy, Leaks};
use crate::liveness::Liveness;
use crate::local::Local;
use crate::metrics::{Metrics, Trigger};
use crate::model::{Desired, FirewallState, LinkKind, Published};
use crate::op::Op;
use crate::plan::plan;
use crate::watch::{Snapshot, StateRx};

/// What `connect` may use on this host: the networks whose bridge and
/// VXLAN device exist AND whose isolation rules are in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub built: BTreeSet<String>,
    /// Why the firewall table could not be written, while it cannot: the
    /// networks it would isolate are not ready.
    pub isolation_error: Option<String>,
    /// The published ports the kernel forwards.
    pub forwarded: BTreeSet<Published>,
}

impl Ready {
    pub fn contains(&self, network: &str) -> bool {
        self.built.contains(network)
    }
}

pub type ReadyTx = watch::Sender<Arc<Ready>>;
pub type ReadyRx = watch::Receiver<Arc<Ready>>;

/// What the loop needs besides its inputs.
pub struct Loop<D: Dataplane> {
    pub dp: D,
    pub me: HostContext,
    pub ready: ReadyTx,
    pub resync: Duration,
    pub metrics: Metrics,
    /// Veths a connect or disconnect is working on; never cleaned as leaks.
    pub busy: Busy,
    /// Where endpoints whose container died are sent to be released in etcd.
    pub releases: Option<mpsc::UnboundedSender<EndpointRecord>>,
}

/// Runs until the state channel closes or the task is dropped.
pub async fn run<D: Dataplane>(l: Loop<D>, mut state_rx: StateRx) {
    let changes = match l.dp.changes().await {
        Ok(c) => Some(c),
        Err(e) => {
            l.metrics.netlink_errors(1);
            warn!(error = %e, "cannot subscribe to netlink events; drift is repaired at the next resync");
            None
        }
    };
    let mut r = Runner {
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
        retry: None,
        first: true,
        pending: None,
        changes,
        liveness: Liveness::default(),
        leaks: Leaks::default(),
        memo: Memo::default(),
        local: Local::default(),
        l,
    };
    let mut trigger = Trigger::Etcd;
    loop {
        // A snapshot that arrived while something else woke the loop is etcd's.
        if state_rx.has_changed().unwrap_or(false) {
            trigger = Trigger::Etcd;
        }
        let snapshot = state_rx.borrow_and_update().clone();
        if let Some(snap) = snapshot {
            r.pass(trigger, &snap).await;
        }
        let wake_at = r.wake_at();
        trigger = tokio::select! {
            changed = state_rx.changed() => match changed {
                Ok(()) => Trigger::Etcd,
                Err(_) => return,
            },
            () = next_change(&mut r.changes) => {
                debug!("netlink event");
                Trigger::Netlink
            }
            _ = tokio::time::sleep(r.retry.unwrap_or(r.l.resync)) => if r.retry.is_some() {
                Trigger::Retry
            } else {
                debug!("periodic resync");
                Trigger::Resync
            },
            // A held peer runs out or a leak is due: a full pass.
            _ = sleep_until(wake_at) => Trigger::Resync,
        };
    }
}

/// The loop's state between passes.
struct Runner<D: Dataplane> {
    l: Loop<D>,
    changes: Option<Changes>,
    backoff: Backoff,
    /// Set after a failed pass: when to try again.
    retry: Option<Duration>,
    first: bool,
    /// Arrival of the oldest etcd change whose kernel changes are not applied yet.
    pending: Option<Instant>,
    liveness: Liveness,
    leaks: Leaks,
    /// Each network's desired datapath from the last pass.
    memo: Memo,
    /// This host's endpoints in the last snapshot.
    local: Local,
}

impl<D: Dataplane> Runner<D> {
    /// When a held peer or a pending leak needs another pass.
    fn wake_at(&self) -> Option<Instant> {
        match (self.liveness.next_deadline(), self.leaks.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One pass over `snap`, woken by `trigger`, with its bookkeeping.
    async fn pass(&mut self, trigger: Trigger, snap: &Snapshot) {
        let l = &self.l;
        self.local.update(&snap.state, &l.me.node);
        if trigger == Trigger::Etcd {
            l.metrics.cluster(&snap.state, &self.local);
            self.pending.get_or_insert(snap.received);
        }
        let started = Instant::now();
        // The periodic resync and retries read the whole kernel; other passes
        // may take the FDB and neighbour entries from the netlink view.
        let fresh = matches!(trigger, Trigger::Resync | Trigger::Retry);
        let mut memory = Memory {
            liveness: &mut self.liveness,
            leaks: &mut self.leaks,
            memo: &mut self.memo,
            local: &self.local,
        };
        let outcome = pass(l, &snap.state, fresh, &mut memory).await;
        l.metrics.pass(trigger, started.elapsed());
        let (trigger_name, ops, took) = (trigger.as_str(), outcome.ops.len(), started.elapsed());
        debug!(trigger = trigger_name, ops, ?took, "reconcile pass");
        if outcome.ok {
            account(&l.metrics, trigger, &outcome.ops, self.pending.take());
            if self.first {
                let (networks, revision) = (outcome.ready.built.len(), snap.state.revision);
                info!(networks, revision, "datapath in sync with etcd");
                l.metrics.synced();
                self.first = false;
            }
            self.backoff.reset();
            self.retry = None;
        } else {
            self.retry = Some(self.backoff.next_delay());
        }
        l.metrics.isolation(outcome.ready.isolation_error.clone());
        l.ready.send_if_modified(|cur| {
            let changed = **cur != outcome.ready;
            if changed {
                *cur = Arc::new(outcome.ready);
            }
            changed
        });
    }
}

/// Counts a successful pass's ops: the time since the etcd change that asked
/// for them, or, when no etcd change was pending and a netlink event or the
/// resync found work, drift corrections.
fn account(metrics: &Metrics, trigger: Trigger, ops: &[Op], pending: Option<Instant>) {
    if ops.is_empty() {
        return;
    }
    match pending {
        Some(since) => metrics.event_to_kernel(since.elapsed()),
        None if matches!(trigger, Trigger::Netlink | Trigger::Resync) => {
            for op in ops {
                metrics.drift(op);
            }
        }
        None => {}
    }
}

/// Sleeps until `at`; never completes for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next netlink wake-up; never completes once the subscription is gone.
async fn next_change(changes: &mut Option<Changes>) {
    if let Some(c) = changes {
        if c.next().await.is_some() {
            return;
        }
        warn!("netlink event subscription ended; drift is repaired at the next resync");
        *changes = None;
    }
    std::future::pending::<()>().await
}

struct Outcome {
    /// Networks whose datapath is built and isolated.
    ready: Ready,
    /// The ops the pass applied (or tried to).
    ops: Vec<Op>,
    /// False when something failed and the pass should be retried soon.
    ok: bool,
}

/// What a pass takes from and leaves for the passes after it.
struct Memory<'a> {
    liveness: &'a mut Liveness,
    leaks: &'a mut Leaks,
    memo: &'a mut Memo,
    /// Already caught up with the pass's state.
    local: &'a Local,
}

async fn pass<D: Dataplane>(l: &Loop<D>, state: &ClusterState, fresh: bool, m: &mut Memory<'_>) -> Outcome {
    let now = Instant::now();
    let peers = m.liveness.peers(&state.alive, &l.me.node, now);
    let want = desired_memo(state, &l.me, &peers, m.memo);
    debug!(computed = m.memo.computed(), networks = want.networks.len(), "desired datapath");
    let observed = if fresh { l.dp.observe().await } else { l.dp.observe_cached().await };
    let observed = match observed {
        Ok(o) => o,
        Err(e) => {
            l.metrics.netlink_errors(1);
            warn!(error = %e, "observing the kernel failed");
            return Outcome { ready: Ready::default(), ops: Vec::new(), ok: false };
        }
    };
    let mut ops = plan(&want, &observed);
    let found = m.leaks.update(m.local, &observed, &l.busy.names(), now);
    for ep in found.release {
        info!(network = %ep.network, ip = %ep.ip, netns = %ep.netns, veth = %ep.host_ifname,
            "the endpoint's veth is gone (its namespace was deleted); releasing its address");
        if let Some(tx) = &l.releases {
            let _ = tx.send(ep);
        }
    }
    for name in found.delete {
        info!(veth = %name, "no endpoint owns this veth (a connect was interrupted); deleting it");
        ops.push(Op::DeleteLink { name });
    }
    for op in &ops {
        info!(revision = state.revision, "{op}");
    }
    let errors = if ops.is_empty() { Vec::new() } else { l.dp.apply(&ops).await };
    l.metrics.netlink_errors(errors.len());
    for e in &errors {
        warn!(error = %e, "kernel operation failed; will retry");
    }
    let isolation_error = errors.iter().find_map(|e| match e {
        DataplaneError::Firewall(why) => Some(why.clone()),
        _ => None,
    });
    let forwarded = match errors.is_empty() {
        true => want.firewall().published,
        false => match l.dp.observe_cached().await.map(|o| o.firewall) {
            Ok(FirewallState::Rules(fw)) => fw.published,
            _ => BTreeSet::new(),
        },
    };
    let ready = Ready { built: ready_networks(l, &want, &errors).await, isolation_error, forwarded };
    Outcome { ready, ops, ok: errors.is_empty() }
}

/// The networks of `want` that are built and isolated: all of them after a
/// pass without errors; otherwise those whose devices AND firewall rule the
/// kernel shows (fail closed: a bridge without its rule is not ready).
async fn ready_networks<D: Dataplane>(
    l: &Loop<D>,
    want: &Desired,
    errors: &[DataplaneError],
) -> BTreeSet<String> {
    if errors.is_empty() {
        return want.networks.values().map(|n| n.network.clone()).collect();
    }
    let Ok(o) = l.dp.observe_cached().await else {
        return BTreeSet::new();
    };
    let isolated = |bridge: &str| match &o.firewall {
        FirewallState::Rules(fw) => fw.isolated.contains(bridge),
        _ => false,
    };
    want.networks
        .values()
        .filter(|n| {
            o.links.get(&n.bridge.name).is_some_and(|l| l.kind == LinkKind::Bridge)
                && n.overlay().is_none_or(|ov| o.links.contains_key(&ov.vxlan.name))
                && isolated(&n.bridge.name)
        })
        .map(|n| n.network.clone())
        .collect()
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
