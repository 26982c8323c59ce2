//! network: `ovctl network create` until every host holds the network's
//! bridge and VXLAN device, and `ovctl network rm` until every host has
//! deleted them.
//!
//! Every host has a [`Monitor`] on RTNLGRP_LINK; a device's time is the
//! arrival of its first RTM_NEWLINK (or its RTM_DELLINK). Each network is
//! removed again before the next is made, so every sample sees the same
//! cluster.

use std::time::Instant;

use super::common::{DEADLINE, host_path, inspect, lab};
use super::nlwatch::{Entry, Event, Monitor, RTNLGRP_LINK};
use super::report::{Report, Row, Stat};
use super::stats::ms;

/// Runs the scenario: 100 networks on 20 hosts; with `smoke`, 3 on 3.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let (hosts, ops) = if smoke { (3, 3) } else { (20, 100) };
    let lab = lab(hosts)?;
    let mut monitors = (0..hosts)
        .map(|h| Monitor::open(&host_path(&lab, h), &[RTNLGRP_LINK]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (mut created, mut create_ctl, mut removed, mut rm_ctl) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..ops {
        let name = format!("n{i}");
        monitors.iter_mut().for_each(Monitor::clear);
        let t0 = Instant::now();
        lab.ctl(0, &format!("network create -d overlay {name}"))?;
        create_ctl.push(ms(t0.elapsed()));
        let devices = inspect(&lab, &name)?.devices();
        created.push(ms(everywhere(&mut monitors, t0, &devices, true)? - t0));

        monitors.iter_mut().for_each(Monitor::clear);
        let t0 = Instant::now();
        lab.ctl(0, &format!("network rm {name}"))?;
        rm_ctl.push(ms(t0.elapsed()));
        removed.push(ms(everywhere(&mut monitors, t0, &devices, false)? - t0));
    }
    let h = format!("{hosts} hosts:");
    let rows = vec![
        Row::samples(&format!("{h} network create until devices on every host"), "ms", &created)
            .at_most(Stat::P99, 100.0),
        Row::samples(&format!("{h} ovctl network create returns"), "ms", &create_ctl),
        Row::samples(&format!("{h} network rm until devices gone from every host"), "ms", &removed),
        Row::samples(&format!("{h} ovctl network rm returns"), "ms", &rm_ctl),
    ];
    Ok(Report { rows, details: serde_json::json!({ "hosts": hosts, "networks": ops }), ..Default::default() })
}

/// When the last of `devices` appeared (`added`) or vanished on the last host.
fn everywhere(
    monitors: &mut [Monitor],
    t0: Instant,
    devices: &[String],
    added: bool,
) -> anyhow::Result<Instant> {
    let mut last = t0;
    for m in monitors {
        for d in devices {
            let at = m.wait_for(t0 + DEADLINE, |e| match e {
                Event::New(Entry::Link { name }) if added => name == d,
                Event::Del(Entry::Link { name }) if !added => name == d,
                _ => false,
            })?;
            last = last.max(at);
        }
    }
    Ok(last)
}
