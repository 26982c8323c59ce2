//! datapath: iperf3 TCP throughput and ping RTT, container to container
//! across two hosts against host to host on the underlay, in the same run.
//!
//! Runs alternate (underlay, overlay, underlay, ...) so drift on the machine
//! hits both paths alike; each figure is the median of the runs and the
//! verdicts are on the ratios. Both paths use Debian's `iperf3` and `ping`
//! binaries started the same way (`ip netns exec`).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::common::{DEADLINE, lab, network};
use super::nsthread::ns_path;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::median;
use crate::lab::poll;
use crate::netns::run as run_cmd;

const PORT: &str = "5201";

/// One path: where the client runs, where the server runs, its address.
struct Path {
    client: String,
    server: String,
    addr: Ipv4Addr,
}

/// Runs the scenario: 3 runs of 5 s and 200 pings per path; 1 of 1 s and 20 with `smoke`.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let (runs, secs, pings) = if smoke { (1, 1, 20) } else { (3, 5, 200) };
    let mut lab = lab(2)?;
    let net = network(&lab, "bench")?;
    let (c1, _) = lab.connected(0, &net.name, "c1")?;
    let (c2, ip2) = lab.connected(1, &net.name, "c2")?;
    let ip2: Ipv4Addr = ip2.parse()?;
    Pinger::open(&ns_path(&c1))?.first_reply(ip2, std::time::Instant::now() + DEADLINE)?;
    let underlay = Path {
        client: lab.hosts[0].ns.name.clone(),
        server: lab.hosts[1].ns.name.clone(),
        addr: lab.hosts[1].ip,
    };
    let overlay = Path { client: c1, server: c2, addr: ip2 };
    let (mut tput, mut rtt) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..runs {
        for (i, p) in [&underlay, &overlay].into_iter().enumerate() {
            tput[i].push(iperf(p, secs)? / 1e9);
            rtt[i].push(ping_avg_us(p, pings)?);
        }
    }
    let med = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let (tu, to, ru, ro) = (med(&tput[0]), med(&tput[1]), med(&rtt[0]), med(&rtt[1]));
    let rows = vec![
        Row::value("TCP throughput, host to host (underlay)", "Gbit/s", runs, tu),
        Row::value("TCP throughput, container to container (overlay)", "Gbit/s", runs, to),
        Row::value("throughput overlay / underlay", "ratio", runs, to / tu).at_least(Stat::Value, 0.88),
        Row::value("ping RTT, host to host (underlay)", "us", runs, ru),
        Row::value("ping RTT, container to container (overlay)", "us", runs, ro),
        Row::value("RTT overhead overlay - underlay", "us", runs, ro - ru).at_most(Stat::Value, 10.0),
        Row::value("RTT overlay / underlay", "ratio", runs, ro / ru),
    ];
    let details = serde_json::json!({
        "runs": runs, "seconds_per_run": secs, "pings_per_run": pings,
        "throughput_gbit": { "underlay": tput[0], "overlay": tput[1] },
        "rtt_avg_us": { "underlay": rtt[0], "overlay": rtt[1] },
    });
    Ok(Report { rows, details, ..Default::default() })
}

/// Kills (by PID: our own child) and reaps a server left running.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 TCP test of `secs` seconds over `p`; bits per second received.
fn iperf(p: &Path, secs: u32) -> anyhow::Result<f64> {
    let addr = p.addr.to_string();
    let server = Command::new("ip")
        .args(["netns", "exec", &p.server, "iperf3", "-s", "-1", "-B", &addr, "-p", PORT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (is iperf3 installed? tests/setup.sh installs it)")?;
    let _server = Reap(server);
    let secs = secs.to_string();
    let client = ["netns", "exec", &p.client, "iperf3", "-c", &addr, "-p", PORT, "-t", &secs, "-J"];
    // The server needs a moment to listen: a refused client fails at once and is retried.
    let out = poll("iperf3 to connect", Duration::from_secs(10), || {
        Command::new("ip").args(client).output().ok().filter(|o| o.status.success())
    })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing iperf3 -J")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 reported no throughput")
}

/// The average RTT of `n` pings 5 ms apart over `p`, in microseconds.
fn ping_avg_us(p: &Path, n: usize) -> anyhow::Result<f64> {
    let out = run_cmd(Command::new("ip").args([
        "netns",
        "exec",
        &p.client,
        "ping",
        "-q",
        "-c",
        &n.to_string(),
        "-i",
        "0.005",
        &p.addr.to_string(),
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.031/0.045/0.120/0.010 ms
    let Some(stats) =
        text.lines().find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg")).map(|(_, v)| v))
    else {
        bail!("no RTT summary in ping's output: {text}");
    };
    let avg: f64 = stats.split('/').nth(1).context("no average RTT")?.parse().context("average RTT")?;
    Ok(avg * 1000.0)
}
