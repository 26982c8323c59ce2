//! The loop against the fake dataplane, in paused time: what wakes it, and
//! how its passes are counted.

use std::sync::Arc;
use std::time::Duration;

use ovnet_ipam_store::{ClusterState, Mac};

use super::*;
use crate::dataplane::FakeDataplane;
use crate::metrics::sample;
use crate::model::FdbEntry;
use crate::testutil::{cluster, me};
use crate::watch::Snapshot;

const RESYNC: Duration = Duration::from_secs(30);

struct Harness {
    dp: FakeDataplane,
    metrics: Metrics,
    state_tx: watch::Sender<Option<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start() -> Harness {
        let dp = FakeDataplane::default();
        let metrics = Metrics::new();
        let (state_tx, state_rx) = watch::channel(None);
        let (ready, _) = watch::channel(Arc::new(Ready::default()));
        let l = Loop {
            dp: dp.clone(),
            me: me(),
            ready,
            resync: RESYNC,
            metrics: metrics.clone(),
            busy: Default::default(),
            releases: None,
        };
        let task = tokio::spawn(run(l, state_rx));
        Harness { dp, metrics, state_tx, task }
    }

    fn publish(&self, state: ClusterState) {
        self.state_tx.send_replace(Some(Snapshot::new(state)));
    }

    fn value(&self, series: &str) -> f64 {
        sample(&self.metrics.encode(), series).unwrap_or(0.0)
    }

    /// Waits (in paused time, 10 ms at a time, 100 s at most) until `series` reaches `want`.
    async fn wait_for(&self, series: &str, want: f64) {
        for _ in 0..10_000 {
            if self.value(series) >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{series} never reached {want}:\n{}", self.metrics.encode());
    }
}

fn flood_to_h2() -> FdbEntry {
    FdbEntry { mac: Mac::ZERO, dst: [192, 0, 2, 2].into() }
}

#[tokio::test(start_paused = true)]
async fn an_etcd_change_is_timed_not_counted_as_drift() {
    let h = Harness::start();
    h.publish(cluster());
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"etcd\"}", 1.0).await;
    assert!(h.dp.snapshot().links.contains_key("ovvx4096"));
    assert_eq!(h.value("ovnet_event_to_kernel_seconds_count"), 1.0);
    assert_eq!(h.value("ovnet_networks"), 1.0);
    assert_eq!(h.value("ovnet_endpoints{location=\"remote\"}"), 1.0);
    assert_eq!(h.value("ovnet_endpoints{location=\"local\"}"), 0.0);
    assert!(!h.metrics.encode().contains("ovnet_drift_corrections_total{"), "no drift yet");
    assert_eq!(h.metrics.readiness().unwrap_err(), "etcd is not reachable", "the first pass is done");

    // A snapshot that changes nothing here applies nothing and times nothing.
    let mut s = cluster();
    s.revision += 1;
    h.publish(s);
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"etcd\"}", 2.0).await;
    assert_eq!(h.value("ovnet_event_to_kernel_seconds_count"), 1.0);
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn drift_announced_by_netlink_is_repaired_at_once_and_counted() {
    let h = Harness::start();
    h.publish(cluster());
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"etcd\"}", 1.0).await;
    let started = tokio::time::Instant::now();
    h.dp.tamper(|o| {
        o.fdb.get_mut("ovvx4096").unwrap().remove(&flood_to_h2());
    });
    h.wait_for("ovnet_drift_corrections_total{op=\"add_fdb\"}", 1.0).await;
    assert!(started.elapsed() < RESYNC, "woken by the event, not the resync");
    assert!(h.dp.snapshot().fdb["ovvx4096"].contains(&flood_to_h2()));
    assert_eq!(h.value("ovnet_reconcile_passes_total{trigger=\"netlink\"}"), 1.0);
    assert_eq!(h.value("ovnet_event_to_kernel_seconds_count"), 1.0, "drift is not an etcd change");
    h.task.abort();
}

#[tokio::test(start_paused = true)]
async fn drift_nobody_announced_is_repaired_by_the_resync() {
    let h = Harness::start();
    h.publish(cluster());
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"etcd\"}", 1.0).await;
    h.dp.tamper_silently(|o| {
        o.neigh.get_mut("ovvx4096").unwrap().clear();
        o.links.get_mut("ovvx4096").unwrap().mtu = 1400;
    });
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"resync\"}", 1.0).await;
    assert_eq!(h.value("ovnet_drift_corrections_total{op=\"add_neigh\"}"), 1.0);
    assert_eq!(h.value("ovnet_drift_corrections_total{op=\"set_mtu\"}"), 1.0);
    let (full, cached) = h.dp.observes();
    assert_eq!((full, cached), (1, 1), "the etcd pass may use the netlink view, the resync reads the kernel");
    assert_eq!(h.dp.snapshot().links["ovvx4096"].mtu, 1450);
    // An unchanged kernel: further resyncs apply nothing.
    h.dp.clear_applied();
    h.wait_for("ovnet_reconcile_passes_total{trigger=\"resync\"}", 3.0).await;
    assert!(h.dp.applied().is_empty(), "{:?}", h.dp.applied());
    h.task.abort();
}
