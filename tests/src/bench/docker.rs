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

use super::common::{DEADLINE, lab};
use super::nsthread::in_netns;
use super::pinger::Pinger;
use super::report::{Report, Row, Stat};
use super::stats::{ms, summarize};
use crate::Lab;
use crate::docker::{Dockerd, docker_host};
use crate::image::IMAGE;
use crate::lab::poll;

/// The ovnet network the scenario runs containers on.
const NETWORK: &str = "dkbench";
const SUBNET: &str = "10.77.0.0/16";

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
    let mut lab = lab(2)?;
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
    wait_mirrored(&d1, NETWORK)?;
    d1.docker_ok(&["run", "-d", "--name", "pinger", "--network", NETWORK, IMAGE, "sleep", "3600"])?;
    let pinger_ns = netns_of(&d1, "pinger")?;
    in_netns(&pinger_ns, || {
        std::fs::write("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", "10")
            .context("setting retrans_time_ms")
    })?;
    let mut pinger = Pinger::open(&pinger_ns)?;
    let (mut ovnet, mut bridge, mut reply) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples {
        let ip = Ipv4Addr::new(10, 77, 200, 10 + i as u8);
        let (name, plain) = (format!("ov{i}"), format!("br{i}"));
        let ovnet_args =
            ["--name", &name, "--network", NETWORK, "--ip", &ip.to_string(), IMAGE, "sleep", "600"];
        let bridge_args = ["--name", &plain, "--network", "bridge", IMAGE, "sleep", "600"];
        // Alternate which goes first, so neither always runs on a warmer dockerd.
        if i % 2 == 0 {
            bridge.push(ms(timed_run(&d0, &bridge_args)?));
        }
        let t0 = Instant::now();
        d0.docker_ok(&[&["run", "-d"], &ovnet_args[..]].concat())?;
        let returned = Instant::now();
        ovnet.push(ms(returned - t0));
        let at = pinger.first_reply(ip, returned + DEADLINE).with_context(|| format!("pinging {ip}"))?;
        reply.push(ms(at.saturating_duration_since(returned)));
        if i % 2 == 1 {
            bridge.push(ms(timed_run(&d0, &bridge_args)?));
        }
        d0.docker_ok(&["rm", "-f", &name, &plain])?;
    }
    let added = match (summarize(&ovnet), summarize(&bridge)) {
        (Some(o), Some(b)) => o.p50 - b.p50,
        _ => f64::NAN,
    };
    let rows = vec![
        Row::samples("docker run -d on an ovnet network", "ms", &ovnet),
        Row::samples("docker run -d on Docker's bridge network (same run)", "ms", &bridge),
        Row::value("ovnet adds to docker run -d (p50 difference)", "ms", ovnet.len(), added)
            .at_most(Stat::Value, 20.0),
        Row::samples(
            "docker run -d returns until a container on another host gets its first reply",
            "ms",
            &reply,
        )
        .at_most(Stat::P50, 50.0),
    ];
    let details = serde_json::json!({ "hosts": 2, "samples": samples, "image": IMAGE, "docker_sync": sync });
    Ok(Report { rows, details, ..Default::default() })
}
