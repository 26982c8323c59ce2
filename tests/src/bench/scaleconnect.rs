//! The connect phase of `scale`: real `ovctl network connect` and
//! `disconnect` of local containers into the big network, timed, with what
//! each costs etcd (its own counters, scraped before and after).
//!
//! The design decision: the rows are per operation and per layout, so the
//! report shows directly whether a connect's etcd requests and bytes grow
//! with the network's endpoint count (they must not: the agent answers its
//! pre-checks from its watch cache). Lease keep-alives and watch traffic are
//! left out of the request count (they belong to no operation).

use std::collections::BTreeMap;
use std::time::Instant;

use super::common::{connect, container};
use super::cost::{RECEIVED, SENT, metrics};
use super::etcdmetrics::{Metrics, delta};
use super::report::Row;
use super::stats::ms;
use crate::Lab;

const HANDLED: &str = "grpc_server_handled_total";

/// What the connects and disconnects measured.
pub struct Measured {
    pub connect_ms: Vec<f64>,
    pub disconnect_ms: Vec<f64>,
    pub connect: Cost,
    pub disconnect: Cost,
}

/// etcd's side of one operation, averaged.
pub struct Cost {
    pub requests: f64,
    pub by_method: BTreeMap<String, f64>,
    pub received: f64,
    pub sent: f64,
}

/// `ops` connects of fresh containers to `network` on host 1, then their
/// disconnects.
pub fn run(lab: &Lab, network: &str, ops: usize) -> anyhow::Result<Measured> {
    let cs = (0..ops).map(|i| container(lab, &format!("sc{i}"))).collect::<anyhow::Result<Vec<_>>>()?;
    let before = metrics(lab)?;
    let mut connect_ms = Vec::new();
    for c in &cs {
        let t0 = Instant::now();
        connect(lab, 0, network, &c.name)?;
        connect_ms.push(ms(t0.elapsed()));
    }
    let connected = metrics(lab)?;
    let mut disconnect_ms = Vec::new();
    for c in &cs {
        let t0 = Instant::now();
        lab.ovctl_ok(0, &["network", "disconnect", network, &c.name])?;
        disconnect_ms.push(ms(t0.elapsed()));
    }
    let disconnected = metrics(lab)?;
    Ok(Measured {
        connect_ms,
        disconnect_ms,
        connect: cost(&before, &connected, ops),
        disconnect: cost(&connected, &disconnected, ops),
    })
}

fn cost(a: &Metrics, b: &Metrics, ops: usize) -> Cost {
    let n = ops as f64;
    let by_method: BTreeMap<String, f64> =
        delta(&a.by(HANDLED, "grpc_method"), &b.by(HANDLED, "grpc_method"))
            .into_iter()
            .filter(|(m, _)| m != "LeaseKeepAlive" && m != "Watch")
            .map(|(k, v)| (k, v / n))
            .collect();
    Cost {
        requests: by_method.values().sum(),
        by_method,
        received: (b.total(RECEIVED) - a.total(RECEIVED)) / n,
        sent: (b.total(SENT) - a.total(SENT)) / n,
    }
}

/// The rows of one layout, labelled with it.
pub fn rows(label: &str, m: &Measured) -> Vec<Row> {
    let n = m.connect_ms.len();
    let mut rows = vec![
        Row::samples(&format!("{label} ovctl network connect"), "ms", &m.connect_ms),
        Row::samples(&format!("{label} ovctl network disconnect"), "ms", &m.disconnect_ms),
    ];
    for (what, c) in [("connect", &m.connect), ("disconnect", &m.disconnect)] {
        rows.push(Row::value(&format!("{label} etcd requests per {what}"), "requests", n, c.requests));
        rows.push(Row::value(&format!("{label} etcd bytes received per {what}"), "bytes", n, c.received));
        rows.push(Row::value(
            &format!("{label} etcd bytes sent per {what} (incl. watch events)"),
            "bytes",
            n,
            c.sent,
        ));
    }
    rows
}

/// The details of one layout's connects, for the JSON report.
pub fn details(m: &Measured) -> serde_json::Value {
    serde_json::json!({
        "connect_requests_by_method": m.connect.by_method,
        "disconnect_requests_by_method": m.disconnect.by_method,
    })
}
