//! A real, throw-away etcd server for tests and the lab.
//!
//! Each [`Etcd`] runs the system's etcd binary (Debian's `etcd-server`) with
//! its own data directory in a tempdir, on free local ports or inside a
//! network namespace. The design decision: readiness is detected by polling
//! etcd's log for "ready to serve client requests" under a deadline — never a
//! fixed sleep — and a failed start reports the log tail, so a broken etcd
//! explains itself in the test output. The process is killed by its PID (our
//! own child) on `stop` or drop, never by name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long etcd may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const READY_LINE: &str = "ready to serve client requests";

/// Who a member is in its cluster.
struct Member {
    name: String,
    initial_cluster: String,
    token: String,
}

/// A running etcd; killed when dropped.
pub struct Etcd {
    child: Option<Child>,
    /// Keeps the data directory and the log alive until drop.
    dir: tempfile::TempDir,
    log: PathBuf,
    /// `ip netns exec <netns>` prefix, if any.
    netns: Option<String>,
    args: Vec<String>,
    endpoint: String,
}

/// The etcd binary: /usr/bin/etcd, or `etcd` from PATH.
fn etcd_binary() -> PathBuf {
    let system = Path::new("/usr/bin/etcd");
    if system.exists() {
        return system.to_path_buf();
    }
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("etcd")).find(|p| p.is_file()));
    match found {
        Some(p) => p,
        None => {
            panic!("etcd not found: install Debian's etcd-server (apt-get install etcd-server)")
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// TLS on etcd's client port (peers stay plain: a one-member cluster has none).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// etcd's certificate (its IP in the SAN) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (`--client-cert-auth`).
    pub client_ca: Option<PathBuf>,
}

impl EtcdTls {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.cert.display()),
            format!("--key-file={}", self.key.display()),
        ];
        if let Some(ca) = &self.client_ca {
            args.push("--client-cert-auth".to_string());
            args.push(format!("--trusted-ca-file={}", ca.display()));
        }
        args
    }
}

impl Etcd {
    /// Starts etcd on 127.0.0.1 with two free ports.
    pub fn start_local() -> anyhow::Result<Etcd> {
        Etcd::start_local_with(None)
    }

    /// `start_local`, serving clients over TLS (the endpoint is https://).
    pub fn start_local_tls(tls: &EtcdTls) -> anyhow::Result<Etcd> {
        Etcd::start_local_with(Some(tls))
    }

    fn start_local_with(tls: Option<&EtcdTls>) -> anyhow::Result<Etcd> {
        // A port found free can be taken before etcd binds it: try a few times.
        let mut last = None;
        for _ in 0..3 {
            let (client, peer) = (free_port()?, free_port()?);
            if client == peer {
                continue;
            }
            match Etcd::start(None, Ipv4Addr::LOCALHOST, client, peer, tls) {
                Ok(e) => return Ok(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("could not find two free ports")))
    }

    /// Starts etcd inside network namespace `netns`, on `ip`:2379 (clients) and :2380 (peers).
    pub fn start_in_netns(netns: &str, ip: Ipv4Addr) -> anyhow::Result<Etcd> {
        Etcd::start(Some(netns.to_string()), ip, 2379, 2380, None)
    }

    /// `start_in_netns`, serving clients over TLS (the endpoint is https://).
    pub fn start_in_netns_tls(netns: &str, ip: Ipv4Addr, tls: &EtcdTls) -> anyhow::Result<Etcd> {
        Etcd::start(Some(netns.to_string()), ip, 2379, 2380, Some(tls))
    }

    /// Starts a cluster of one member per address inside `netns` (each on
    /// :2379 and :2380 of its address) and waits until all serve.
    pub fn start_cluster_in_netns(netns: &str, ips: &[Ipv4Addr]) -> anyhow::Result<Vec<Etcd>> {
        let at: Vec<(String, Ipv4Addr)> = ips.iter().map(|ip| (netns.to_string(), *ip)).collect();
        Etcd::start_cluster(&at)
    }

    /// Starts a cluster of one member per (namespace, address), each on
    /// :2379 and :2380 of its address, and waits until all serve.
    pub fn start_cluster(at: &[(String, Ipv4Addr)]) -> anyhow::Result<Vec<Etcd>> {
        let name = |i: usize| format!("ovnet-test-{i}");
        let initial: Vec<String> =
            at.iter().enumerate().map(|(i, (_, ip))| format!("{}=http://{ip}:2380", name(i))).collect();
        let token = format!("ovnet-{}-{}", std::process::id(), crate::netns::unique_id());
        let mut members = Vec::new();
        for (i, (netns, ip)) in at.iter().enumerate() {
            let member = Member { name: name(i), initial_cluster: initial.join(","), token: token.clone() };
            members.push(Etcd::prepare(Some(netns.clone()), *ip, 2379, 2380, member, None)?);
        }
        let mut offsets = Vec::new();
        for m in &mut members {
            offsets.push(m.launch()?);
        }
        for (m, offset) in members.iter_mut().zip(offsets) {
            if let Err(e) = m.wait_ready(offset) {
                m.stop();
                return Err(e);
            }
        }
        Ok(members)
    }

    /// Freezes etcd (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a frozen etcd run again (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("etcd is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        Ok(())
    }

