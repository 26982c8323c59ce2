//! `ovreport`: turns the outcomes the reliability tests recorded (one JSON
//! file per test in target/reliability) into docs/reliability.md, and with
//! `--check` fails when a run lost a ping, handed something out twice or
//! panicked.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use ovnet_tests::report::{self, Outcome};

#[derive(Parser)]
#[command(name = "ovreport", about = "Render the reliability tests' outcomes as a Markdown table")]
struct Cli {
    /// Where the tests wrote their outcomes (default: target/reliability).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the Markdown here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail (exit 1) if any outcome shows a lost ping, a duplicate or a panic.
    #[arg(long)]
    check: bool,
    /// A chaos run's report (`ovchaos` writes chaos.json); when the file
    /// exists, its section ends the page.
    #[arg(long, default_value = "docs/chaos.json")]
    chaos: PathBuf,
}

const REPRODUCE: &str =
    "tests/run.sh   # as root: every test; each reliability test writes target/reliability/<test>.json
target/debug/ovreport --check --out docs/reliability.md";

fn render(outcomes: &[Outcome]) -> String {
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let (sent, lost) = (sum(|o| o.pings_sent), sum(|o| o.pings_lost));
    let (ops, dups, panics) = (sum(|o| o.operations), sum(|o| o.duplicates), sum(|o| o.panics));
    let mut md = String::new();
    md.push_str("# Reliability\n\n");
    md.push_str(
        "Every fault, race and bad input the test suite tries, with what held. The rows are written by the \
         tests themselves (`tests/src/report.rs`) after their assertions passed, and this page is generated \
         from them; nothing here is typed by hand.\n\n",
    );
    let _ = writeln!(md, "Reproduce (as root, on a clean clone):\n\n```sh\n{REPRODUCE}\n```\n");
    md.push_str(
        "## Totals\n\n| tests | pings sent | pings lost | operations | duplicate allocations | panics |\n",
    );
    md.push_str("|---:|---:|---:|---:|---:|---:|\n");
    let _ = writeln!(md, "| {} | {sent} | {lost} | {ops} | {dups} | {panics} |\n", outcomes.len());
    let mut category = "";
    for o in outcomes {
        if o.category != category {
            category = &o.category;
            let _ = writeln!(md, "## {}\n", capitalise(category));
            md.push_str("| test | what was done | what held | pings sent / lost | ops | dups | panics |\n");
            md.push_str("|---|---|---|---:|---:|---:|---:|\n");
        }
        let pings =
            if o.pings_sent == 0 { "-".to_string() } else { format!("{} / {}", o.pings_sent, o.pings_lost) };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {pings} | {} | {} | {} |",
            o.test,
            cell(&o.scenario),
            cell(&o.held),
            o.operations,
            o.duplicates,
            o.panics
        );
        if outcomes.iter().rev().find(|x| x.category == o.category).is_some_and(|last| last.test == o.test) {
            md.push('\n');
        }
    }
    md
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A table cell: no pipes or newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = cli.dir.unwrap_or_else(report::dir);
    let outcomes = report::load(&dir)?;
    if outcomes.is_empty() {
        bail!("no outcomes in {}: run the tests first (tests/run.sh, as root)", dir.display());
    }
    let mut md = render(&outcomes);
    if let Ok(text) = std::fs::read_to_string(&cli.chaos) {
        let run: ovnet_tests::chaos::report::Summary =
            serde_json::from_str(&text).with_context(|| format!("reading {}", cli.chaos.display()))?;
        md.push('\n');
        md.push_str(&run.markdown());
    }
    match &cli.out {
        Some(path) => std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{md}"),
    }
    if cli.check {
        let bad: Vec<&Outcome> =
            outcomes.iter().filter(|o| o.pings_lost > 0 || o.duplicates > 0 || o.panics > 0).collect();
        for o in &bad {
            eprintln!(
                "ovreport: {}: {} pings lost, {} duplicates, {} panics",
                o.test, o.pings_lost, o.duplicates, o.panics
            );
        }
        if !bad.is_empty() {
            std::process::exit(1);
        }
        eprintln!("ovreport: {} outcomes, no lost ping, no duplicate, no panic", outcomes.len());
    }
    Ok(())
}
