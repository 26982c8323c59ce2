//! `ovlab demo --docker`: the demo's Docker part. A real dockerd joins the
//! first two lab hosts, each host's agent serves the `ovnet` plugin, the
//! demo network becomes a docker network on both, and a Docker container on
//! each host pings the other across the overlay.
//!
//! Every docker command is printed as it pastes into a root shell while the
//! lab is up (Debian's CLI with `-H` naming the lab dockerd's socket).

use std::time::Duration;

use anyhow::Context;

use crate::docker::{DOCKER_CLI, Dockerd, docker_host};
use crate::image::IMAGE;
use crate::lab::{Lab, poll};

/// Runs `docker ARGS` on `d`, printed first; returns its output.
fn shown(d: &Dockerd, args: &[&str]) -> anyhow::Result<String> {
    println!("$ {DOCKER_CLI} -H unix://{} {}", d.socket().display(), args.join(" "));
    let out = d.docker_ok(args)?;
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(out)
}

/// Adds the Docker part to a lab whose ovnet network `demo` exists; returns
/// the dockerds (drop them before the lab) and how many pings failed.
pub fn run(lab: &mut Lab) -> anyhow::Result<(Vec<Dockerd>, usize)> {
    println!(
        "\n== Docker: a dockerd on h1 and h2, each agent serving the ovnet plugin (ovagent --docker-plugin)"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ovctl_ok(0, &["network", "inspect", "demo"])?)?;
    let subnet = inspect["subnet"].as_str().context("network inspect shows no subnet")?.to_string();
    let mut dockerds = Vec::new();
    let mut ips = Vec::new();
    for i in 0..2 {
        let d = docker_host(lab, i)?;
        println!("   {}: dockerd socket {}", d.host, d.socket().display());
        let create =
            ["network", "create", "-d", "ovnet", "--ipam-driver", "ovnet", "--ipam-opt", "network=demo"];
        shown(&d, &[&create[..], &["--subnet", &subnet, "demo"]].concat())?;
        let name = format!("d{}", i + 1);
        shown(&d, &["run", "-d", "--name", &name, "--network", "demo", IMAGE, "sleep", "infinity"])?;
        let format = "{{(index .NetworkSettings.Networks \"demo\").IPAddress}}";
        ips.push(shown(&d, &["inspect", "-f", format, &name])?);
        dockerds.push(d);
    }
    println!("\n== Docker containers pinging across hosts");
    let mut failed = 0;
    for (from, to) in [(0, 1), (1, 0)] {
        let (d, name, ip) = (&dockerds[from], format!("d{}", from + 1), &ips[to]);
        let ok = poll("a docker ping", Duration::from_secs(5), || {
            d.docker(&["exec", &name, "ping", "-c1", "-W1", ip]).ok().filter(|o| o.status.success())
        })
        .is_ok();
        let out = shown(d, &["exec", &name, "ping", "-c", "3", "-i", "0.2", ip]).unwrap_or_default();
        let summary = out.lines().filter(|l| l.contains("packet loss")).collect::<Vec<_>>().join("; ");
        println!(
            "{name} on h{} -> {ip} on h{}: {} {summary}",
            from + 1,
            to + 1,
            if ok { "OK" } else { "FAILED" }
        );
        failed += usize::from(!ok);
    }
    Ok((dockerds, failed))
}
