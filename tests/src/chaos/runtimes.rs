//! The real container runtimes of `ovchaos --runtimes`: a dockerd on the
//! first two hosts (their agents serve the `ovnet` plugin and mirror the
//! networks, `--docker-sync`) and podman through the `ovnet` CNI plugin on
//! the third, each with a long-lived container on the lab's `base` network;
//! and the runtime faults of the schedule: dockerd restarts, `docker rm -f`
//! while the host's agent is down, podman churn.
//!
//! The design decision: the long-lived runtime containers are checked by
//! pings at the quiescent points (after every fault heals, within the
//! convergence budget) rather than in the 10 ms streams, because a dockerd
//! restart gives its container a new namespace and address; and every
//! container a fault removes is followed until its etcd record and its host
//! veth are gone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::churn::World;
use super::inject::{host_down, host_up};
use super::schedule::{Fault, Shape};
use crate::bench::docker::{synced_host, wait_mirrored};
use crate::docker::Dockerd;
use crate::image::IMAGE;
use crate::lab::{Lab, poll};
use crate::podman::{self, Podman};

/// The ovnet network of the long-lived containers (the run's own).
pub const NETWORK: &str = "base";
/// How long the janitor may take to release an endpoint once its agent is
/// back (a record must be 10 s old; a pass follows dockerd's events).
const JANITOR_WITHIN: Duration = Duration::from_secs(40);
/// How long a CNI DEL's release may take to show (it is synchronous).
const RELEASE_WITHIN: Duration = Duration::from_secs(5);
/// How long `docker rm -f` may take with the agent down (dockerd retries).
const RM_WITHIN: Duration = Duration::from_secs(150);

/// `docker inspect` / `podman inspect`: the first process and the address on [`NETWORK`].
const STATE: &str = "{{.State.Pid}} {{(index .NetworkSettings.Networks \"base\").IPAddress}}";

/// A long-lived container of a runtime.
pub struct Keeper {
    pub runtime: &'static str,
    pub host: usize,
    pub name: String,
    /// Its first process, whose network namespace pings go from ("" while it is not running).
    pub pid: String,
    pub ip: String,
}

impl Keeper {
    fn label(&self) -> String {
        format!("{} {} on h{}", self.runtime, self.name, self.host + 1)
    }
}

/// A container a fault removes, followed until its endpoint is released.
struct Removed {
    host: usize,
    name: String,
    what: String,
    ip: String,
    veth: String,
}

/// What healing a runtime fault needs.
pub struct RtApplied {
    fault: Fault,
    removed: Vec<Removed>,
    /// `docker rm -f` in flight, and when it started.
    rm: Option<(Child, Instant)>,
    /// Broken invariants seen while applying: (invariant, evidence).
    findings: Vec<(String, String)>,
}

impl RtApplied {
    pub fn fault(&self) -> &Fault {
        &self.fault
    }
}

/// The runtimes of a lab. Dropped before the lab: removing containers needs the agents.
pub struct Runtimes {
    pub keepers: Vec<Keeper>,
    podman: Option<(usize, Podman)>,
    dockerds: Vec<Dockerd>,
    made: u64,
    /// The agents' CNI conflists and podman's state (the caller keeps the
    /// directory until the agents are gone: they write there).
    dir: PathBuf,
}

/// The directory of a lab with runtimes and the agents' extra flags for it.
pub fn prepare() -> anyhow::Result<(tempfile::TempDir, Vec<String>)> {
    let dir = tempfile::Builder::new().prefix("ovchaos-rt").tempdir_in("/tmp")?;
    let args = podman::agent_args(dir.path());
    Ok((dir, args))
}

/// (pid, address) of `inspect --format STATE` output, if the container runs
/// with an address.
pub fn parse_state(out: &str) -> Option<(String, String)> {
    let mut words = out.split_whitespace();
    let (pid, ip) = (words.next()?, words.next()?);
    let running = pid.parse::<u32>().is_ok_and(|p| p > 0);
    (running && ip.parse::<Ipv4Addr>().is_ok()).then(|| (pid.to_string(), ip.to_string()))
}

