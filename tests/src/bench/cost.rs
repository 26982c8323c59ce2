//! cost: what a connect and a disconnect cost etcd, in requests and bytes,
//! and how many watch streams each agent holds.
//!
//! etcd's own counters are scraped before and after N connects and N
//! disconnects on host 1 (`grpc_server_handled_total` by method,
//! `etcd_network_client_grpc_{received,sent}_bytes_total`). The lab's lease
//! TTL is raised to 300 s so that no lease keep-alive falls inside the
//! window: what is left is the operations' own traffic, plus the watch events
//! etcd sends every agent (counted in the sent bytes).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;

use super::common::{connect, container, network};
use super::etcdmetrics::{Metrics, delta, scrape};
use super::nsthread::ns_path;
use super::report::{Report, Row};
use crate::{Lab, LabOptions};

const HANDLED: &str = "grpc_server_handled_total";
pub(super) const RECEIVED: &str = "etcd_network_client_grpc_received_bytes_total";
pub(super) const SENT: &str = "etcd_network_client_grpc_sent_bytes_total";

/// Runs the scenario: 50 connects and disconnects with 3 hosts; 3 with 2 with `smoke`.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let (hosts, ops) = if smoke { (2, 3) } else { (3, 50) };
    let lab =
        Lab::start(LabOptions { hosts, lease_ttl: 300, ..Default::default() }).context("starting the lab")?;
    let net = network(&lab, "bench")?;
    let containers =
        (0..ops).map(|i| container(&lab, &format!("k{i}"))).collect::<anyhow::Result<Vec<_>>>()?;
    let before = metrics(&lab)?;
    for c in &containers {
        connect(&lab, 0, &net.name, &c.name)?;
    }
    let connected = metrics(&lab)?;
    for c in &containers {
        lab.ovctl_ok(0, &["network", "disconnect", &net.name, &c.name])?;
    }
    let disconnected = metrics(&lab)?;
    let streams = disconnected.total("etcd_debugging_mvcc_watch_stream_total");
    let watchers = disconnected.total("etcd_debugging_mvcc_watcher_total");
    let (c_rows, c_methods) = per_op("connect", &before, &connected, ops);
    let (d_rows, d_methods) = per_op("disconnect", &connected, &disconnected, ops);
    let mut rows = c_rows;
    rows.extend(d_rows);
    rows.push(Row::value("watch streams per agent", "streams", hosts, streams / hosts as f64));
    rows.push(Row::value("watchers per agent", "watchers", hosts, watchers / hosts as f64));
    let details = serde_json::json!({
        "hosts": hosts, "ops": ops,
        "requests_per_connect_by_method": c_methods,
        "requests_per_disconnect_by_method": d_methods,
        "watch_streams": streams, "watchers": watchers,
    });
    Ok(Report { rows, details, ..Default::default() })
}

pub(super) fn metrics(lab: &Lab) -> anyhow::Result<Metrics> {
    let addr: SocketAddr = lab.etcd.endpoint().trim_start_matches("http://").parse()?;
    scrape(&ns_path(&lab.underlay.name), addr)
}

/// Rows for one kind of operation, and its requests by method (per operation).
fn per_op(what: &str, a: &Metrics, b: &Metrics, ops: usize) -> (Vec<Row>, BTreeMap<String, f64>) {
    let n = ops as f64;
    let methods: BTreeMap<String, f64> = delta(&a.by(HANDLED, "grpc_method"), &b.by(HANDLED, "grpc_method"))
        .into_iter()
        .map(|(k, v)| (k, v / n))
        .collect();
    let requests: f64 = methods.values().sum();
    let rows = vec![
        Row::value(&format!("etcd requests per {what}"), "requests", ops, requests),
        Row::value(
            &format!("etcd bytes received per {what}"),
            "bytes",
            ops,
            (b.total(RECEIVED) - a.total(RECEIVED)) / n,
        ),
        Row::value(
            &format!("etcd bytes sent per {what} (incl. watch events to all agents)"),
            "bytes",
            ops,
            (b.total(SENT) - a.total(SENT)) / n,
        ),
    ];
    (rows, methods)
}
