//! What a reliability test held, written as one JSON file per test so that
//! `ovreport` can turn a whole test run into docs/reliability.md.
//!
//! The design decision: the figures come from the tests' own measurements
//! (pings sent and answered, operations done, duplicates and panics looked
//! for), recorded only after the test's assertions passed, so the document
//! can never show a run that did not happen.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One row of the reliability table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `fault`, `race`, `bad input`, `bad data` or `security`.
    pub category: String,
    /// The test function, e.g. `etcd_stopped_for_30s`.
    pub test: String,
    /// What was done to the cluster, one line.
    pub scenario: String,
    /// What was checked to hold, one line.
    pub held: String,
    /// Echo requests sent between containers while the fault lasted.
    pub pings_sent: u64,
    /// Of those, how many got no reply.
    pub pings_lost: u64,
    /// Operations (creates, connects, leases, refused commands...) done.
    pub operations: u64,
    /// Addresses, blocks, VNIs or subnets found handed out twice.
    pub duplicates: u64,
    /// Panics found in the agents' logs.
    pub panics: u64,
}

/// Where outcomes are written: `$OVNET_REPORT_DIR`, else the workspace's
/// `target/reliability`.
pub fn dir() -> PathBuf {
    match std::env::var_os("OVNET_REPORT_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reliability"),
    }
}

/// Writes `o` as `<dir>/<test>.json`, replacing an earlier run's.
pub fn record(o: &Outcome) -> anyhow::Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", o.test));
    std::fs::write(&path, serde_json::to_vec_pretty(o)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Records a race: what ran at the same moment and what held.
pub fn record_race(
    test: &str,
    scenario: &str,
    held: &str,
    operations: usize,
    duplicates: usize,
    panics: u64,
) -> anyhow::Result<()> {
    record(&Outcome {
        category: "race".into(),
        test: test.into(),
        scenario: scenario.into(),
        held: held.into(),
        operations: operations as u64,
        duplicates: duplicates as u64,
        panics,
        ..Default::default()
    })
}

/// Every outcome in `dir`, sorted by category then test.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Outcome>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path)?;
            all.push(serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?);
        }
    }
    all.sort_by(|a: &Outcome, b: &Outcome| (&a.category, &a.test).cmp(&(&b.category, &b.test)));
    Ok(all)
}

/// Counts the panics in an agent log.
pub fn panics_in(log: &str) -> u64 {
    log.matches("panicked at").count() as u64
}
