//! The agent's Prometheus metrics and the readiness `/readyz` reports.
//!
//! One `Metrics` handle is made in `run` and cloned into every part that
//! records something; there are no global statics, so each test makes its own.
//! The design decision: values are pushed by the code that knows them (the
//! reconcile loop sets the cluster gauges from the very snapshot it plans
//! from), so a scrape only encodes and never touches etcd or the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ovnet_ipam_store::ClusterState;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::local::Local;
use crate::op::Op;

/// What woke the reconcile loop for a pass.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Trigger {
    /// A new cluster snapshot from the etcd watch.
    Etcd,
    /// A netlink notification about one of our devices or entries.
    Netlink,
    /// The periodic resync timer.
    Resync,
    /// A retry after a pass that failed.
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Etcd => "etcd",
            Trigger::Netlink => "netlink",
            Trigger::Resync => "resync",
            Trigger::Retry => "retry",
        }
    }
}

impl EncodeLabelValue for Trigger {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: Trigger,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocationLabel {
    location: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// A family of histograms of call durations, 0.1 ms .. ~1.6 s.
type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_durations() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// A shared handle on every metric of the agent. Clones share the values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    networks: Gauge,
    hosts: Gauge,
    hosts_alive: Gauge,
    endpoints: Family<LocationLabel, Gauge>,
    event_to_kernel: Histogram,
    passes: Family<TriggerLabel, Counter>,
    pass_duration: Histogram,
    drift: Family<OpLabel, Counter>,
    netlink_errors: Counter,
    etcd_errors: Counter,
    etcd_connected: Gauge,
    docker_calls: Durations<MethodLabel>,
    dns: crate::dns::DnsMetrics,
    synced: AtomicBool,
    /// Why the firewall table cannot be written, while it cannot.
    isolation: std::sync::Mutex<Option<String>>,
    /// Why the agent is not healthy (a task of it ended), once it is not.
    unhealthy: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("ovnet");
        let inner = Inner {
            networks: Gauge::default(),
            hosts: Gauge::default(),
            hosts_alive: Gauge::default(),
            endpoints: Family::default(),
            // 1 ms .. ~16 s
            event_to_kernel: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            passes: Family::default(),
            // 0.5 ms .. ~4 s
            pass_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            drift: Family::default(),
            netlink_errors: Counter::default(),
            etcd_errors: Counter::default(),
            etcd_connected: Gauge::default(),
            docker_calls: Family::new_with_constructor(call_durations),
            dns: Default::default(),
            synced: AtomicBool::new(false),
            isolation: Default::default(),
            unhealthy: Default::default(),
            registry: Registry::default(),
        };
        let version = VersionLabel { version: env!("CARGO_PKG_VERSION") };
        r.register("build", "The running ovagent's version", Info::new(version));
        r.register("networks", "Networks in etcd", inner.networks.clone());
        r.register("hosts", "Hosts registered in etcd", inner.hosts.clone());
        r.register(
            "hosts_alive",
            "Registered hosts whose liveness lease is current",
            inner.hosts_alive.clone(),
        );
        r.register(
            "endpoints",
            "Endpoints in etcd, on this host (local) or on others (remote)",
            inner.endpoints.clone(),
        );
        r.register_with_unit(
            "event_to_kernel",
            "Time from receiving an etcd change to having applied its kernel changes on this host",
            Unit::Seconds,
            inner.event_to_kernel.clone(),
        );
        r.register("reconcile_passes", "Reconcile passes, by what woke the loop", inner.passes.clone());
        r.register_with_unit(
            "reconcile_duration",
            "Duration of reconcile passes (observe, plan, apply)",
            Unit::Seconds,
            inner.pass_duration.clone(),
        );
        r.register(
            "drift_corrections",
            "Kernel operations applied by passes that no etcd change asked for (a resync or a netlink event found drift), by operation",
            inner.drift.clone(),
        );
        r.register("netlink_errors", "Failed netlink dumps and operations", inner.netlink_errors.clone());
        r.register("etcd_errors", "Failed etcd requests and broken watches", inner.etcd_errors.clone());
        r.register(
            "etcd_connected",
            "1 while the last etcd interaction (watch or lease keep-alive) succeeded, else 0",
            inner.etcd_connected.clone(),
        );
        r.register_with_unit(
            "docker_plugin_call",
            "Time the Docker plugin took to answer a call, by method",
            Unit::Seconds,
            inner.docker_calls.clone(),
        );
        inner.dns.register(&mut r);
        Metrics { inner: Arc::new(Inner { registry: r, ..inner }) }
    }

    /// The DNS server's counters.
    pub fn dns(&self) -> crate::dns::DnsMetrics {
        self.inner.dns.clone()
    }

    /// Sets the cluster gauges from a snapshot and this host's endpoints in it.
    pub fn cluster(&self, state: &ClusterState, local: &Local) {
        let m = &self.inner;
        m.networks.set(state.networks.len() as i64);
        m.hosts.set(state.hosts.len() as i64);
        m.hosts_alive.set(state.alive.len() as i64);
        m.endpoints.get_or_create(&LocationLabel { location: "local" }).set(local.count() as i64);
        m.endpoints.get_or_create(&LocationLabel { location: "remote" }).set(local.remote() as i64);
    }

    /// Records one reconcile pass.
    pub fn pass(&self, trigger: Trigger, took: Duration) {
        self.inner.passes.get_or_create(&TriggerLabel { trigger }).inc();
        self.inner.pass_duration.observe(took.as_secs_f64());
    }

