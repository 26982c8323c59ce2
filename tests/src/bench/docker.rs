//! docker: real dockerds on two lab hosts, their agents serving the `ovnet`
//! plugin and mirroring the networks (`--docker-sync`). Measures what ovnet
//! adds to `docker run -d` against Docker's own `bridge` network, in the same
//! run and interleaved, and the time from `docker run -d` returning on host
//! 0 until a container on host 1 gets its first reply from the new container.
//!
//! The pinging container is a Docker container on host 1 too; its raw ICMP
//! socket is opened in its namespace through `/proc/PID/ns/net` and starts
//! sending only once `docker run` returned, one request a millisecond
//! ([`Pinger`]), with its ARP retrying every 10 ms. Every container made is
//! removed again before the next sample (not timed).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::common::DEADLINE;
use super::nsthread::in_netns;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::{ms, summarize};
use crate::Lab;
use crate::docker::{Dockerd, docker_host};
use crate::image::IMAGE;
use crate::lab::poll;
use crate::lab::{AgentOptions, LabOptions};
use ovnet_agent::metrics::sample as metrics_sample;

/// The ovnet network the scenario runs containers on.
const NETWORK: &str = "dkbench";
const SUBNET: &str = "10.77.0.0/16";
/// The user-defined network of Docker's bridge driver measured beside it.
const USER_BRIDGE: &str = "dkuserbr";

/// A dockerd on lab host `i` whose agent serves the plugin and mirrors
/// ovnet's networks into it (`--docker-plugin`, `--docker-sync`).
pub fn synced_host(lab: &mut Lab, i: usize) -> anyhow::Result<Dockerd> {
    let d = docker_host(lab, i)?;
    let sync = format!("--docker-sync=unix://{}", d.socket().display());
    lab.stop_agent(i)?;
    lab.set_agent_launch(i, d.launcher(), vec![d.plugin_flag(), sync]);
    lab.start_agent(i)?;
    Ok(d)
}

/// Waits until `d` lists the docker network `name` (the mirror made it).
pub fn wait_mirrored(d: &Dockerd, name: &str) -> anyhow::Result<()> {
    poll(&format!("docker network {name} on {}", d.host), DEADLINE, || {
        let out =
            d.docker_ok(&["network", "ls", "--filter", "driver=ovnet", "--format", "{{.Name}}"]).ok()?;
        out.lines().any(|l| l == name).then_some(())
    })
}

