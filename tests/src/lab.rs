//! A lab of N hosts: underlay namespace with etcd, host namespaces with
//! agents, container namespaces, and helpers to drive and inspect them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::etcd::Etcd;
use crate::netns::{Netns, unique_id};

/// The underlay: 172.30.0.0/24 inside the lab's own namespaces, never routed out.
const UNDERLAY_GW: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 254);

fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 11 + i as u8)
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    pub hosts: usize,
    pub lease_ttl: u64,
    /// etcd members in the underlay namespace (1, or 3 for a real cluster).
    pub etcd_members: usize,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { hosts: 3, lease_ttl: 10, etcd_members: 1 }
    }
}

/// Where etcd member `i` of a cluster listens: .250, .249, ... of the
/// underlay, each member in its own namespace (so that one can be cut off).
fn etcd_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 250 - i as u8)
}

/// A namespace for etcd cluster member `i`, on the underlay bridge at `ip`.
fn member_netns(underlay: &Netns, name: &str, i: usize, ip: Ipv4Addr) -> anyhow::Result<Netns> {
    let ns = Netns::new(name)?;
    let port = format!("pe{i}");
    underlay.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
    underlay.ip(&["link", "set", &port, "master", "ul", "up"])?;
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["link", "set", "lo", "up"])?;
    Ok(ns)
}

/// Settings of every agent a lab starts, beyond `LabOptions` (kept apart so
/// `LabOptions { .. }` literals elsewhere keep compiling).
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Serve metrics on `127.0.0.1:`[`METRICS_PORT`] inside each host's namespace.
    pub metrics: bool,
    /// `--resync-interval`, when not the agent's default.
    pub resync_interval: Option<u64>,
    /// `--log-format json`.
    pub log_json: bool,
    /// Any further flags, given to every agent as they are but for
    /// `{host}`, which becomes the host's name (h1, h2...).
    pub extra_args: Vec<String>,
}

/// The metrics port of every agent: each host namespace has its own
/// loopback, so the same port is free in all of them.
pub const METRICS_PORT: u16 = 9475;

/// One host: its namespace and its agent.
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub socket: PathBuf,
    /// Where the agent serves /metrics, /healthz and /readyz (inside `ns`).
    pub metrics: Option<SocketAddr>,
    log: PathBuf,
    agent: Option<Child>,
    /// How to enter the host instead of `ip netns exec NS` (e.g. `nsenter`
    /// into a dockerd's mount namespace), and flags for this host's agent
    /// only: see [`Lab::set_agent_launch`].
    launcher: Option<Vec<String>>,
    own_args: Vec<String>,
}

impl Host {
    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the agent's log is written.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|c| c.id())
    }

    /// A command that runs its program inside this host: `ip netns exec NS`,
    /// or the launcher set by [`Lab::set_agent_launch`].
    fn enter(&self) -> Command {
        match self.launcher.as_deref() {
            Some([program, args @ ..]) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            _ => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &self.ns.name]);
                cmd
            }
        }
    }
}

pub struct Lab {
    pub id: String,
    pub prefix: String,
    pub hosts: Vec<Host>,
    containers: Vec<Netns>,
    /// The first etcd member.
    pub etcd: Etcd,
    /// The other members, when the lab runs an etcd cluster.
    pub etcd_peers: Vec<Etcd>,
    /// Each cluster member's own namespace (none for a single member).
    etcd_netns: Vec<Netns>,
    pub underlay: Netns,
    opts: LabOptions,
    agent_opts: AgentOptions,
    dir: tempfile::TempDir,
}

/// The directory set by [`set_bin_dir`], if any.
static BIN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes labs of this process use the `ovagent` and `ovctl` in `dir` unless
/// `$OVNET_BIN_DIR` says otherwise (ovbench: the binaries built beside it).
/// Only the first call counts.
pub fn set_bin_dir(dir: PathBuf) {
    let _ = BIN_DIR.set(dir);
}