    /// Records the time from an etcd change's arrival to its kernel changes being applied.
    pub fn event_to_kernel(&self, took: Duration) {
        self.inner.event_to_kernel.observe(took.as_secs_f64());
    }

    /// Records an op that repaired drift.
    pub fn drift(&self, op: &Op) {
        self.inner.drift.get_or_create(&OpLabel { op: op.kind() }).inc();
    }

    pub fn netlink_errors(&self, n: usize) {
        self.inner.netlink_errors.inc_by(n as u64);
    }

    /// Records a failed etcd interaction; the connection counts as down.
    pub fn etcd_error(&self) {
        self.inner.etcd_errors.inc();
        self.inner.etcd_connected.set(0);
    }

    /// Records a successful etcd interaction.
    pub fn etcd_ok(&self) {
        self.inner.etcd_connected.set(1);
    }

    /// Records how long the Docker plugin took to answer `method` (one of
    /// the protocol's; anything else counts as "other").
    pub fn docker_call(&self, method: &'static str, took: Duration) {
        self.inner.docker_calls.get_or_create(&MethodLabel { method }).observe(took.as_secs_f64());
    }

    /// Marks the first reconcile pass as done.
    pub fn synced(&self) {
        self.inner.synced.store(true, Ordering::Relaxed);
    }

    /// Marks the agent unhealthy for good (a task it needs ended).
    pub fn unhealthy(&self, why: String) {
        *self.inner.unhealthy.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// `Ok` while every task of the agent runs; otherwise which ended and why.
    pub fn health(&self) -> Result<(), String> {
        match &*self.inner.unhealthy.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Records whether the last pass could write the firewall table.
    pub fn isolation(&self, error: Option<String>) {
        *self.inner.isolation.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// `Ok` when the agent is ready: etcd answers, the datapath was synced
    /// once and the firewall table is written; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if self.inner.etcd_connected.get() != 1 {
            why.push("etcd is not reachable".to_string());
        }
        if !self.inner.synced.load(Ordering::Relaxed) {
            why.push("the first reconcile pass is not done".to_string());
        }
        if let Some(e) = &*self.inner.isolation.lock().unwrap_or_else(|e| e.into_inner()) {
            why.push(format!("networks are not isolated: {e}"));
        }
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The value of one series in an exposition, e.g.
/// `sample(text, "ovnet_endpoints{location=\"local\"}")`; for scrapes in tests.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovnet_ipam_store::{AliveRecord, EndpointRecord, Mac};

    fn endpoint(host: &str, last: u8) -> EndpointRecord {
        let ip = std::net::Ipv4Addr::new(10, 0, 0, last);
        EndpointRecord {
            v: 1,
            id: format!("e{last}"),
            network: "n".into(),
            host: host.into(),
            netns: "c".into(),
            ip,
            mac: Mac::endpoint(ip),
            ifname: "eth0".into(),
            host_ifname: format!("ovve{last}"),
            created_at: 0,
            container: None,
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn names_and_values_in_the_exposition() {
        let m = Metrics::new();
        let mut s = ClusterState::default();
        s.alive.insert(
            "h1".into(),
            AliveRecord { v: 1, name: "h1".into(), vtep: [1, 1, 1, 1].into(), started_at: 0 },
        );
        for e in [endpoint("h1", 2), endpoint("h2", 3), endpoint("h2", 4)] {
            s.insert_endpoint(e);
        }
        m.cluster(&s, &Local::of(&s, "h1"));
        m.pass(Trigger::Etcd, Duration::from_millis(3));
        m.pass(Trigger::Resync, Duration::from_millis(1));
        m.event_to_kernel(Duration::from_millis(20));
        m.drift(&Op::DelNeigh { dev: "ovvx1".into(), ip: [10, 0, 0, 9].into() });
        m.netlink_errors(2);
        m.etcd_ok();
        let text = m.encode();
        let want = [
            ("ovnet_networks", 0.0),
            ("ovnet_hosts_alive", 1.0),
            ("ovnet_endpoints{location=\"local\"}", 1.0),
            ("ovnet_endpoints{location=\"remote\"}", 2.0),
            ("ovnet_reconcile_passes_total{trigger=\"etcd\"}", 1.0),
            ("ovnet_reconcile_passes_total{trigger=\"resync\"}", 1.0),
            ("ovnet_reconcile_duration_seconds_count", 2.0),
            ("ovnet_event_to_kernel_seconds_count", 1.0),
            ("ovnet_drift_corrections_total{op=\"del_neigh\"}", 1.0),
            ("ovnet_netlink_errors_total", 2.0),
            ("ovnet_etcd_errors_total", 0.0),
            ("ovnet_etcd_connected", 1.0),
        ];
        for (series, value) in want {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.contains("ovnet_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn ready_only_with_etcd_and_a_first_pass() {
        let m = Metrics::new();
        let why = m.readiness().unwrap_err();
        assert!(why.contains("etcd") && why.contains("first reconcile pass"), "{why}");
        m.etcd_ok();
        assert_eq!(m.readiness().unwrap_err(), "the first reconcile pass is not done");
        m.synced();
        assert_eq!(m.readiness(), Ok(()));
        m.etcd_error();
        assert_eq!(m.readiness().unwrap_err(), "etcd is not reachable");
    }
}
