//! datapath: iperf3 TCP throughput and ping RTT, container to container
//! across two hosts against host to host on the underlay, in the same run.
//!
//! Runs alternate (underlay, overlay, underlay, ...) so drift on the machine
//! hits both paths alike; each figure is the median of the runs and the
//! verdicts are on the ratios. Both paths use Debian's `iperf3` and `ping`
//! binaries started the same way (`ip netns exec`). The RTT target is judged
//! on flood pings (`ping -f`: the next request leaves when the reply is in),
//! which measure what the path costs; pings 5 ms apart are reported too, but
//! on a virtual machine their average swings by tens of microseconds from
//! run to run (the CPU wakes up for every packet), more than the target.
//! With two CPUs or more, iperf3's client runs on CPU 0 and its server on
//! CPU 1 on every path (`-A`): left to the scheduler, the two sometimes
//! share a CPU, which moved single runs by a quarter.
//!
//! A third path is the kernel's own reference: the same topology built by
//! hand with `ip` on the same two hosts (a bridge, a VXLAN device with
//! another VNI on the same UDP port, a veth pair into a fresh namespace on
//! each side; [`HandBuilt`]). Its ratios to the underlay say what the
//! kernel's bridge + VXLAN path costs on this machine, and overlay /
//! hand-built says what ovnet adds to it.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::common::{DEADLINE, container, lab, network};
use super::nsthread::ns_path;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::median;
use crate::Lab;
use crate::lab::poll;
use crate::netns::{Netns, run as run_cmd};

const PORT: &str = "5201";

/// One path: where the client runs, where the server runs, its address.
struct Path {
    client: String,
    server: String,
    addr: Ipv4Addr,
}

/// How `ping` is run: back to back (`-f`, each request leaves when the last
/// reply is in: the path's own cost) or 5 ms apart (what an idle application
/// sees, including the CPU waking up for every packet).
#[derive(Clone, Copy)]
enum Pace {
    Flood,
    Interval,
}

/// The paths, in the order every run measures them.
const UNDERLAY: usize = 0;
const OVERLAY: usize = 1;
const HAND: usize = 2;

/// Per path (underlay, overlay, hand-built): throughput in Gbit/s and
/// average RTTs in us, one per run.
#[derive(Default)]
struct Runs {
    tput: [Vec<f64>; 3],
    flood: [Vec<f64>; 3],
    interval: [Vec<f64>; 3],
}

/// The reference path: bridge `hbbr0` + VXLAN `hbvx0` (VNI 99, below the
/// agent's range, UDP port 4789 like the agent's) on hosts 0 and 1, and a
/// namespace on each side behind a veth pair, MTU 1450 as the agent gives
/// containers on a 1500 underlay, addresses 10.99.0.1 and .2 (outside the
/// agent's 10.128.0.0/9 pool). The VXLAN device has two of the agent's
/// settings (no learning, no outer UDP checksum) and keeps the kernel's
/// defaults otherwise (GRO on, which the agent turns off; IPv6 on every
/// device); unknown MACs are flooded to the other host through the
/// all-zeros FDB entry, so the bridges learn.
/// Everything in the host namespaces goes with the lab; the two namespaces
/// here go when this is dropped.
struct HandBuilt {
    client: Netns,
    server: Netns,
}

impl HandBuilt {
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

