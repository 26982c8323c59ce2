//! converge: `connect` on host 1 until every other host holds the FDB and
//! neighbour entries for the new endpoint, and until a container on host 2
//! gets its first ping reply from it.
//!
//! Each other host has a [`Monitor`] on RTNLGRP_NEIGH, so an entry's time is
//! the moment its notification arrived. Endpoints accumulate (the network
//! grows to N containers) rather than being torn down, as in a cluster that
//! is filling up. The pinging container's ARP retries every 10 ms (see
//! [`fast_arp`]), so its figure is the overlay's, not the ARP timer's.

use std::time::Instant;

use super::common::{DEADLINE, connect, container, fast_arp, host_path, lab, network, programmed};
use super::nlwatch::{Monitor, RTNLGRP_NEIGH};
use super::nsthread::ns_path;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::ms;

/// Runs the scenario: 100 endpoints with 5 and with 20 hosts; with `smoke`, 3 with 3.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let (sizes, ops) = if smoke { (vec![3], 3) } else { (vec![5, 20], 100) };
    let mut rows = Vec::new();
    for hosts in &sizes {
        rows.extend(one(*hosts, ops)?);
    }
    let details = serde_json::json!({ "hosts": sizes, "endpoints": ops });
    Ok(Report { rows, details, ..Default::default() })
}

/// The samples of one lab size.
#[derive(Default)]
struct Samples {
    every_host: Vec<f64>,
    per_host: Vec<f64>,
    ping: Vec<f64>,
    ctl: Vec<f64>,
}

fn one(hosts: usize, ops: usize) -> anyhow::Result<Vec<Row>> {
    let mut lab = lab(hosts)?;
    let net = network(&lab, "bench")?;
    let (pinger_ns, _) = lab.connected(1, &net.name, "pinger")?;
    fast_arp(&pinger_ns)?;
    let mut pinger = Pinger::open(&ns_path(&pinger_ns))?;
    let mut monitors = (1..hosts)
        .map(|h| Monitor::open(&host_path(&lab, h), &[RTNLGRP_NEIGH]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let vtep = lab.hosts[0].ip;
    let mut s = Samples::default();
    let mut keep = Vec::new();
    for i in 0..ops {
        let c = container(&lab, &format!("v{i}"))?;
        monitors.iter_mut().for_each(Monitor::clear);
        let t0 = Instant::now();
        let ip = connect(&lab, 0, &net.name, &c.name)?;
        s.ctl.push(ms(t0.elapsed()));
        let reply = pinger.first_reply(ip, t0 + DEADLINE)?;
        s.ping.push(ms(reply - t0));
        let mut last = t0;
        for m in &mut monitors {
            let at = programmed(m, t0 + DEADLINE, ip, vtep)?;
            s.per_host.push(ms(at - t0));
            last = last.max(at);
        }
        s.every_host.push(ms(last - t0));
        keep.push(c);
    }
    let h = format!("{hosts} hosts:");
    let mut every =
        Row::samples(&format!("{h} connect until entries on every other host"), "ms", &s.every_host);
    if hosts >= 20 {
        every = every.at_most(Stat::P99, 50.0);
    }
    Ok(vec![
        every,
        Row::samples(&format!("{h} connect until entries on one other host"), "ms", &s.per_host),
        Row::samples(&format!("{h} connect until first ping reply from another host"), "ms", &s.ping),
        Row::samples(&format!("{h} ovctl network connect returns"), "ms", &s.ctl),
    ])
}
