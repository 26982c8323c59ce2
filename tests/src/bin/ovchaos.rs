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
    /// Real runtimes too: a dockerd on h1 and h2 (the ovnet plugin,
    /// `--docker-sync`), podman through CNI on h3, and their faults
    /// (dockerd restarts, `docker rm -f` while the agent is down, podman churn).
    #[arg(long)]
    runtimes: bool,
}

impl Cli {
    fn options(&self, seed: u64) -> Options {
        Options {
            seed,
            hosts: self.hosts,
            duration: self.duration,
            lease_ttl: self.lease_ttl,
            max_outage: self.max_outage,
            converge: self.converge,
            machine: self.machine.clone(),
            runtimes: self.runtimes,
        }
    }

    /// The command line that replays the run: the seed and every flag that
    /// shapes the schedule and differs from its default.
    fn replay(&self, seed: u64) -> String {
        let mut line = format!("ovchaos --seed {seed} --duration {}s", self.duration.as_secs());
        if self.hosts != 5 {
            line += &format!(" --hosts {}", self.hosts);
        }
        if self.lease_ttl != 3 {
            line += &format!(" --lease-ttl {}", self.lease_ttl);
        }
        if self.max_outage != Duration::from_secs(30) {
            line += &format!(" --max-outage {}s", self.max_outage.as_secs());
        }
        if self.runtimes {
            line += " --runtimes";
        }
        line
    }
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
    println!("ovchaos seed {seed} (replay: {})", cli.replay(seed));
    let opts = cli.options(seed);
    if cli.plan {
        for (n, s) in ovnet_tests::chaos::schedule::faults(seed, opts.shape()).iter().enumerate() {
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
    let summary = run(&opts)?;
    write(&cli.out, &summary)?;
    println!("{}", summary.markdown());
    println!("report: {}", cli.out.join("chaos.json").display());
    if !summary.violations.is_empty() {
        eprintln!("ovchaos: {}: {} violation(s)", cli.replay(seed), summary.violations.len());
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_line_names_every_flag_that_shapes_the_schedule() {
        let cli = |args: &[&str]| Cli::parse_from([&["ovchaos"], args].concat());
        assert_eq!(cli(&[]).replay(7), "ovchaos --seed 7 --duration 600s");
        let all =
            ["--duration", "90s", "--hosts", "3", "--max-outage", "8s", "--runtimes", "--lease-ttl", "4"];
        let line = "ovchaos --seed 7 --duration 90s --hosts 3 --lease-ttl 4 --max-outage 8s --runtimes";
        assert_eq!(cli(&all).replay(7), line);
        let replayed: Vec<&str> = line.split_whitespace().skip(3).collect();
        assert_eq!(cli(&replayed).replay(7), line, "the line parses back to itself");
    }
}