/// The network namespace of a running container, as a path.
fn netns_of(d: &Dockerd, container: &str) -> anyhow::Result<PathBuf> {
    let pid = d.docker_ok(&["inspect", "--format", "{{.State.Pid}}", container])?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// `docker run -d ARGS`; how long the command took.
fn timed_run(d: &Dockerd, args: &[&str]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    d.docker_ok(&[&["run", "-d"], args].concat())?;
    Ok(t0.elapsed())
}

/// Runs the scenario: 50 samples of each; with `smoke`, 3.
pub fn run(smoke: bool) -> anyhow::Result<Report> {
    let samples = if smoke { 3 } else { 50 };
    let opts = LabOptions { hosts: 2, ..Default::default() };
    let mut lab = Lab::start_with(opts, AgentOptions { metrics: true, ..Default::default() })
        .context("starting the lab")?;
    // OVBENCH_DOCKER_SYNC=0: the plugin alone, the networks made by hand.
    let sync = std::env::var("OVBENCH_DOCKER_SYNC").map_or(true, |v| v != "0");
    let (d0, d1) = if sync {
        (synced_host(&mut lab, 0)?, synced_host(&mut lab, 1)?)
    } else {
        (docker_host(&mut lab, 0)?, docker_host(&mut lab, 1)?)
    };
    lab.ctl(0, &format!("network create -d overlay --subnet {SUBNET} {NETWORK}"))?;
    if !sync {
        let create = format!(
            "network create -d ovnet --ipam-driver ovnet --ipam-opt network={NETWORK} --subnet {SUBNET} {NETWORK}"
        );
        d0.run(&create)?;
        d1.run(&create)?;
    }
    wait_mirrored(&d0, NETWORK)?;
    // A user-defined network of Docker's own bridge driver: like any
    // non-default network (ovnet's too), it gets Docker's embedded DNS.
    d0.docker_ok(&["network", "create", "-d", "bridge", USER_BRIDGE])?;
    wait_mirrored(&d1, NETWORK)?;
    d1.docker_ok(&["run", "-d", "--name", "pinger", "--network", NETWORK, IMAGE, "sleep", "3600"])?;
    let pinger_ns = netns_of(&d1, "pinger")?;
    in_netns(&pinger_ns, || {
        std::fs::write("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", "10")
            .context("setting retrans_time_ms")
    })?;
    let mut pinger = Pinger::open(&pinger_ns)?;
    let (mut ovnet, mut bridge, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    let mut user_bridge = Vec::new();
    for i in 0..samples {
        let ip = Ipv4Addr::new(10, 77, 200, 10 + i as u8);
        let (name, plain, user) = (format!("ov{i}"), format!("br{i}"), format!("ub{i}"));
        let ovnet_args =
            ["--name", &name, "--network", NETWORK, "--ip", &ip.to_string(), IMAGE, "sleep", "600"];
        let bridge_args = ["--name", &plain, "--network", "bridge", IMAGE, "sleep", "600"];
        let user_args = ["--name", &user, "--network", USER_BRIDGE, IMAGE, "sleep", "600"];
        // Alternate which goes first, so neither always runs on a warmer dockerd.
        if i % 2 == 0 {
            bridge.push(ms(timed_run(&d0, &bridge_args)?));
            user_bridge.push(ms(timed_run(&d0, &user_args)?));
        }
        let t0 = Instant::now();
        d0.docker_ok(&[&["run", "-d"], &ovnet_args[..]].concat())?;
        let returned = Instant::now();
        ovnet.push(ms(returned - t0));
        let at = pinger.first_reply(ip, returned + DEADLINE).with_context(|| format!("pinging {ip}"))?;
        reply.push(ms(at.saturating_duration_since(returned)));
        if i % 2 == 1 {
            user_bridge.push(ms(timed_run(&d0, &user_args)?));
            bridge.push(ms(timed_run(&d0, &bridge_args)?));
        }
        d0.docker_ok(&["rm", "-f", &name, &plain, &user])?;
    }
    let added = |base: &[f64]| match (summarize(&ovnet), summarize(base)) {
        (Some(o), Some(b)) => o.p50 - b.p50,
        _ => f64::NAN,
    };
    let rows = vec![
        Row::samples("docker run -d on an ovnet network", "ms", &ovnet),
        Row::samples("docker run -d on Docker's default bridge network (same run)", "ms", &bridge),
        Row::samples("docker run -d on a user-defined Docker bridge network (same run)", "ms", &user_bridge),
        Row::value(
            "ovnet adds to docker run -d, against the default bridge (p50 difference)",
            "ms",
            ovnet.len(),
            added(&bridge),
        ),
        Row::value(
            "ovnet adds to docker run -d, against a user-defined bridge network (p50 difference)",
            "ms",
            ovnet.len(),
            added(&user_bridge),
        )
        .at_most(Stat::Value, 20.0),
        Row::samples(
            "docker run -d returns until a container on another host gets its first reply",
            "ms",
            &reply,
        )
        .at_most(Stat::P50, 50.0),
    ];
    let mut rows = rows;
    rows.extend(plugin_rows(&lab)?);
    let details = serde_json::json!({ "hosts": 2, "samples": samples, "image": IMAGE, "docker_sync": sync });
    Ok(Report { rows, details, ..Default::default() })
}

/// The plugin calls dockerd makes for one `docker run -d` on an ovnet network.
const RUN_CALLS: &[(&str, u32)] = &[
    ("IpamDriver.RequestAddress", 1),
    ("NetworkDriver.CreateEndpoint", 1),
    ("NetworkDriver.Join", 1),
    ("NetworkDriver.ProgramExternalConnectivity", 1),
    ("NetworkDriver.EndpointOperInfo", 2),
];

/// How long host 0's plugin took to answer each call of a `docker run`
/// (the mean over the run, from its metrics), and their sum: the part of
/// what ovnet adds that is the agent's own, the rest is dockerd's.
fn plugin_rows(lab: &Lab) -> anyhow::Result<Vec<Row>> {
    let (code, text) = lab.http_get(0, "/metrics")?;
    anyhow::ensure!(code == 200, "GET /metrics on h1: status {code}");
    let mut rows = Vec::new();
    let mut total = 0.0;
    for (method, per_run) in RUN_CALLS {
        let series = |part: &str| format!("ovnet_docker_plugin_call_seconds_{part}{{method=\"{method}\"}}");
        let sum = metrics_sample(&text, &series("sum")).unwrap_or(0.0);
        let count = metrics_sample(&text, &series("count")).unwrap_or(0.0);
        let mean_ms = if count > 0.0 { sum / count * 1000.0 } else { 0.0 };
        total += mean_ms * f64::from(*per_run);
        rows.push(Row::value(&format!("plugin answers {method} (mean)"), "ms", count as usize, mean_ms));
    }
    rows.push(Row::value("plugin time per docker run -d (sum of its calls)", "ms", 1, total));
    Ok(rows)
}