    fn start(
        netns: Option<String>,
        ip: Ipv4Addr,
        client: u16,
        peer: u16,
        tls: Option<&EtcdTls>,
    ) -> anyhow::Result<Etcd> {
        let member = Member {
            name: "ovnet-test".to_string(),
            initial_cluster: format!("ovnet-test=http://{ip}:{peer}"),
            token: format!("ovnet-{}-{client}", std::process::id()),
        };
        let mut etcd = Etcd::prepare(netns, ip, client, peer, member, tls)?;
        etcd.spawn()?;
        Ok(etcd)
    }

    /// An etcd member, not started yet.
    fn prepare(
        netns: Option<String>,
        ip: Ipv4Addr,
        client: u16,
        peer: u16,
        m: Member,
        tls: Option<&EtcdTls>,
    ) -> anyhow::Result<Etcd> {
        let dir =
            tempfile::Builder::new().prefix("ovnet-etcd-").tempdir().context("creating etcd's tempdir")?;
        let data = dir.path().join("data");
        let log = dir.path().join("etcd.log");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        let (name, token) = (m.name, m.token);
        let mut args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={}", m.initial_cluster),
            "--initial-cluster-state=new".to_string(),
            format!("--initial-cluster-token={token}"),
        ];
        args.extend(tls.map(EtcdTls::args).unwrap_or_default());
        Ok(Etcd { child: None, dir, log, netns, args, endpoint: client_url })
    }

    /// Starts the process (again, on the same data) and waits until it serves.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let offset = self.launch()?;
        if let Err(e) = self.wait_ready(offset) {
            self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// Starts the process; returns where its log continues.
    fn launch(&mut self) -> anyhow::Result<u64> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let offset = log.metadata()?.len();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(etcd_binary());
                c
            }
            None => Command::new(etcd_binary()),
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().context("spawning etcd")?;
        self.child = Some(child);
        Ok(offset)
    }

    fn wait_ready(&mut self, offset: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.log_since(offset).contains(READY_LINE) {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                bail!("etcd exited with {status} before serving; log tail:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd at {} not ready after {READY_TIMEOUT:?}; log tail:\n{}",
                    self.endpoint,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut bytes = Vec::new();
        // A log that cannot be read yet simply has no ready line yet.
        let _ = File::open(&self.log).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_to_end(&mut bytes)
        });
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last 30 lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let all = self.log_since(0);
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The client URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    /// A store on this etcd under the prefix `/ovnet-test` (store-level tests).
    pub async fn store(&self) -> ovnet_ipam_store::EtcdStore {
        let cfg = ovnet_ipam_store::StoreConfig {
            endpoints: vec![self.endpoint()],
            prefix: "/ovnet-test".to_string(),
            ..Default::default()
        };
        ovnet_ipam_store::EtcdStore::connect(cfg).await.expect("connect to the test etcd")
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The PID of the etcd process (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Where etcd writes its log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The directory holding etcd's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills etcd (SIGKILL to our child's PID) and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd and starts it again without waiting: with
    /// [`Etcd::wait_relaunched`], for members that only serve together.
    /// Returns where the log of the new run starts.
    pub fn relaunch(&mut self) -> anyhow::Result<u64> {
        self.stop();
        self.launch()
    }

    /// Waits until a relaunched etcd serves.
    pub fn wait_relaunched(&mut self, offset: u64) -> anyhow::Result<()> {
        self.wait_ready(offset)
    }

    /// Starts a stopped etcd again on the same data, ports and namespace.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
