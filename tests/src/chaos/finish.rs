//! The end of a chaos run: pings stopped and their losses judged, every
//! container (Docker's and podman's too) and network removed, and then the no-leak invariant: etcd holds
//! only host records and no live host holds an ovnet device, veth, FDB or
//! neighbour entry or nftables rule.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::check::{DeadWindow, leftovers, ovbr_rules};
use super::churn::{Churn, World};
use super::pings::Stream;
use super::report::{Summary, Violation};
use super::runtimes::Runtimes;
use crate::lab::{Lab, poll};
use crate::netns::Netns;

/// What `finish` works on, borrowed from the run.
pub struct Parts<'a> {
    pub lab: &'a mut Lab,
    pub rt: Option<&'a mut Runtimes>,
    pub world: &'a Mutex<World>,
    pub streams: &'a mut Vec<Stream>,
    pub base: &'a mut Vec<(Netns, String)>,
    pub dead: &'a [DeadWindow],
    pub summary: &'a mut Summary,
    pub seed: u64,
    pub t0: Instant,
}

impl Parts<'_> {
    fn violation(&mut self, invariant: &str, evidence: String) {
        let step = self.world.lock().map(|w| w.step).unwrap_or(0);
        let at = self.t0.elapsed().as_secs_f64();
        eprintln!("VIOLATION seed {} step {step} at {at:.1} s [{invariant}]: {evidence}", self.seed);
        self.summary.violations.push(Violation {
            seed: self.seed,
            step,
            at,
            invariant: invariant.into(),
            evidence,
        });
    }

    fn lost(&self) -> Vec<bool> {
        self.world.lock().map(|w| w.lost.clone()).unwrap_or_default()
    }
}

/// Judges the pings and the operations, removes everything, checks for leaks.
pub fn finish(p: &mut Parts, churn: Churn) -> anyhow::Result<()> {
    for s in p.streams.iter_mut() {
        s.stop();
    }
    let stopped = p.t0.elapsed().as_secs_f64();
    let (sent, excused, bad) = super::run::tally_losses(p.streams, p.dead, stopped);
    p.summary.pings_sent = sent;
    p.summary.lost("toward a host dead by design", excused);
    p.summary.checked("datapath (all-pairs pings at 10 ms, loss windows)", p.streams.len() as u64);
    for b in bad {
        p.summary.lost("violations", 1);
        p.violation("datapath", b);
    }
    for (op, outcome, violation) in &churn.outcomes {
        p.summary.op(op, outcome);
        p.summary.checked("control plane (every ovctl call judged)", 1);
        if let Some(v) = violation {
            p.violation("control plane", v.clone());
        }
    }
    if let Err(e) = remove_everything(p, churn) {
        p.violation("cleanup", format!("{e:#}"));
    }
    check_no_leak(p);
    Ok(())
}

/// Disconnects every container and removes every network; the first
/// failure ends it (and is a violation: every host is healed by now).
fn remove_everything(p: &mut Parts, churn: Churn) -> anyhow::Result<()> {
    let lost = p.lost();
    let driver = (0..lost.len()).find(|&i| !lost[i]).unwrap_or(0);
    if let Some(rt) = p.rt.as_mut() {
        rt.remove_all()?;
    }
    for c in &churn.containers {
        if !lost[c.host] {
            p.lab.ovctl_ok(c.host, &["network", "disconnect", &c.net, &c.ns.name])?;
        }
    }
    for (i, (ns, _)) in p.base.iter().enumerate() {
        if !lost[i] {
            p.lab.ovctl_ok(i, &["network", "disconnect", "base", &ns.name])?;
        }
    }
    drop(churn.containers);
    p.base.clear();
    // Containers that died without a disconnect are cleaned up by their
    // agents' resync; until then their network is still in use.
    for net in churn.networks.iter().map(String::as_str).chain(["base"]) {
        poll(&format!("network rm {net}"), Duration::from_secs(40), || {
            p.lab.ovctl_ok(driver, &["network", "rm", net]).ok()
        })?;
    }
    Ok(())
}

fn check_no_leak(p: &mut Parts) {
    let lost = p.lost();
    p.summary.checked("no leak at the end (etcd and every live host's kernel)", 1);
    let mut last = Vec::new();
    let clean = poll("nothing left behind", Duration::from_secs(20), || {
        let mut found = match p.lab.with_etcd({
            let prefix = p.lab.prefix.clone();
            move |mut c| async move {
                let r = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
                Ok(r.kvs()
                    .iter()
                    .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), String::new()))
                    .collect())
            }
        }) {
            Ok(dump) => leftovers(&p.lab.prefix, &dump),
            Err(e) => vec![format!("reading etcd: {e}")],
        };
        for i in (0..p.lab.hosts.len()).filter(|&i| !lost[i]) {
            match p.lab.kernel(i) {
                Ok(k) => found.extend(k.into_iter().map(|e| format!("h{}: {e}", i + 1))),
                Err(e) => found.push(format!("h{}: {e}", i + 1)),
            }
            let rules = p.lab.hosts[i].ns.exec("nft", &["list", "ruleset"]);
            if let Ok(out) = rules {
                let lines = ovbr_rules(&String::from_utf8_lossy(&out.stdout));
                if !lines.is_empty() {
                    let some = lines[..lines.len().min(4)].join(" | ");
                    found.push(format!("h{}: nftables rules naming ovbr devices: {some}", i + 1));
                }
            }
        }
        let done = found.is_empty();
        last = found;
        done.then_some(())
    });
    if clean.is_err() {
        p.violation("no leak", last.join("; "));
    }
}
