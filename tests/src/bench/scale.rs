//! scale: one real agent against simulated hosts and endpoints written
//! straight into etcd ([`seed`](super::seed)): 1,000 hosts with 10,000
//! endpoints in one network, 100 networks of 100 endpoints, and 3,000 hosts
//! with 30,000 endpoints in one network.
//!
//! The agent is stopped while the records are written and started again
//! with the clock running, so "agent start until every entry is in the
//! kernel" covers its whole cold start: listing etcd, planning, programming.
//! Entries are counted from RTNLGRP_NEIGH notifications (re-dumped if the
//! kernel ever drops some) and the final count is checked with a dump. Then
//! one more remote endpoint at a time is written and timed until its FDB and
//! neighbour entries arrive, and local containers are connected and
//! disconnected through `ovctl` ([`scaleconnect`]), with their etcd cost.
//! A third layout puts 30,000 endpoints in one network (past etcd-client's
//! default 4 MiB message).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::common::{DEADLINE, agent_pid, host_path, lab, programmed};
use super::nlwatch::{Entry, Event, Monitor, RTNLGRP_NEIGH, count, dump};
use super::nsthread::{block_on_in_netns, ns_path};
use super::procstat;
use super::report::{Report, Row, Stat};
use super::scaleconnect;
use super::seed::{self, Layout, SIM_RANGE, sim_vtep};
use super::stats::ms;
use crate::Lab;

/// How long a cold start at scale may take before the scenario fails.
const COLD_START_DEADLINE: Duration = Duration::from_secs(300);

/// Runs the scenario (100 more endpoints, one at a time, after each cold
/// start); `smoke` uses 10 hosts x 10 endpoints and 5 networks x 20.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let (layouts, extra) = if smoke {
        ([Layout::one_network(10, 10), Layout::many_networks(5, 2, 10)], 3)
    } else {
        ([Layout::one_network(1000, 10), Layout::many_networks(100, 10, 10)], 100)
    };
    // The size wall: 30,000 endpoints in one network (past etcd-client's
    // default 4 MiB message at about 15,000), with connects into it.
    let big = (!smoke).then(|| Layout::one_network(3000, 10));
    let layouts: Vec<Layout> = layouts.into_iter().chain(big).collect();
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for (i, layout) in layouts.iter().enumerate() {
        let (r, d) = one(layout, extra, i == 0)?;
        rows.extend(r);
        details.push(d);
    }
    Ok(Report { rows, details: serde_json::Value::Array(details), ..Default::default() })
}

/// What one layout measured.
struct Measured {
    idle: procstat::ProcStats,
    programmed: procstat::ProcStats,
    after: procstat::ProcStats,
    cold_start_ms: f64,
    answering_ms: f64,
    more: Vec<f64>,
    /// Of `more`: until etcd acknowledged the write (its commit, with fsync).
    more_put: Vec<f64>,
    entries: (usize, usize),
    etcd: (usize, usize),
}

fn one(layout: &Layout, extra: usize, report_idle: bool) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let mut lab = lab(1)?;
    lab.underlay.ip(&["route", "add", "blackhole", SIM_RANGE])?;
    let idle = procstat::read(agent_pid(&lab, 0)?)?;
    lab.stop_agent(0)?;
    let etcd = seed_etcd(&lab, layout)?;
    let host = host_path(&lab, 0);
    let mut monitor = Monitor::open(&host, &[RTNLGRP_NEIGH])?;
    let t0 = Instant::now();
    lab.start_agent(0)?;
    let answering_ms = ms(t0.elapsed());
    let done = count_until(&mut monitor, &host, layout.expected(), t0 + COLD_START_DEADLINE)?;
    let programmed = procstat::read(agent_pid(&lab, 0)?)?;
    let entries = count(&dump(&host)?);
    ensure!(
        entries == layout.expected(),
        "the kernel holds {entries:?} FDB and neighbour entries, expected {:?}",
        layout.expected()
    );
    let (more, more_put) = one_more(&lab, monitor, layout, extra)?;
    let after = procstat::read(agent_pid(&lab, 0)?)?;
    let connects = scaleconnect::run(&lab, &layout.networks[0].name, extra.min(20))?;
    let m = Measured {
        idle,
        programmed,
        after,
        cold_start_ms: ms(done - t0),
        answering_ms,
        more,
        more_put,
        entries,
        etcd,
    };
    let mut rows = rows(layout, &m, report_idle);
    let label = format!(
        "{} hosts, {} net(s), {} endpoints:",
        layout.hosts,
        layout.networks.len(),
        layout.endpoints()
    );
    rows.extend(scaleconnect::rows(&label, &connects));
    let mut details = details(layout, &m);
    details["connects"] = scaleconnect::details(&connects);
    Ok((rows, details))
}

