//! `ovlab demo`: the README's demo. Builds a lab (etcd + underlay + N hosts
//! in namespaces, a real ovagent on each), creates an overlay network, puts a
//! container on every host and prints the cross-host pings.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

#[derive(Parser)]
#[command(name = "ovlab", about = "The ovnet lab: hosts, etcd and containers in network namespaces")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Three hosts, one overlay network, a container on each host, pings across.
    Demo {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=20))]
        hosts: u16,
        /// Keep the lab running until Ctrl-C (to explore it with ip netns exec ...).
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let Cli { cmd: Cmd::Demo { hosts, keep } } = Cli::parse();
    let hosts = usize::from(hosts);
    println!("== starting the lab: etcd + underlay bridge, {hosts} hosts, an ovagent on each");
    let mut lab = Lab::start(LabOptions { hosts, ..Default::default() })?;
    println!("   underlay namespace {} (etcd at {})", lab.underlay.name, lab.etcd.endpoint());
    for h in &lab.hosts {
        println!("   host {} = namespace {}, VTEP {}", h.name, h.ns.name, h.ip);
    }
    println!("\n$ ovctl network create -d overlay demo");
    println!("{}", lab.ovctl_ok(0, &["network", "create", "-d", "overlay", "demo"])?);
    let mut containers = Vec::new();
    for i in 0..hosts {
        let name = format!("c{}", i + 1);
        let (ns, ip) = lab.connected(i, "demo", &name)?;
        println!("$ ovctl -H {} network connect demo {ns}\n{ip}", lab.hosts[i].name);
        containers.push((ns, ip));
    }
    println!("\n$ ovctl host ls\n{}", lab.ovctl_ok(0, &["host", "ls"])?);
    println!("\n$ ovctl network ls\n{}", lab.ovctl_ok(0, &["network", "ls"])?);
    println!("\n== cross-host pings");
    let mut failed = 0;
    for (a, (from, from_ip)) in containers.iter().enumerate() {
        for (b, (_, to_ip)) in containers.iter().enumerate() {
            if a == b {
                continue;
            }
            let ok =
                poll("ping", Duration::from_secs(5), || ovnet_tests::netns::ping(from, to_ip).then_some(()))
                    .is_ok();
            let out = lab.containers_exec(from, &["ping", "-c", "3", "-i", "0.2", to_ip])?;
            let summary = out
                .lines()
                .filter(|l| l.contains("packet loss") || l.starts_with("rtt"))
                .collect::<Vec<_>>()
                .join("; ");
            println!(
                "c{} ({from_ip}) on h{} -> c{} ({to_ip}) on h{}: {} {summary}",
                a + 1,
                a + 1,
                b + 1,
                b + 1,
                if ok { "OK" } else { "FAILED" }
            );
            failed += usize::from(!ok);
        }
    }
    if keep {
        println!(
            "\nThe lab stays up; try: ip netns exec {} ping {}. Ctrl-C ends it.",
            containers[0].0, containers[1].1
        );
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc_channel(tx)?;
        let _ = rx.recv();
    }
    drop(lab);
    anyhow::ensure!(failed == 0, "{failed} cross-host pings failed");
    println!("\nall cross-host pings succeeded; the lab was torn down");
    Ok(())
}

/// Sends on `tx` at SIGINT or SIGTERM.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        });
        let _ = tx.send(());
    });
    Ok(())
}