fn docker_state(d: &Dockerd, name: &str) -> Option<(String, String)> {
    parse_state(&d.docker_ok(&["inspect", "--format", STATE, name]).ok()?)
}

fn podman_state(p: &Podman, name: &str) -> Option<(String, String)> {
    parse_state(&p.ok(&["inspect", "--format", STATE, name]).ok()?)
}

/// One ping from the network namespace of process `pid` to `ip`.
fn ping_from(pid: &str, ip: &str) -> std::io::Result<Child> {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ping", "-n", "-q", "-c1", "-W1", ip])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// The host veth named by `ip`'s endpoint record in [`NETWORK`], if there is one.
fn record_veth(lab: &Lab, ip: &str) -> anyhow::Result<Option<String>> {
    let key = format!("{}/endpoints/{NETWORK}/{ip}", lab.prefix);
    let value = lab.with_etcd(move |mut c| async move {
        let r = c.get(key, None).await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    })?;
    let Some(value) = value else { return Ok(None) };
    let record: serde_json::Value = serde_json::from_slice(&value).context("decoding an endpoint record")?;
    Ok(Some(record["host_ifname"].as_str().unwrap_or_default().to_string()))
}

impl Runtimes {
    /// Starts the dockerds and podman where `shape` puts them (the agents
    /// were started with [`prepare`]'s flags).
    pub fn start(lab: &mut Lab, shape: Shape, dir: &Path) -> anyhow::Result<Runtimes> {
        let mut dockerds = Vec::new();
        for i in 0..shape.docker_hosts {
            dockerds.push(synced_host(lab, i).with_context(|| format!("a dockerd on h{}", i + 1))?);
        }
        let podman = match shape.podman_host {
            Some(i) => {
                let conf = podman::conf_dir(dir, &lab.hosts[i].name);
                Some((i, Podman::start(lab, i, dir, &conf).context("podman")?))
            }
            None => None,
        };
        Ok(Runtimes { keepers: Vec::new(), podman, dockerds, made: 0, dir: dir.to_path_buf() })
    }

    fn name(&mut self, what: &str) -> String {
        self.made += 1;
        format!("{what}{}", self.made)
    }

    /// Starts the long-lived containers on [`NETWORK`] (which must exist):
    /// `--restart always` on every dockerd, one on podman.
    pub fn keep(&mut self, lab: &Lab) -> anyhow::Result<()> {
        for (host, d) in self.dockerds.iter().enumerate() {
            wait_mirrored(d, NETWORK)?;
            let name = format!("keep{}", host + 1);
            let args = ["run", "-d", "--name", &name, "--restart", "always", "--network", NETWORK];
            d.docker_ok(&[&args[..], &[IMAGE, "sleep", "86400"]].concat())?;
            let (pid, ip) = docker_state(d, &name).context("the Docker keeper has no address")?;
            self.keepers.push(Keeper { runtime: "docker", host, name, pid, ip });
        }
        if let Some((host, p)) = &self.podman {
            let conflist = podman::conf_dir(&self.dir, &lab.hosts[*host].name).join("base.conflist");
            poll("the conflist of base", Duration::from_secs(20), || conflist.exists().then_some(()))?;
            let name = format!("keep{}", host + 1);
            p.run(&name, NETWORK)?;
            let (pid, ip) = podman_state(p, &name).context("the podman keeper has no address")?;
            self.keepers.push(Keeper { runtime: "podman", host: *host, name, pid, ip });
        }
        Ok(())
    }

    /// Pings from every running keeper on a `live` host to every base
    /// container (host, address) and other keeper on a live host, again
    /// until each pair answered once or `deadline` passed (one try at
    /// least); the pairs that never answered.
    pub fn unanswered(&self, live: &[usize], base: &[(usize, String)], deadline: Instant) -> Vec<String> {
        let keepers: Vec<&Keeper> =
            self.keepers.iter().filter(|k| live.contains(&k.host) && !k.pid.is_empty()).collect();
        let mut pending = Vec::new();
        for k in &keepers {
            for (h, ip) in base.iter().filter(|(h, _)| live.contains(h)) {
                pending.push((k.label(), k.pid.clone(), ip.clone(), format!("h{} base", h + 1)));
            }
            for o in keepers.iter().filter(|o| o.name != k.name) {
                pending.push((k.label(), k.pid.clone(), o.ip.clone(), o.label()));
            }
        }
        loop {
            let children: Vec<_> = pending.iter().map(|p| ping_from(&p.1, &p.2)).collect();
            let answered =
                children.into_iter().map(|c| c.and_then(|mut c| c.wait()).is_ok_and(|s| s.success()));
            let answered: Vec<bool> = answered.collect();
            let mut flags = answered.into_iter();
            pending.retain(|_| !flags.next().unwrap_or(false));
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pending.into_iter().map(|(from, _, ip, to)| format!("{from} -> {to} ({ip})")).collect()
    }

    /// Applies a runtime fault.
    pub fn apply(&mut self, lab: &mut Lab, world: &Mutex<World>, fault: &Fault) -> anyhow::Result<RtApplied> {
        let mut a = RtApplied { fault: fault.clone(), removed: Vec::new(), rm: None, findings: Vec::new() };
        match *fault {
            Fault::DockerdRestart { host, kill } => {
                let d = self.dockerds.get_mut(host).context("no dockerd on that host")?;
                if kill {
                    d.kill_daemon();
                } else {
                    d.stop_daemon()?;
                }
            }
            Fault::DockerRmAgentDown { host } => {
                let name = self.name("rm");
                let d = self.dockerds.get(host).context("no dockerd on that host")?;
                d.docker_ok(&["run", "-d", "--name", &name, "--network", NETWORK, IMAGE, "sleep", "86400"])?;
                let (_, ip) = docker_state(d, &name).context("the container has no address")?;
                let veth = poll("its endpoint record", Duration::from_secs(10), || {
                    record_veth(lab, &ip).ok().flatten()
                })?;
                host_down(world, host);
                lab.kill_agent(host);
                let mut rm = d.cli();
                rm.args(["rm", "-f", &name])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let child = rm.spawn().context("starting docker rm -f")?;
                a.rm = Some((child, Instant::now()));
                let what = format!("docker {name} on h{}", host + 1);
                a.removed.push(Removed { host, name, what, ip, veth });
            }
            Fault::PodmanChurn { host, runs } => {
                for _ in 0..runs {
                    let name = self.name("pc");
                    let (_, p) = self.podman.as_ref().context("no podman")?;
                    if let Err(e) = p.run(&name, NETWORK) {
                        a.findings.push(("runtimes (podman run)".into(), format!("{e:#}")));
                        continue;
                    }
                    let what = format!("podman {name} on h{}", host + 1);
                    let ip = p.ip(&name, NETWORK)?;
                    match record_veth(lab, &ip)? {
                        Some(veth) => a.removed.push(Removed { host, name, what, ip, veth }),
                        None => a.findings.push(("allocation".into(), format!("{what}: no record of {ip}"))),
                    }
                }
            }
            _ => anyhow::bail!("{fault:?} is not a runtime fault"),
        }
        Ok(a)
    }

    /// Heals a runtime fault; the broken invariants found (invariant, evidence).
    pub fn heal(
        &mut self,
        lab: &mut Lab,
        world: &Mutex<World>,
        mut a: RtApplied,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut findings = std::mem::take(&mut a.findings);
        match a.fault {
            Fault::DockerdRestart { host, .. } => findings.extend(self.dockerd_back(host)?),
            Fault::DockerRmAgentDown { host } => {
                if let Some((mut child, started)) = a.rm.take() {
                    let done = poll("docker rm -f", RM_WITHIN, || child.try_wait().ok().flatten());
                    let took = started.elapsed().as_secs_f64();
                    eprintln!("          docker rm -f with the agent down took {took:.1} s");
                    match done {
                        Ok(s) if s.success() => {}
                        Ok(_) => {
                            let out = child.wait_with_output().map(|o| o.stderr).unwrap_or_default();
                            let err = String::from_utf8_lossy(&out).trim().to_string();
                            findings.push(("runtimes (docker rm -f)".into(), format!("failed: {err}")));
                        }
                        Err(_) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            findings
                                .push(("runtimes (docker rm -f)".into(), format!("no end in {RM_WITHIN:?}")));
                        }
                    }
                }
                lab.start_agent(host)?;
                host_up(world, host);
                findings.extend(released(lab, &a.removed, JANITOR_WITHIN));
            }
            Fault::PodmanChurn { .. } => {
                let (_, p) = self.podman.as_ref().context("no podman")?;
                for r in &a.removed {
                    if let Err(e) = p.ok(&["rm", "-f", "--time", "0", &r.name]) {
                        findings.push(("runtimes (podman rm -f)".into(), format!("{e:#}")));
                    }
                }
                findings.extend(released(lab, &a.removed, RELEASE_WITHIN));
            }
            _ => anyhow::bail!("{:?} is not a runtime fault", a.fault),
        }
        Ok(findings)
    }

    /// Starts dockerd of `host` again and waits for its keeper to run on
    /// [`NETWORK`] again; its new namespace and address are kept.
    fn dockerd_back(&mut self, host: usize) -> anyhow::Result<Vec<(String, String)>> {
        let d = self.dockerds.get_mut(host).context("no dockerd on that host")?;
        d.start_daemon()?;
        let Some(k) = self.keepers.iter_mut().find(|k| k.runtime == "docker" && k.host == host) else {
            return Ok(Vec::new());
        };
        let back =
            poll(&format!("{} running again", k.name), Duration::from_secs(30), || docker_state(d, &k.name));
        match back {
            Ok((pid, ip)) => {
                (k.pid, k.ip) = (pid, ip);
                Ok(Vec::new())
            }
            Err(_) => {
                k.pid.clear();
                let state = d.docker(&["inspect", "--format", "{{json .State}}", &k.name]);
                let state = state.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
                let evidence = format!(
                    "{} (--restart always) not running on {NETWORK} 30 s after dockerd of h{} started: {}",
                    k.name,
                    host + 1,
                    state.unwrap_or_default()
                );
                Ok(vec![("runtimes (restart always)".into(), evidence)])
            }
        }
    }

    /// Removes every runtime container (their agents must answer).
    pub fn remove_all(&mut self) -> anyhow::Result<()> {
        for d in &self.dockerds {
            d.remove_all()?;
        }
        if let Some((_, p)) = &self.podman {
            p.ok(&["rm", "--all", "--force", "--time", "0"])?;
        }
        self.keepers.clear();
        Ok(())
    }
}

/// Waits up to `within` for every removed container's endpoint record and
/// host veth to be gone; a finding for each that stays.
fn released(lab: &Lab, removed: &[Removed], within: Duration) -> Vec<(String, String)> {
    let left = |r: &Removed| -> Option<String> {
        let record = record_veth(lab, &r.ip).ok().flatten().filter(|v| *v == r.veth);
        let veth = lab.links(r.host).map_or(true, |l| l.contains(&r.veth));
        match (record.is_some(), veth) {
            (false, false) => None,
            (rec, veth) => Some(format!(
                "{} removed, {within:?} later its endpoint {} is left: record {rec}, veth {} {veth}",
                r.what, r.ip, r.veth
            )),
        }
    };
    let start = Instant::now();
    loop {
        let found: Vec<String> = removed.iter().filter_map(left).collect();
        if found.is_empty() {
            return Vec::new();
        }
        if start.elapsed() > within {
            return found.into_iter().map(|f| ("no leak (released after rm)".to_string(), f)).collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_gives_a_running_container_with_an_address() {
        assert_eq!(parse_state("4242 10.1.0.5\n"), Some(("4242".into(), "10.1.0.5".into())));
        assert_eq!(parse_state("0 "), None, "stopped");
        assert_eq!(parse_state("4242 "), None, "not on the network");
        assert_eq!(parse_state("4242 <no value>"), None);
        assert_eq!(parse_state(""), None);
    }
}