/// Where the built `ovagent` and `ovctl` are: `$OVNET_BIN_DIR`, else the
/// directory given to [`set_bin_dir`], else the workspace's target/debug.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("OVNET_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = BIN_DIR.get() {
        return d.clone();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!("{} not found: build it first (cargo build --workspace) or set OVNET_BIN_DIR", p.display());
    }
    Ok(p)
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Lab {
    /// Builds the underlay, etcd and the hosts, and starts every agent.
    pub fn start(opts: LabOptions) -> anyhow::Result<Lab> {
        Lab::start_with(opts, AgentOptions::default())
    }

    /// `start`, with extra settings for the agents.
    pub fn start_with(opts: LabOptions, agent_opts: AgentOptions) -> anyhow::Result<Lab> {
        Lab::start_with_etcd(opts, agent_opts, |underlay, ip| Etcd::start_in_netns(&underlay.name, ip))
    }

    /// `start_with`, with etcd started by `etcd(underlay, ip)` inside the
    /// underlay namespace on `ip` (with TLS, say, or with users added before
    /// the agents start). Agents dial its `endpoint()`; flags they need for
    /// it go in `AgentOptions::extra_args`.
    pub fn start_with_etcd(
        opts: LabOptions,
        agent_opts: AgentOptions,
        etcd: impl FnOnce(&Netns, Ipv4Addr) -> anyhow::Result<Etcd>,
    ) -> anyhow::Result<Lab> {
        let id = unique_id();
        let underlay = Netns::new(&format!("ovl{id}-u"))?;
        underlay.ip(&["link", "add", "name", "ul", "type", "bridge"])?;
        underlay.ip(&["addr", "add", &format!("{UNDERLAY_GW}/24"), "dev", "ul"])?;
        underlay.ip(&["link", "set", "ul", "up"])?;
        let mut etcd_netns = Vec::new();
        if opts.etcd_members > 1 {
            for i in 0..opts.etcd_members {
                etcd_netns.push(member_netns(&underlay, &format!("ovl{id}-e{i}"), i, etcd_ip(i))?);
            }
        }
        // A cluster is always plain etcd; `etcd` starts the single member.
        let (etcd, etcd_peers) = if opts.etcd_members > 1 {
            let at: Vec<(String, Ipv4Addr)> =
                etcd_netns.iter().enumerate().map(|(i, ns)| (ns.name.clone(), etcd_ip(i))).collect();
            let mut members = Etcd::start_cluster(&at)?;
            let first = members.remove(0);
            (first, members)
        } else {
            (etcd(&underlay, UNDERLAY_GW)?, Vec::new())
        };
        let dir = tempfile::Builder::new().prefix("ovlab").tempdir()?;
        let mut lab = Lab {
            prefix: format!("/ovnet-lab-{id}"),
            id,
            hosts: Vec::new(),
            containers: Vec::new(),
            etcd,
            etcd_peers,
            etcd_netns,
            underlay,
            opts: opts.clone(),
            agent_opts,
            dir,
        };
        for i in 0..opts.hosts {
            lab.add_host(i)?;
        }
        for i in 0..opts.hosts {
            lab.start_agent(i)?;
        }
        lab.wait_registered(opts.hosts)?;
        Ok(lab)
    }

    fn add_host(&mut self, i: usize) -> anyhow::Result<()> {
        let name = format!("h{}", i + 1);
        let ns = Netns::new(&format!("ovl{}-{name}", self.id))?;
        let port = format!("p{name}");
        self.underlay
            .ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        self.underlay.ip(&["link", "set", &port, "master", "ul", "up"])?;
        let ip = host_ip(i);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &UNDERLAY_GW.to_string()])?;
        // Real hosts route between their interfaces (Docker turns this on).
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let socket = self.dir.path().join(format!("{name}.sock"));
        let log = self.dir.path().join(format!("{name}.log"));
        let metrics = self.agent_opts.metrics.then(|| SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)));
        let (launcher, own_args) = (None, Vec::new());
        self.hosts.push(Host { name, ns, ip, socket, metrics, log, agent: None, launcher, own_args });
        Ok(())
    }

    /// Starts host `i`'s agent (again), appending to its log.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let agent = bin("ovagent")?;
        let endpoint = self.etcd_endpoints().join(",");
        let ttl = self.opts.lease_ttl.to_string();
        let extra = self.agent_args(i);
        let h = &mut self.hosts[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log)?;
        let child = h
            .enter()
            .arg(&agent)
            .args(["--etcd-endpoints", &endpoint, "--etcd-prefix", &self.prefix, "--node-name", &h.name])
            .arg("--listen")
            .arg(format!("unix://{}", h.socket.display()))
            .args(["--lease-ttl", &ttl])
            .args(&extra)
            .args(&h.own_args)
            .env("OVNET_LOG", std::env::var("OVNET_LAB_AGENT_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ovagent")?;
        h.agent = Some(child);
        let sock = h.socket.clone();
        poll(&format!("{}'s agent to answer", h.name), Duration::from_secs(20), || {
            let out = ovctl_at(&sock, &["version"]).ok()?;
            out.status.success().then_some(())
        })
    }

    /// Starts host `i`'s agent with the lab's etcd endpoint, prefix and
    /// lease TTL, then `args`, with `env` added to its environment, and does
    /// not wait for it: for agents that must refuse to start, or that serve
    /// the API elsewhere. `--node-name` and `--listen` are the host's unless
    /// `args` names them; `AgentOptions` do not apply. It logs to host `i`'s
    /// log and is killed with the lab. Refused while host `i`'s agent runs.
    pub fn spawn_agent(&mut self, i: usize, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
        let agent = bin("ovagent")?;
        let (endpoint, ttl) = (self.etcd.endpoint(), self.opts.lease_ttl.to_string());
        let h = &mut self.hosts[i];
        if h.agent.is_some() {
            bail!("{}'s agent is running: stop or kill it first", h.name);
        }
        let mut cmd = h.enter();
        cmd.arg(&agent);
        cmd.args(["--etcd-endpoints", &endpoint, "--etcd-prefix", &self.prefix, "--lease-ttl", &ttl]);
        if !args.contains(&"--node-name") {
            cmd.args(["--node-name", &h.name]);
        }
        if !args.contains(&"--listen") {
            cmd.arg("--listen").arg(format!("unix://{}", h.socket.display()));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&h.log)?;
        cmd.args(args).envs(env.iter().copied()).env("OVNET_LOG", "info");
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn();
        h.agent = Some(child.context("starting ovagent")?);
        Ok(())
    }

    /// Waits up to `timeout` for host `i`'s agent to exit and returns how it
    /// exited (an error if it is still running then).
    pub fn wait_agent_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let h = &mut self.hosts[i];
        let child = h.agent.as_mut().context("the agent is not running")?;
        let status =
            poll(&format!("{}'s agent to exit", h.name), timeout, || child.try_wait().ok().flatten())?;
        h.agent = None;
        Ok(status)
    }

    /// The flags `AgentOptions` adds to host `i`'s agent.
    fn agent_args(&self, i: usize) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(addr) = self.hosts[i].metrics {
            args.extend(["--metrics-listen".to_string(), addr.to_string()]);
        }
        if let Some(secs) = self.agent_opts.resync_interval {
            args.extend(["--resync-interval".to_string(), secs.to_string()]);
        }
        if self.agent_opts.log_json {
            args.extend(["--log-format".to_string(), "json".to_string()]);
        }
        let host = &self.hosts[i].name;
        args.extend(self.agent_opts.extra_args.iter().map(|a| a.replace("{host}", host)));
        args
    }

    /// Freezes host `i`'s agent (SIGSTOP): it neither repairs nor answers.
    pub fn pause_agent(&self, i: usize) -> anyhow::Result<()> {
        self.signal_agent(i, nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused agent run again (SIGCONT).
    pub fn resume_agent(&self, i: usize) -> anyhow::Result<()> {
        self.signal_agent(i, nix::sys::signal::Signal::SIGCONT)
    }

    fn signal_agent(&self, i: usize, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self.hosts[i].agent_pid().context("the agent is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// `GET PATH` on host `i`'s metrics listener, from inside its namespace:
    /// (status code, body).
    pub fn http_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self.hosts[i].metrics.context("the lab was started without metrics")?;
        let ns = PathBuf::from(self.hosts[i].ns.path());
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let text = ovnet_agent::netns::block_on_in_netns(&ns, move || async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let work = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                let mut text = String::new();
                s.read_to_string(&mut text).await?;
                Ok::<_, std::io::Error>(text)
            };
            tokio::time::timeout(Duration::from_secs(5), work).await
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("no answer from the metrics listener within 5s")?
        .with_context(|| format!("GET {path} from {addr}"))?;
        let (head, body) = text.split_once("\r\n\r\n").context("no end of HTTP headers")?;
        let code = head.split_whitespace().nth(1).context("no status code")?.parse()?;
        Ok((code, body.to_string()))
    }

    /// Host `i`'s `/metrics`, which must answer 200.
    pub fn scrape(&self, i: usize) -> anyhow::Result<String> {
        match self.http_get(i, "/metrics")? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics answered {code}: {body}"),
        }
    }

    /// From the next start on, host `i`'s agent runs under `launcher` (a
    /// program and arguments that end by running the agent's command line
    /// inside the host, such as `nsenter --target PID --mount --net=...`)
    /// with `args` added to its flags.
    pub fn set_agent_launch(&mut self, i: usize, launcher: Vec<String>, args: Vec<String>) {
        self.hosts[i].launcher = Some(launcher);
        self.hosts[i].own_args = args;
    }

    /// SIGKILLs host `i`'s agent and reaps it.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Takes host `i`'s underlay link down (the host drops off the network)
    /// or up again, restoring the default route the kernel removed with it.
    pub fn set_host_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let ns = &self.hosts[i].ns;
        ns.ip(&["link", "set", "eth0", if up { "up" } else { "down" }])?;
        if up {
            ns.ip(&["route", "replace", "default", "via", &UNDERLAY_GW.to_string()])?;
        }
        Ok(())
    }

    /// How host `i`'s agent exited, if it has (without waiting).
    pub fn agent_exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.hosts[i].agent.as_mut()?.try_wait().ok().flatten()
    }

    /// Starts every etcd member again at once (members of a cluster only
    /// serve together) and waits until all serve.
    pub fn etcd_restart_all(&mut self) -> anyhow::Result<()> {
        let mut members: Vec<&mut Etcd> =
            std::iter::once(&mut self.etcd).chain(&mut self.etcd_peers).collect();
        let mut offsets = Vec::new();
        for m in members.iter_mut() {
            offsets.push(m.relaunch()?);
        }
        for (m, offset) in members.iter_mut().zip(offsets) {
            m.wait_relaunched(offset)?;
        }
        Ok(())
    }

    /// Sends SIGTERM to host `i`'s agent and waits for it to exit.
    pub fn stop_agent(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.hosts[i].agent.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            child.wait()?;
        }
        Ok(())
    }

    fn wait_registered(&self, n: usize) -> anyhow::Result<()> {
        poll("all hosts registered", Duration::from_secs(20), || {
            let out = self.ovctl(0, &["host", "ls", "--format", "json"]).ok()?;
            let hosts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
            let alive = hosts.iter().filter(|h| h["alive"] == serde_json::Value::Bool(true)).count();
            (alive >= n).then_some(())
        })
    }

    /// Runs `ovctl ARGS` against host `i`'s agent.
    pub fn ovctl(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        ovctl_at(&self.hosts[i].socket, args)
    }

    /// Runs `ovctl ARGS` against host `i`, failing unless it succeeds; returns stdout.
    pub fn ovctl_ok(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ovctl(i, args)?;
        if !out.status.success() {
            bail!(
                "ovctl {args:?} on {} failed: {}",
                self.hosts[i].name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `ovctl` on host `i` with a command line split at whitespace, e.g.
    /// `lab.ctl(0, "network create -d overlay demo")`; returns stdout.
    pub fn ctl(&self, i: usize, command: &str) -> anyhow::Result<String> {
        self.ovctl_ok(i, &command.split_whitespace().collect::<Vec<_>>())
    }

    /// `ovctl network create ARGS` on host `i`, then waits until every host
    /// holds the network's bridge and VXLAN device. Returns the network id.
    pub fn create_network(&self, i: usize, args: &str) -> anyhow::Result<String> {
        let id = self.ctl(i, &format!("network create {args}"))?;
        let name = args.split_whitespace().last().context("no network name")?;
        let inspect: serde_json::Value =
            serde_json::from_str(&self.ctl(i, &format!("network inspect {name}"))?)?;
        let vni = inspect["vni"].as_u64().context("inspect shows no vni")?;
        let want = [format!("ovbr{vni}"), format!("ovvx{vni}")];
        for h in 0..self.hosts.len() {
            poll("the network's devices on every host", Duration::from_secs(10), || {
                let links = self.links(h).ok()?;
                want.iter().all(|w| links.contains(w)).then_some(())
            })?;
        }
        Ok(id)
    }

    /// A new container namespace, owned (and deleted) by the lab; returns its name.
    pub fn container(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = Netns::new(&format!("ovl{}-{name}", self.id))?;
        let name = ns.name.clone();
        self.containers.push(ns);
        Ok(name)
    }

    /// A new container connected to `network` on host `i`: (netns name, address).
    pub fn connected(&mut self, i: usize, network: &str, name: &str) -> anyhow::Result<(String, String)> {
        let ns = self.container(name)?;
        let ip = self.ovctl_ok(i, &["network", "connect", network, &ns])?;
        Ok((ns, ip))
    }

    /// The lab's own directory (agent sockets and logs); removed with the lab.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client URLs of every etcd member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        std::iter::once(&self.etcd).chain(&self.etcd_peers).map(Etcd::endpoint).collect()
    }

    /// etcd member `i` (0 is `self.etcd`).
    pub fn etcd_member(&mut self, i: usize) -> &mut Etcd {
        match i {
            0 => &mut self.etcd,
            i => &mut self.etcd_peers[i - 1],
        }
    }

    /// Cuts cluster member `i` off from the other members (its peer port,
    /// both ways) while its clients still reach it.
    pub fn cut_etcd_member(&self, i: usize) -> anyhow::Result<()> {
        let ns = self.etcd_netns.get(i).context("no such etcd cluster member")?;
        let rules = "table inet ovtest {\n\
            chain in { type filter hook input priority 0; tcp dport 2380 drop; tcp sport 2380 drop; }\n\
            chain out { type filter hook output priority 0; tcp dport 2380 drop; tcp sport 2380 drop; }\n}\n";
        let file = self.dir.path().join(format!("cut-e{i}.nft"));
        std::fs::write(&file, rules)?;
        let out = ns.exec("nft", &["-f", &file.to_string_lossy()])?;
        if !out.status.success() {
            bail!("nft in {}: {}", ns.name, String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// How many watches etcd member `i` serves (its
    /// `etcd_debugging_mvcc_watcher_total`).
    pub fn etcd_watchers(&mut self, i: usize) -> anyhow::Result<u64> {
        let url = format!("{}/metrics", self.etcd_member(i).endpoint());
        let out = self.underlay.exec("curl", &["-sf", "--max-time", "5", &url])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total "))
            .with_context(|| format!("no watcher count at {url}"))?;
        let n: f64 = line.rsplit(' ').next().unwrap_or("").parse()?;
        Ok(n as u64)
    }

    /// Runs `f` with an etcd client of the lab (all members), inside the underlay namespace.
    pub fn with_etcd<T: Send + 'static, F>(
        &self,
        f: impl FnOnce(etcd_client::Client) -> F + Send + 'static,
    ) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let endpoints = self.etcd_endpoints();
        let path = PathBuf::from(self.underlay.path());
        ovnet_agent::netns::block_on_in_netns(&path, move || async move {
            let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
            let c = etcd_client::Client::connect(endpoints, Some(opts)).await?;
            f(c).await
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("talking to the lab's etcd")
    }

    /// Writes `value` at `<prefix>/<key>` directly in etcd.
    pub fn etcd_put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let (key, value) = (format!("{}/{key}", self.prefix), value.to_vec());
        self.with_etcd(move |mut c| async move { c.put(key, value, None).await.map(drop) })
    }

    /// Compacts away etcd's whole history: writes a key outside the lab's
    /// prefix and compacts at that revision, so every earlier revision is
    /// gone. Returns the compaction revision.
    pub fn etcd_compact(&self) -> anyhow::Result<i64> {
        let marker = format!("{}-compaction-marker", self.prefix);
        self.with_etcd(|mut c| async move {
            let rev = c.put(marker, "x", None).await?.header().map_or(0, |h| h.revision());
            c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await?;
            Ok(rev)
        })
    }

    /// Index (as in [`Lab::etcd_member`]) of the current etcd leader.
    pub fn etcd_leader(&self) -> anyhow::Result<usize> {
        let urls = self.etcd_endpoints();
        for (i, url) in urls.iter().enumerate() {
            let url = url.clone();
            let path = PathBuf::from(self.underlay.path());
            let status = ovnet_agent::netns::block_on_in_netns(&path, move || async move {
                let opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
                let mut c = etcd_client::Client::connect([url], Some(opts)).await?;
                let s = c.status().await?;
                Ok::<_, etcd_client::Error>((s.header().map_or(0, |h| h.member_id()), s.leader()))
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Ok((me, leader)) = status
                && me == leader
            {
                return Ok(i);
            }
        }
        bail!("no etcd member says it is the leader")
    }

    /// Deletes container namespace `name` as a dying container would: no disconnect.
    pub fn delete_container(&mut self, name: &str) {
        // Dropping the lab's handle deletes the namespace.
        self.containers.retain(|ns| ns.name != name);
    }

    /// Everything under the lab's prefix, as text.
    pub fn etcd_dump(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let endpoint = self.etcd.endpoint();
        let prefix = self.prefix.clone();
        let path = PathBuf::from(self.underlay.path());
        ovnet_agent::netns::block_on_in_netns(&path, move || async move {
            let mut c = etcd_client::Client::connect([endpoint], None).await?;
            let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
            let mut out = BTreeMap::new();
            for kv in resp.kvs() {
                out.insert(kv.key_str()?.to_string(), String::from_utf8_lossy(kv.value()).to_string());
            }
            Ok::<_, etcd_client::Error>(out)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("reading etcd")
    }

    /// Names of host `i`'s links that are ours (prefix `ov`), sorted.
    pub fn links(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = self.hosts[i]
            .ns
            .json("ip", &["link", "show"])?
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .filter(|n| n.starts_with("ov"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Host `i`'s VXLAN FDB entries of our devices as `dev mac dst`, sorted,
    /// duplicates kept.
    pub fn fdb(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = self.hosts[i]
            .ns
            .json("bridge", &["fdb", "show"])?
            .iter()
            .filter(|e| e["ifname"].as_str().is_some_and(|d| d.starts_with("ovvx")))
            .filter_map(|e| {
                let dst = e["dst"].as_str()?;
                Some(format!("{} {} {}", e["ifname"].as_str()?, e["mac"].as_str()?, dst))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Host `i`'s neighbour entries on our VXLAN devices as `dev ip mac`, sorted.
    pub fn neigh(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = self.hosts[i]
            .ns
            .json("ip", &["-4", "neigh", "show"])?
            .iter()
            .filter(|e| e["dev"].as_str().is_some_and(|d| d.starts_with("ovvx")))
            .filter_map(|e| {
                Some(format!("{} {} {}", e["dev"].as_str()?, e["dst"].as_str()?, e["lladdr"].as_str()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Everything of ours in host `i`'s kernel: links, FDB and neighbours.
    pub fn kernel(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let mut all = self.links(i)?;
        all.extend(self.fdb(i)?);
        all.extend(self.neigh(i)?);
        Ok(all)
    }

    /// Runs a program inside container namespace `ns`; returns its stdout.
    pub fn containers_exec(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Panics in every agent's log so far.
    pub fn panics(&self) -> u64 {
        self.hosts.iter().map(|h| crate::report::panics_in(&h.log())).sum()
    }

    /// The agents' logs, for failure reports.
    pub fn logs(&self) -> String {
        self.hosts.iter().map(|h| format!("==== {} ====\n{}\n", h.name, h.log())).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("OVNET_LAB_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.hosts.len() {
            self.kill_agent(i);
        }
    }
}

fn ovctl_at(socket: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let ovctl = bin("ovctl")?;
    Command::new(ovctl)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .output()
        .context("running ovctl")
}