    fn build(lab: &Lab) -> anyhow::Result<HandBuilt> {
        let (client, server) = (container(lab, "hb1")?, container(lab, "hb2")?);
        for (i, (ns, addr)) in [(&client, Self::CLIENT), (&server, Self::SERVER)].into_iter().enumerate() {
            let host = &lab.hosts[i].ns;
            let (local, peer) = (lab.hosts[i].ip.to_string(), lab.hosts[1 - i].ip.to_string());
            host.ip(&["link", "add", "hbbr0", "type", "bridge"])?;
            host.ip(&[
                "link",
                "add",
                "hbvx0",
                "type",
                "vxlan",
                "id",
                "99",
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                "eth0",
                "nolearning",
                "noudpcsum",
            ])?;
            host.ip(&["link", "set", "hbvx0", "master", "hbbr0", "up"])?;
            host.ip(&["link", "set", "hbbr0", "up"])?;
            run_cmd(
                Command::new("bridge")
                    .args(["-n", &host.name, "fdb", "append", "00:00:00:00:00:00"])
                    .args(["dev", "hbvx0", "dst", &peer]),
            )?;
            host.ip(&[
                "link", "add", "hbve0", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "mtu", "1450",
                "netns", &ns.name,
            ])?;
            host.ip(&["link", "set", "hbve0", "master", "hbbr0", "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Pinger::open(&ns_path(&client.name))?
            .first_reply(Self::SERVER, std::time::Instant::now() + DEADLINE)?;
        Ok(HandBuilt { client, server })
    }

    fn path(&self) -> Path {
        Path { client: self.client.name.clone(), server: self.server.name.clone(), addr: Self::SERVER }
    }
}

/// Runs the scenario: 3 runs of 5 s and 2,000 flood + 200 paced pings per
/// path; 1 run of 1 s and 200 + 20 with `smoke`.
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
    let hand = HandBuilt::build(&lab)?;
    let reference = hand.path();
    let mut r = Runs::default();
    for _ in 0..runs {
        for (i, p) in [&underlay, &overlay, &reference].into_iter().enumerate() {
            r.tput[i].push(iperf(p, secs)? / 1e9);
            r.flood[i].push(ping_avg_us(p, pings * 10, Pace::Flood)?);
            r.interval[i].push(ping_avg_us(p, pings, Pace::Interval)?);
        }
    }
    let cc = lab.hosts[0].ns.sysctl_get("net.ipv4.tcp_congestion_control")?;
    let per_path = |v: &[Vec<f64>; 3]| serde_json::json!({ "underlay": v[UNDERLAY], "overlay": v[OVERLAY], "hand_built": v[HAND] });
    let details = serde_json::json!({
        "runs": runs, "seconds_per_run": secs, "flood_pings_per_run": pings * 10, "paced_pings_per_run": pings,
        "tcp_congestion_control": cc, "iperf3_pinned": pinned(),
        "throughput_gbit": per_path(&r.tput),
        "rtt_flood_avg_us": per_path(&r.flood),
        "rtt_5ms_avg_us": per_path(&r.interval),
    });
    Ok(Report { rows: rows(&r, runs), details, ..Default::default() })
}

fn rows(r: &Runs, runs: usize) -> Vec<Row> {
    let med = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let [tu, to, th] = [UNDERLAY, OVERLAY, HAND].map(|p| med(&r.tput[p]));
    let [fu, fo, fh] = [UNDERLAY, OVERLAY, HAND].map(|p| med(&r.flood[p]));
    let (iu, io) = (med(&r.interval[UNDERLAY]), med(&r.interval[OVERLAY]));
    vec![
        Row::value("TCP throughput, host to host (underlay)", "Gbit/s", runs, tu),
        Row::value("TCP throughput, container to container (overlay)", "Gbit/s", runs, to),
        Row::value("TCP throughput, hand-built bridge + VXLAN", "Gbit/s", runs, th),
        Row::value("throughput overlay / underlay", "ratio", runs, to / tu).at_least(Stat::Value, 0.88),
        Row::value("throughput hand-built / underlay", "ratio", runs, th / tu),
        Row::value("throughput overlay / hand-built", "ratio", runs, to / th),
        Row::value("ping -f RTT, host to host (underlay)", "us", runs, fu),
        Row::value("ping -f RTT, container to container (overlay)", "us", runs, fo),
        Row::value("ping -f RTT, hand-built bridge + VXLAN", "us", runs, fh),
        Row::value("ping -f RTT overhead overlay - underlay", "us", runs, fo - fu).at_most(Stat::Value, 10.0),
        Row::value("ping -f RTT overhead hand-built - underlay", "us", runs, fh - fu),
        Row::value("ping -f RTT overlay - hand-built", "us", runs, fo - fh),
        Row::value("ping -i 0.005 RTT, host to host (underlay)", "us", runs, iu),
        Row::value("ping -i 0.005 RTT, container to container (overlay)", "us", runs, io),
        Row::value("ping -i 0.005 RTT overhead overlay - underlay", "us", runs, io - iu),
    ]
}

/// Kills (by PID: our own child) and reaps a server left running.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether iperf3 is pinned: client to CPU 0, server to CPU 1.
fn pinned() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// One iperf3 TCP test of `secs` seconds over `p`; bits per second received.
fn iperf(p: &Path, secs: u32) -> anyhow::Result<f64> {
    let addr = p.addr.to_string();
    let pinned = pinned();
    let cpu = |n: &'static str| if pinned { vec!["-A", n] } else { vec![] };
    let server = Command::new("ip")
        .args(["netns", "exec", &p.server, "iperf3", "-s", "-1", "-B", &addr, "-p", PORT])
        .args(cpu("1"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (is iperf3 installed? tests/setup.sh installs it)")?;
    let _server = Reap(server);
    let secs = secs.to_string();
    let mut client = vec!["netns", "exec", &p.client, "iperf3", "-c", &addr, "-p", PORT, "-t", &secs, "-J"];
    client.extend(cpu("0"));
    // The server needs a moment to listen: a refused client fails at once
    // (iperf3 -J then reports "error" and, in 3.12, still exits 0) and is retried.
    let mut last = String::new();
    let got = poll("iperf3 to connect", Duration::from_secs(10), || {
        let out = Command::new("ip").args(&client).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        last = v["error"].to_string();
        v["end"]["sum_received"]["bits_per_second"].as_f64()
    });
    got.with_context(|| format!("iperf3 over {addr}: {last}"))
}

/// The average RTT of `n` pings over `p` at `pace`, in microseconds.
fn ping_avg_us(p: &Path, n: usize, pace: Pace) -> anyhow::Result<f64> {
    let (count, addr) = (n.to_string(), p.addr.to_string());
    let mut args = vec!["netns", "exec", &p.client, "ping", "-q", "-c", &count];
    args.extend(match pace {
        Pace::Flood => ["-f"].as_slice(),
        Pace::Interval => ["-i", "0.005"].as_slice(),
    });
    args.push(&addr);
    let out = run_cmd(Command::new("ip").args(&args))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.031/0.045/0.120/0.010 ms[, ipg/ewma ...]
    let Some(stats) = text.lines().find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = ")) else {
        bail!("no RTT summary in ping's output: {text}");
    };
    let avg: f64 = stats.split('/').nth(1).context("no average RTT")?.parse().context("average RTT")?;
    Ok(avg * 1000.0)
}
