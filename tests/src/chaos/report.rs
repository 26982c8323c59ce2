//! What a chaos run did and found: tallies, violations, and their rendering
//! as JSON (for tools and replays) and as the Markdown table of
//! docs/reliability.md's chaos section.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One broken invariant, with where to find it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Violation {
    pub seed: u64,
    /// The fault step it was found at (0: before the first fault).
    pub step: usize,
    /// Seconds since the start.
    pub at: f64,
    pub invariant: String,
    pub evidence: String,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub seed: u64,
    pub hosts: usize,
    pub etcd_members: usize,
    pub planned_secs: u64,
    pub ran_secs: f64,
    /// Where it ran (e.g. "shared 2-core machine, 6 other builds").
    pub machine: String,
    /// Whether real runtimes (dockerd, podman) and their faults were in (`--runtimes`).
    #[serde(default)]
    pub runtimes: bool,
    pub faults: BTreeMap<String, u64>,
    /// Operation -> outcome -> count.
    pub ops: BTreeMap<String, BTreeMap<String, u64>>,
    pub pings_sent: u64,
    /// Cause -> pings lost.
    pub pings_lost: BTreeMap<String, u64>,
    /// Invariant -> checks made.
    pub checks: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
}

impl Summary {
    pub fn fault(&mut self, kind: &str) {
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }

    pub fn op(&mut self, op: &str, outcome: &str) {
        *self.ops.entry(op.to_string()).or_default().entry(outcome.to_string()).or_default() += 1;
    }

    pub fn checked(&mut self, invariant: &str, n: u64) {
        *self.checks.entry(invariant.to_string()).or_default() += n;
    }

    pub fn lost(&mut self, cause: &str, n: u64) {
        *self.pings_lost.entry(cause.to_string()).or_default() += n;
    }

    /// The Markdown section (heading level 2).
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## Chaos\n");
        let _ = writeln!(
            md,
            "A seeded fault soak (`ovchaos`, issue #15): {} hosts, a {}-member etcd cluster{}, {:.0} s (seed {}), on {}. Replay it with `target/debug/ovchaos --seed {} --duration {}s{}{}`.\n",
            self.hosts,
            self.etcd_members,
            if self.runtimes { ", dockerd and podman (`--runtimes`)" } else { "" },
            self.ran_secs,
            self.seed,
            self.machine,
            self.seed,
            self.planned_secs,
            if self.hosts == 5 { String::new() } else { format!(" --hosts {}", self.hosts) },
            if self.runtimes { " --runtimes" } else { "" },
        );
        let _ = writeln!(md, "| faults applied | count |\n|---|---:|");
        for (k, n) in &self.faults {
            let _ = writeln!(md, "| {k} | {n} |");
        }
        let _ = writeln!(md, "\n| operation | outcomes |\n|---|---|");
        for (op, outcomes) in &self.ops {
            let text: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o}: {n}")).collect();
            let _ = writeln!(md, "| {op} | {} |", text.join(", "));
        }
        let lost: Vec<String> = self.pings_lost.iter().map(|(c, n)| format!("{n} {c}")).collect();
        let lost = if lost.is_empty() { "none".to_string() } else { lost.join(", ") };
        let _ = writeln!(
            md,
            "\nPings at 10 ms between every pair of hosts: {} sent, lost: {lost}.\n",
            self.pings_sent
        );
        let _ = writeln!(md, "| invariant | checks made |\n|---|---:|");
        for (k, n) in &self.checks {
            let _ = writeln!(md, "| {k} | {n} |");
        }
        let _ = writeln!(md, "\nViolations: {}.", self.violations.len());
        for v in &self.violations {
            let _ = writeln!(md, "- step {} at {:.1} s, {}: {}", v.step, v.at, v.invariant, v.evidence);
        }
        md.push('\n');
        let _ = writeln!(
            md,
            "The findings of earlier runs are fixed; their regression tests are in `tests/tests/etcd_leader_loss.rs` and `tests/tests/chaos_findings.rs`."
        );
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_everything_counted() {
        let mut s = Summary {
            seed: 9,
            hosts: 5,
            etcd_members: 3,
            planned_secs: 60,
            ran_secs: 61.0,
            ..Default::default()
        };
        s.fault("etcd leader kill + rejoin");
        s.op("connect", "succeeded");
        s.op("connect", "succeeded");
        s.lost("toward a host dead by design", 12);
        s.checked("allocation", 3);
        s.pings_sent = 1000;
        let md = s.markdown();
        for want in [
            "| etcd leader kill + rejoin | 1 |",
            "| connect | succeeded: 2 |",
            "1000 sent, lost: 12 toward",
            "| allocation | 3 |",
            "Violations: 0.",
            "--seed 9",
        ] {
            assert!(md.contains(want), "{want:?} missing from\n{md}");
        }
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.markdown(), md);
        assert!(!md.contains("--runtimes"));
        let rt = Summary { runtimes: true, hosts: 3, ..s.clone() };
        assert!(rt.markdown().contains("--seed 9 --duration 60s --hosts 3 --runtimes`"), "{}", rt.markdown());
    }
}
