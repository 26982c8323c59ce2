//! attach: `ovctl network connect` until the new container can ping its
//! gateway, then `ovctl network disconnect`, over and over on one host.
//!
//! The container namespace and its raw ICMP socket exist before the clock
//! starts; the clock covers `ovctl` (process start included: that is what a
//! user or an orchestrator waits for) and the first echo reply from the
//! anycast gateway on the host's bridge. A second agent runs on another host
//! so that every connect also wakes a peer, as in a real cluster.

use std::time::Instant;

use super::common::{DEADLINE, connect, container, lab, network};
use super::nsthread::ns_path;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::ms;

/// Runs the scenario: 200 operations, 3 with `smoke`.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let ops = if smoke { 3 } else { 200 };
    let lab = lab(2)?;
    let net = network(&lab, "bench")?;
    let floor = ovctl_floor(&lab, if smoke { 3 } else { 20 })?;
    let (mut ready, mut connected, mut disconnected) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ops {
        let c = container(&lab, &format!("a{i}"))?;
        let mut pinger = Pinger::open(&ns_path(&c.name))?;
        let t0 = Instant::now();
        connect(&lab, 0, &net.name, &c.name)?;
        let returned = Instant::now();
        let reply = pinger.first_reply(net.gateway, t0 + DEADLINE)?;
        connected.push(ms(returned - t0));
        ready.push(ms(reply - t0));
        let t1 = Instant::now();
        lab.ovctl_ok(0, &["network", "disconnect", &net.name, &c.name])?;
        disconnected.push(ms(t1.elapsed()));
    }
    let rows = vec![
        Row::samples("connect until first gateway ping reply", "ms", &ready)
            .at_most(Stat::P50, 10.0)
            .at_most(Stat::P99, 30.0),
        Row::samples("ovctl network connect returns", "ms", &connected),
        Row::samples("ovctl network disconnect returns", "ms", &disconnected),
        Row::samples("ovctl version (the CLI's own floor)", "ms", &floor),
    ];
    let details = serde_json::json!({ "ops": ops, "hosts": 2, "gateway": net.gateway.to_string() });
    Ok(Report { rows, details, ..Default::default() })
}

/// How long `ovctl version` takes: process start plus one gRPC round trip,
/// the part of every `ovctl` figure that is not the agent's work.
fn ovctl_floor(lab: &crate::Lab, n: usize) -> anyhow::Result<Vec<f64>> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            lab.ovctl_ok(0, &["version"])?;
            Ok(ms(t.elapsed()))
        })
        .collect()
}