fn rows(layout: &Layout, m: &Measured, report_idle: bool) -> Vec<Row> {
    let label = format!(
        "{} hosts, {} net(s), {} endpoints:",
        layout.hosts,
        layout.networks.len(),
        layout.endpoints()
    );
    let entries = m.entries.0 + m.entries.1;
    let mut rows = vec![
        Row::value(
            &format!("{label} agent start until every entry is in the kernel"),
            "ms",
            entries,
            m.cold_start_ms,
        )
        .at_most(Stat::Value, 1000.0),
        Row::samples(&format!("{label} one more remote endpoint programmed"), "ms", &m.more)
            .at_most(Stat::P99, 20.0),
        Row::samples(&format!("{label} of which the etcd write (commit + fsync)"), "ms", &m.more_put),
        Row::value(&format!("{label} agent peak RSS (VmHWM)"), "MiB", 1, m.after.hwm_mib)
            .at_most(Stat::Value, 40.0),
        Row::value(&format!("{label} agent CPU from start until programmed"), "s", 1, m.programmed.cpu_secs),
        Row::value(&format!("{label} agent answers ovctl after start"), "ms", 1, m.answering_ms),
    ];
    if report_idle {
        let idle =
            Row::value("idle agent RSS (no networks)", "MiB", 1, m.idle.rss_mib).at_most(Stat::Value, 15.0);
        rows.insert(0, idle);
    }
    rows
}

fn details(layout: &Layout, m: &Measured) -> serde_json::Value {
    let stats = |p: &procstat::ProcStats| serde_json::json!({ "rss_mib": p.rss_mib, "hwm_mib": p.hwm_mib, "cpu_secs": p.cpu_secs });
    serde_json::json!({
        "hosts": layout.hosts, "networks": layout.networks.len(), "endpoints": layout.endpoints(),
        "fdb_entries": m.entries.0, "neigh_entries": m.entries.1, "etcd_keys": m.etcd.0, "etcd_bytes": m.etcd.1,
        "idle": stats(&m.idle), "programmed": stats(&m.programmed), "after_extra": stats(&m.after),
    })
}

/// Writes the layout into the lab's etcd; returns the keys and bytes under the prefix.
fn seed_etcd(lab: &Lab, layout: &Layout) -> anyhow::Result<(usize, usize)> {
    let (endpoint, prefix, layout) = (lab.etcd.endpoint(), lab.prefix.clone(), layout.clone());
    block_on_in_netns(&ns_path(&lab.underlay.name), move || async move {
        let store = seed::connect(endpoint, prefix).await?;
        seed::seed(&store, &layout).await?;
        seed::size(&store).await
    })
}

/// When the count of FDB and neighbour entries in the namespace reached `want`.
fn count_until(
    m: &mut Monitor,
    ns: &Path,
    want: (usize, usize),
    deadline: Instant,
) -> anyhow::Result<Instant> {
    let mut have: HashSet<Entry> = HashSet::new();
    let (mut fdb, mut neigh) = (0, 0);
    loop {
        let Some(s) = m.recv(deadline)? else {
            bail!(
                "after {COLD_START_DEADLINE:?} the kernel holds {fdb} FDB and {neigh} neighbour entries of {want:?}"
            );
        };
        match s.event {
            Event::New(e) if have.insert(e.clone()) => bump(&e, &mut fdb, &mut neigh, 1),
            Event::Del(e) if have.remove(&e) => bump(&e, &mut fdb, &mut neigh, -1),
            Event::Overrun => {
                have = dump(ns)?;
                (fdb, neigh) = count(&have);
            }
            _ => continue,
        }
        if fdb >= want.0 && neigh >= want.1 {
            return Ok(s.at);
        }
    }
}

fn bump(e: &Entry, fdb: &mut usize, neigh: &mut usize, by: isize) {
    match e {
        Entry::Fdb { .. } => *fdb = fdb.saturating_add_signed(by),
        Entry::Neigh { .. } => *neigh = neigh.saturating_add_signed(by),
        Entry::Link { .. } => {}
    }
}

/// Writes `n` more remote endpoints one at a time (spread over networks and
/// hosts) and times each until its entries are in the kernel.
/// Returns, per endpoint, the time until it was programmed and until etcd
/// acknowledged the write.
fn one_more(lab: &Lab, monitor: Monitor, layout: &Layout, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (endpoint, prefix, layout) = (lab.etcd.endpoint(), lab.prefix.clone(), layout.clone());
    block_on_in_netns(&ns_path(&lab.underlay.name), move || async move {
        let store = seed::connect(endpoint, prefix).await?;
        let nets = store.list_networks().await?;
        let mut monitor = monitor;
        let (mut out, mut put) = (Vec::new(), Vec::new());
        for i in 0..n {
            let plan = &layout.networks[i % layout.networks.len()];
            let h = (i / layout.networks.len()) % plan.hosts;
            let Some(net) = nets.iter().find(|r| r.name == plan.name) else {
                bail!("network {} is gone", plan.name)
            };
            let ep = seed::endpoint(net, plan, h, plan.per_host + i / (layout.networks.len() * plan.hosts));
            monitor.clear();
            let t0 = Instant::now();
            seed::put_endpoint(&store, &ep).await?;
            put.push(ms(t0.elapsed()));
            let at = programmed(&mut monitor, t0 + DEADLINE, ep.ip, sim_vtep(plan.first_host + h))?;
            out.push(ms(at - t0));
        }
        Ok((out, put))
    })
}
