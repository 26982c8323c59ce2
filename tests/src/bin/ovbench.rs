//! ovbench: the benchmark of issue 5. Builds labs (real etcd, real agents,
//! namespaces) and measures attach latency, cross-host convergence, network
//! creation, scale, etcd cost and datapath overhead; prints a table and
//! writes JSON.
//!
//! It uses the `ovagent` and `ovctl` built beside it (so `target/release/ovbench`
//! measures release binaries) unless `OVNET_BIN_DIR` says otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use ovnet_tests::bench::{self, Report, Scenario, report};

#[derive(Parser)]
#[command(
    name = "ovbench",
    about = "Measures ovnet in the lab: attach, converge, network, scale, cost, datapath",
    after_help = "Needs root (it builds network namespaces). Build first: cargo build --release --workspace --bins"
)]
struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Tiny counts (a few operations, 2-3 hosts, 100 endpoints for scale): checks that
    /// every scenario works, says nothing about time.
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON (default target/ovbench/<scenario>.json, under
    /// target/ovbench/smoke/ with --smoke; for `all`, the combined file, each
    /// scenario's own file still going to the default directory).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let exe = std::env::current_exe().context("finding ovbench's own path")?;
    if let Some(dir) = exe.parent() {
        ovnet_tests::lab::set_bin_dir(dir.to_path_buf());
    }
    let bins = ovnet_tests::lab::bin_dir();
    if !bins.join("ovagent").exists() || !bins.join("ovctl").exists() {
        bail!("no ovagent/ovctl in {}: run cargo build --release --workspace --bins first", bins.display());
    }
    let machine = report::machine();
    println!(
        "# ovbench {}{} (binaries: {}, {}, machine: {machine})\n",
        cli.scenario.name(),
        if cli.smoke { " --smoke" } else { "" },
        bins.display(),
        report::build_profile()
    );
    let list: Vec<Scenario> =
        if cli.scenario == Scenario::All { Scenario::EACH.to_vec() } else { vec![cli.scenario] };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("no workspace directory")?;
    let out_dir = workspace.join(if cli.smoke { "target/ovbench/smoke" } else { "target/ovbench" });
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for s in list {
        eprintln!("ovbench: running {}{}", s.name(), if cli.smoke { " (smoke)" } else { "" });
        match bench::run(s, cli.smoke) {
            Ok(r) => {
                println!("{}", r.table());
                let own = out_dir.join(format!("{}.json", s.name()));
                let file = if cli.scenario == Scenario::All { own } else { cli.json.clone().unwrap_or(own) };
                write_json(&file, &machine, std::slice::from_ref(&r))?;
                reports.push(r);
            }
            Err(e) => {
                eprintln!("ovbench: {} failed: {e:#}", s.name());
                failed.push(s.name());
            }
        }
    }
    if cli.scenario == Scenario::All {
        let file = cli.json.clone().unwrap_or_else(|| out_dir.join("all.json"));
        write_json(&file, &machine, &reports)?;
    }
    if !failed.is_empty() {
        let what = if failed.len() == 1 { "scenario" } else { "scenarios" };
        bail!("{} {what} failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

fn write_json(file: &Path, machine: &serde_json::Value, reports: &[Report]) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let doc = serde_json::json!({ "machine": machine, "reports": reports });
    std::fs::write(file, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", file.display()))?;
    eprintln!("ovbench: wrote {}", file.display());
    Ok(())
}
