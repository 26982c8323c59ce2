//! `ovlab demo`: the README's demo. Builds a lab (etcd + underlay + N hosts
//! in namespaces, a real ovagent on each), creates an overlay network, puts a
//! container on every host and prints the cross-host pings, then publishes
//! port 8080 of h1 to a container and asks it from a namespace outside the
//! cluster.
//!
//! Every command it prints runs as shown when pasted into a root shell while
//! the lab is up (`--keep`): `ovctl` lines name the host's real agent socket
//! (`-H unix://...`), and the `export PATH=...` line printed first puts the
//! `ovctl` the lab uses on PATH.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ovnet_tests::lab::{bin_dir, poll};
use ovnet_tests::{Lab, LabOptions};

#[derive(Parser)]
#[command(
    name = "ovlab",
    about = "The ovnet lab: hosts, etcd and containers in network namespaces on this machine",
    long_about = "The ovnet lab: an underlay bridge with etcd, N hosts with an ovagent each, and containers, \
                  all network namespaces on this machine (root needed). `ovlab demo` is what tests/demo.sh runs.",
    after_help = "Examples (as root, from the repository, after cargo build --workspace --bins):\n  \
                  target/debug/ovlab demo               # 3 hosts, pings across, then tears the lab down\n  \
                  target/debug/ovlab demo --hosts 5     # 5 hosts\n  \
                  target/debug/ovlab demo --keep        # stays up until Ctrl-C, prints where to look\n  \
                  target/debug/ovlab demo --docker      # also Docker containers on h1 and h2 (docker.io, busybox-static)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N hosts (3 by default), one overlay network, a container on each host, pings across.
    Demo {
        /// How many hosts (2 to 20), each a namespace with its own ovagent.
        #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=20))]
        hosts: u16,
        /// Keep the lab running until Ctrl-C or SIGTERM, and print where its
        /// sockets, logs and etcd keys are and commands to look around.
        #[arg(long)]
        keep: bool,
        /// Also run a dockerd on h1 and h2 and Docker containers on the
        /// demo network (through the agents' ovnet plugin) pinging across.
        #[arg(long)]
        docker: bool,
    },
}

/// A container of the demo: its namespace and address, and its host.
struct Container {
    ns: String,
    ip: String,
    host: usize,
}

fn main() -> anyhow::Result<()> {
    let Cli { cmd: Cmd::Demo { hosts, keep, docker } } = Cli::parse();
    let hosts = usize::from(hosts);
    let bins = std::fs::canonicalize(bin_dir()).unwrap_or_else(|_| bin_dir());
    println!("== starting the lab: etcd + underlay bridge, {hosts} hosts, an ovagent on each");
    let mut lab = Lab::start(LabOptions { hosts, ..Default::default() })?;
    println!("   underlay namespace {} (etcd at {})", lab.underlay.name, lab.etcd.endpoint());
    for h in &lab.hosts {
        println!("   host {} = namespace {}, VTEP {}", h.name, h.ns.name, h.ip);
    }
    println!("\nThe commands below run as shown in a root shell while the lab is up (--keep), with");
    println!("$ export PATH=\"{}:$PATH\"", bins.display());
    println!();
    shown(&lab, 0, &["network", "create", "-d", "overlay", "demo"])?;
    let mut containers = Vec::new();
    for i in 0..hosts {
        let name = format!("c{}", i + 1);
        let ns = lab.container(&name)?;
        let ip = shown(&lab, i, &["network", "connect", "demo", &ns, "--name", &name])?;
        containers.push(Container { ns, ip, host: i });
    }
    println!();
    shown(&lab, 0, &["host", "ls"])?;
    println!();
    shown(&lab, 0, &["network", "ls"])?;
    println!("\n== cross-host pings");
    let mut failed = pings(&lab, &containers)?;
    failed += by_name(&lab, &containers)?;
    failed += published(&mut lab)?;
    let dockerds = match docker {
        true => {
            let (dockerds, docker_failed) = ovnet_tests::docker_demo::run(&mut lab)?;
            failed += docker_failed;
            dockerds
        }
        false => Vec::new(),
    };
    if keep {
        let vni = vni(&lab)?;
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc_channel(tx)?;
        print!("{}", look_around(&lab, &containers, &bins, vni));
        std::io::Write::flush(&mut std::io::stdout())?;
        let _ = rx.recv();
    }
    drop(dockerds);
    drop(lab);
    anyhow::ensure!(failed == 0, "{failed} cross-host pings or the published port failed");
    println!("\nall cross-host pings succeeded, the published port answered; the lab was torn down");
    Ok(())
}

/// `ovctl -H unix://SOCKET ARGS` on host `i`: printed as a command that
/// pastes, run, its output printed and returned.
fn shown(lab: &Lab, i: usize, args: &[&str]) -> anyhow::Result<String> {
    println!("$ ovctl -H unix://{} {}", lab.hosts[i].socket.display(), args.join(" "));
    let out = lab.ovctl_ok(i, args)?;
    println!("{out}");
    Ok(out)
}

/// Pings each next host's container by name (the agents' DNS, through the
/// resolv.conf `network connect` wrote); returns how many failed.
fn by_name(lab: &Lab, containers: &[Container]) -> anyhow::Result<usize> {
    println!("\n== by name (each agent answers DNS on the gateway: names from etcd, every host)");
    let mut failed = 0;
    for (a, from) in containers.iter().enumerate() {
        let b = (a + 1) % containers.len();
        if a == b {
            continue;
        }
        let to = format!("c{}", b + 1);
        println!(
            "$ ip netns exec {} ping -c 2 {to}   # c{} on h{} -> {to} on h{}",
            from.ns,
            a + 1,
            from.host + 1,
            b + 1
        );
        let out = lab.containers_exec(&from.ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &to])?;
        let first = out.lines().next().unwrap_or_default().to_string();
        let received = out.lines().any(|l| l.contains(" 0% packet loss"));
        println!("{first}\n{}", if received { "answered" } else { "FAILED" });
        failed += usize::from(!received);
    }
    Ok(failed)
}

