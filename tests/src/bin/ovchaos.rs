//! `ovchaos`: the seeded chaos soak of issue #15 (see `ovnet_tests::chaos`).
//! Prints the seed first; `--seed` replays a schedule. Writes the report as
//! JSON and as a Markdown table, and exits non-zero on any violation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ovnet_tests::chaos::report::Summary;
use ovnet_tests::chaos::run::{Options, run};

#[derive(Parser, Debug)]
#[command(name = "ovchaos", about = "Seeded fault soak of an ovnet lab, checking every invariant")]
struct Cli {
    /// The schedule's seed (default: a random one, printed first).
    #[arg(long)]
    seed: Option<u64>,
    /// How long to apply faults, e.g. 10m, 120s.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Hosts in the lab.
    #[arg(long, default_value_t = 5)]
    hosts: usize,
    /// The agents' lease TTL in seconds (faults "past the TTL" last longer).
    #[arg(long, default_value_t = 3)]
    lease_ttl: u64,
    /// The longest whole-cluster etcd outage.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_outage: Duration,
    /// How soon after a fault heals doctor must be clean and all pairs ping.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    converge: Duration,
    /// Where to write chaos.json and chaos.md.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// A description of the machine, for the report.
    #[arg(long, default_value = "this machine")]
    machine: String,
    /// Print the fault schedule of the seed and exit.
    #[arg(long)]
    plan: bool,
    /// Print the Markdown section of a saved report (chaos.json) and exit.
    #[arg(long)]
    render: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number with s or m, e.g. 120s or 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: the unit must be s or m")),
    }
}

fn write(out: &std::path::Path, s: &Summary) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("chaos.json"), serde_json::to_string_pretty(s)?)?;
    std::fs::write(out.join("chaos.md"), s.markdown())?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.render {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let summary: Summary =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        print!("{}", summary.markdown());
        return Ok(());
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        ovnet_tests::lab::set_bin_dir(dir.to_path_buf());
    }
    let seed = cli.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    println!("ovchaos seed {seed} (replay: ovchaos --seed {seed} --duration {}s)", cli.duration.as_secs());
    if cli.plan {
        let shape = ovnet_tests::chaos::schedule::Shape {
            hosts: cli.hosts,
            members: 3,
            duration: cli.duration,
            lease_ttl: Duration::from_secs(cli.lease_ttl),
            max_outage: cli.max_outage,
        };
        for (n, s) in ovnet_tests::chaos::schedule::faults(seed, shape).iter().enumerate() {
            println!(
                "step {:3} at {:6.1} s for {:4.1} s: {:?}",
                n + 1,
                s.at.as_secs_f64(),
                s.hold.as_secs_f64(),
                s.fault
            );
        }
        return Ok(());
    }
    let opts = Options {
        seed,
        hosts: cli.hosts,
        duration: cli.duration,
        lease_ttl: cli.lease_ttl,
        max_outage: cli.max_outage,
        converge: cli.converge,
        machine: cli.machine,
    };
    let summary = run(&opts)?;
    write(&cli.out, &summary)?;
    println!("{}", summary.markdown());
    println!("report: {}", cli.out.join("chaos.json").display());
    if !summary.violations.is_empty() {
        eprintln!("ovchaos: seed {seed}: {} violation(s)", summary.violations.len());
        std::process::exit(1);
    }
    Ok(())
}
