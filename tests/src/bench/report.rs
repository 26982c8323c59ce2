//! Results: rows of figures with their targets, printed as a table and
//! written as JSON.
//!
//! A row holds either a sample summary (p50/p99/max) or a single value, and
//! the targets for it; `met` is decided here, once, so the table,
//! the JSON and BENCHMARKS.md agree. Smoke runs print the same figures but no
//! targets or verdicts: tiny counts (and a debug build in `tests/run.sh`)
//! judge nothing.

use serde::Serialize;

use super::stats::{Summary, summarize};

/// Which figure of a row a target applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    P50,
    P99,
    Max,
    Value,
}

/// "figure <= limit" or "figure >= limit".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub stat: Stat,
    pub at_most: Option<f64>,
    pub at_least: Option<f64>,
}

impl Target {
    fn text(&self) -> String {
        let stat = match self.stat {
            Stat::P50 => "p50",
            Stat::P99 => "p99",
            Stat::Max => "max",
            Stat::Value => "",
        };
        match (self.at_most, self.at_least) {
            (Some(v), _) => format!("{stat}<={}", num(v)),
            (_, Some(v)) => format!("{stat}>={}", num(v)),
            _ => String::new(),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub n: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub value: Option<f64>,
    pub targets: Vec<Target>,
    /// Whether every target holds; `None` without targets.
    pub met: Option<bool>,
}

impl Row {
    /// A row summarising `samples`.
    pub fn samples(metric: &str, unit: &str, samples: &[f64]) -> Row {
        let s = summarize(samples);
        Row {
            metric: metric.to_string(),
            unit: unit.to_string(),
            n: samples.len(),
            p50: s.map(|s: Summary| s.p50),
            p99: s.map(|s| s.p99),
            max: s.map(|s| s.max),
            value: None,
            targets: Vec::new(),
            met: None,
        }
    }

    /// A row holding one value (a ratio, a count, a median of runs).
    pub fn value(metric: &str, unit: &str, n: usize, value: f64) -> Row {
        let mut row = Row::samples(metric, unit, &[]);
        row.n = n;
        row.value = Some(value);
        row
    }

    fn figure(&self, stat: Stat) -> Option<f64> {
        match stat {
            Stat::P50 => self.p50,
            Stat::P99 => self.p99,
            Stat::Max => self.max,
            Stat::Value => self.value,
        }
    }

    /// Adds the target "`stat` <= `limit`".
    pub fn at_most(self, stat: Stat, limit: f64) -> Row {
        self.with(Target { stat, at_most: Some(limit), at_least: None })
    }

    /// Adds the target "`stat` >= `limit`".
    pub fn at_least(self, stat: Stat, limit: f64) -> Row {
        self.with(Target { stat, at_most: None, at_least: Some(limit) })
    }

    fn with(mut self, target: Target) -> Row {
        let ok = self
            .figure(target.stat)
            .is_some_and(|v| target.at_most.is_none_or(|m| v <= m) && target.at_least.is_none_or(|m| v >= m));
        self.met = Some(self.met.unwrap_or(true) && ok);
        self.targets.push(target);
        self
    }
}

/// The result of one scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub smoke: bool,
    pub seconds: f64,
    pub rows: Vec<Row>,
    /// Scenario-specific figures (counts, per-method breakdowns, settings).
    pub details: serde_json::Value,
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || a == a.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), num)
}

/// Which profile this binary (and the `ovagent`/`ovctl` built beside it) has.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) { "debug build" } else { "release build" }
}

impl Report {
    /// The rows as an aligned text table (also Markdown-compatible). A smoke
    /// run's figures come from tiny counts (and, in `tests/run.sh`, a debug
    /// build): its table says so and shows no targets or verdicts.
    pub fn table(&self) -> String {
        if self.smoke {
            return self.smoke_table();
        }
        let mut out = format!("## {} ({:.0} s)\n\n", self.scenario, self.seconds);
        out.push_str("| metric | unit | n | p50 | p99 | max | value | target | met |\n");
        out.push_str("|---|---|--:|--:|--:|--:|--:|---|---|\n");
        for r in &self.rows {
            let targets: Vec<String> = r.targets.iter().map(Target::text).collect();
            let met = match r.met {
                None => "",
                Some(true) => "met",
                Some(false) => "MISSED",
            };
            out.push_str(&format!("{} {} | {met} |\n", figures(r), targets.join(" ")));
        }
        out
    }

    fn smoke_table(&self) -> String {
        let mut out = format!(
            "## {} --smoke ({:.0} s): tiny counts, {}; shows that the scenario runs, not judged against targets\n\n",
            self.scenario,
            self.seconds,
            build_profile()
        );
        out.push_str("| metric | unit | n | p50 | p99 | max | value |\n");
        out.push_str("|---|---|--:|--:|--:|--:|--:|\n");
        for r in &self.rows {
            out.push_str(&figures(r));
            out.push('\n');
        }
        out
    }
}

/// `| metric | unit | n | p50 | p99 | max | value |` of one row.
fn figures(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        r.metric,
        r.unit,
        r.n,
        opt(r.p50),
        opt(r.p99),
        opt(r.max),
        opt(r.value)
    )
}

/// The machine a run happened on: cores, memory, kernel.
pub fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "nproc": cores,
        "mem_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decide_met() {
        let r = Row::samples("x", "ms", &[1.0, 2.0, 40.0]).at_most(Stat::P50, 10.0).at_most(Stat::P99, 30.0);
        assert_eq!(r.met, Some(false));
        let r = Row::value("ratio", "", 3, 0.9).at_least(Stat::Value, 0.88);
        assert_eq!(r.met, Some(true));
        assert_eq!(Row::samples("none", "ms", &[]).at_most(Stat::P50, 1.0).met, Some(false));
        assert_eq!(num(0.123), "0.12");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(21000.0), "21000");
        assert_eq!(num(10.0), "10");
    }

    #[test]
    fn smoke_tables_judge_nothing() {
        let row = Row::value("ratio", "", 3, 0.78).at_least(Stat::Value, 0.88);
        let mut report = Report {
            scenario: "datapath".into(),
            smoke: false,
            seconds: 2.0,
            rows: vec![row],
            ..Default::default()
        };
        let full = report.table();
        assert!(full.contains("| target | met |") && full.contains("| >=0.88 | MISSED |"), "{full}");
        report.smoke = true;
        let smoke = report.table();
        assert!(
            smoke.contains("--smoke") && smoke.contains("tiny counts") && smoke.contains("not judged"),
            "{smoke}"
        );
        assert!(smoke.contains(build_profile()), "{smoke}");
        assert!(
            !smoke.contains("0.88") && !smoke.contains("| met |") && !smoke.contains("MISSED"),
            "{smoke}"
        );
        assert!(smoke.contains("| ratio |  | 3 | - | - | - | 0.78 |"), "{smoke}");
    }
}