/// Pings every container from every other; returns how many pairs failed.
fn pings(lab: &Lab, containers: &[Container]) -> anyhow::Result<usize> {
    let mut failed = 0;
    for (a, from) in containers.iter().enumerate() {
        for (b, to) in containers.iter().enumerate() {
            if a == b {
                continue;
            }
            let ok = poll("ping", Duration::from_secs(5), || {
                ovnet_tests::netns::ping(&from.ns, &to.ip).then_some(())
            })
            .is_ok();
            let out = lab.containers_exec(&from.ns, &["ping", "-c", "3", "-i", "0.2", &to.ip])?;
            let summary = out
                .lines()
                .filter(|l| l.contains("packet loss") || l.starts_with("rtt"))
                .collect::<Vec<_>>()
                .join("; ");
            println!(
                "c{} ({}) on h{} -> c{} ({}) on h{}: {} {summary}",
                a + 1,
                from.ip,
                from.host + 1,
                b + 1,
                to.ip,
                to.host + 1,
                if ok { "OK" } else { "FAILED" }
            );
            failed += usize::from(!ok);
        }
    }
    Ok(failed)
}

/// A web container on h1 with port 8080 of h1 published to it, asked from
/// a namespace outside the cluster; returns 1 when it did not answer.
fn published(lab: &mut Lab) -> anyhow::Result<usize> {
    use ovnet_tests::echo::{Echo, OUTSIDE_IP, Proto, ask, outside};
    println!("\n== a published port, reached from outside the cluster");
    let out = outside(lab)?;
    println!("   namespace {} = a machine at {OUTSIDE_IP} on the underlay, no ovnet host", out.name);
    let web = lab.container("web")?;
    let _server = Echo::start(&format!("/run/netns/{web}"), 80)?;
    shown(lab, 0, &["network", "connect", "--publish", "8080:80", "demo", &web])?;
    let to = std::net::SocketAddr::from((lab.hosts[0].ip, 8080));
    let seen = poll("the published port", Duration::from_secs(5), || {
        ask(&out.path(), Proto::Tcp, to, Duration::from_secs(1)).ok()
    });
    match seen {
        Ok(seen) => {
            println!("{OUTSIDE_IP} -> {to} (h1) -> web:80: OK, the server in web saw the client as {seen}");
            Ok(0)
        }
        Err(e) => {
            println!("{OUTSIDE_IP} -> {to} (h1) -> web:80: FAILED ({e})");
            Ok(1)
        }
    }
}

/// The demo network's VNI, which names its devices (`ovbrVNI`, `ovvxVNI`).
fn vni(lab: &Lab) -> anyhow::Result<u64> {
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ovctl_ok(0, &["network", "inspect", "demo"])?)?;
    inspect["vni"].as_u64().context("network inspect shows no vni")
}

/// With `--keep`: where everything is, and commands to look around with.
fn look_around(lab: &Lab, containers: &[Container], bins: &Path, vni: u64) -> String {
    let (h1, c1, c2) = (&lab.hosts[0], &containers[0], &containers[1]);
    let sock = |i: usize| PathBuf::from(&lab.hosts[i].socket);
    let mut t = format!("\n== the lab stays up (ovlab pid {}); look around as root:\n", std::process::id());
    t += &format!("$ export PATH=\"{}:$PATH\"\n", bins.display());
    t += &format!(
        "   lab directory {} (agent sockets and logs; removed when the lab stops)\n",
        lab.dir().display()
    );
    for (i, h) in lab.hosts.iter().enumerate() {
        t += &format!(
            "   {}: namespace {}, socket {}, log {}\n",
            h.name,
            h.ns.name,
            sock(i).display(),
            h.log_path().display()
        );
    }
    t += &format!(
        "   etcd: {} inside namespace {}, every key under {}\n\n",
        lab.etcd.endpoint(),
        lab.underlay.name,
        lab.prefix
    );
    t += &format!(
        "$ export OVNET_HOST=unix://{}   # ovctl now talks to {}'s agent\n",
        sock(0).display(),
        h1.name
    );
    t += "$ ovctl network inspect demo\n$ ovctl doctor\n";
    t += &format!("$ ip netns exec {} ping -c 3 {}   # c1 on h1 -> c2 on h2\n", c1.ns, c2.ip);
    t += &format!("$ ip netns exec {} ip addr show eth0\n", c1.ns);
    t +=
        &format!("$ ip netns exec {} bridge fdb show dev ovvx{vni}   # toward the other hosts\n", h1.ns.name);
    t += &format!("$ ip netns exec {} ip neigh show dev ovvx{vni}\n", h1.ns.name);
    t += &format!("$ tail {}\n", h1.log_path().display());
    t += &format!(
        "$ ip netns exec {} etcdctl --endpoints {} get --prefix {} --keys-only   # etcdctl: apt-get install etcd-client\n",
        lab.underlay.name,
        lab.etcd.endpoint(),
        lab.prefix
    );
    t += &format!(
        "\nstop: Ctrl-C here, or kill {} from another shell: the agents, etcd and every namespace go.\n",
        std::process::id()
    );
    t
}

/// Sends on `tx` at SIGINT or SIGTERM. The handlers are in place when it
/// returns, so a signal from then on ends the lab cleanly.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
        })
        .context("installing the SIGINT and SIGTERM handlers")?;
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(())
}
