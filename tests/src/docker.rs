//! A real dockerd inside a lab host, with its own data root, exec root,
//! socket and plugin directory, beside that host's ovagent.
//!
//! The design decision: every lab dockerd lives in a mount namespace of its
//! own, held open by a small holder process (`sleep`), in which the lab's
//! plugin directory is bind-mounted on `/run/docker/plugins`. dockerd, and
//! the host's ovagent, are entered into that namespace with `nsenter`: the
//! `SandboxKey` bind mounts dockerd makes exist only there, so the agent
//! that opens them must run there too, and dockerd can be stopped and
//! started again without losing the namespace. Not `ip netns exec`: it
//! remounts /sys and dockerd then fails ("Devices cgroup isn't mounted").
//! Everything is found and ended by PID on drop, containerd and its shims
//! included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::image::{IMAGE, Rootfs};
use crate::lab::{Lab, poll};

/// Debian's docker CLI (20.10), which speaks to dockerd 20.10; the
/// `/usr/local/bin/docker` of these machines is newer and refused.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// How long dockerd may take to answer after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One dockerd in a lab host's network namespace.
pub struct Dockerd {
    /// The lab host's name (also the hostname inside).
    pub host: String,
    /// The host's network namespace name.
    pub netns: String,
    dir: tempfile::TempDir,
    holder: Child,
    daemon: Option<Child>,
    /// More dockerd flags for its next start (e.g. `--dns 169.254.53.53`).
    pub daemon_args: Vec<String>,
}

impl Dockerd {
    /// Makes the mount namespace and starts dockerd in network namespace
    /// `netns` with hostname `host`.
    pub fn start(netns: &str, host: &str) -> anyhow::Result<Dockerd> {
        let dir = tempfile::Builder::new().prefix("ovdk").tempdir_in("/tmp")?;
        for d in ["plugins", "data", "exec"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        // The mount point must exist on the host to bind over it inside.
        std::fs::create_dir_all("/run/docker/plugins")?;
        let ready = dir.path().join("ready");
        let script = format!(
            "mount --bind {plugins} /run/docker/plugins && hostname {host} && touch {ready} && exec sleep infinity",
            plugins = dir.path().join("plugins").display(),
            ready = ready.display(),
        );
        let holder = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["unshare", "--mount", "--propagation", "slave", "--uts", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the mount namespace holder")?;
        let mut d = Dockerd {
            host: host.into(),
            netns: netns.into(),
            dir,
            holder,
            daemon: None,
            daemon_args: Vec::new(),
        };
        poll("the dockerd mount namespace", Duration::from_secs(10), || ready.exists().then_some(()))?;
        d.start_daemon()?;
        Ok(d)
    }

    /// The command prefix that runs a program inside this dockerd's mount,
    /// UTS and network namespaces.
    pub fn launcher(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--target={}", self.holder.id()),
            "--mount".into(),
            "--uts".into(),
            format!("--net=/run/netns/{}", self.netns),
        ]
    }

    /// Where the agent's plugin socket goes (dockerd sees it as
    /// `/run/docker/plugins/ovnet.sock`).
    pub fn plugin_socket(&self) -> PathBuf {
        self.dir.path().join("plugins/ovnet.sock")
    }

    /// The agent flag that serves the plugin on [`Dockerd::plugin_socket`].
    pub fn plugin_flag(&self) -> String {
        format!("--docker-plugin=unix://{}", self.plugin_socket().display())
    }

    /// dockerd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// dockerd's exec root (its `netns/` holds the containers' SandboxKeys).
    pub fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Starts dockerd (again) with Docker's defaults (iptables on) and
    /// waits until it answers.
    pub fn start_daemon(&mut self) -> anyhow::Result<()> {
        if self.daemon.is_some() {
            bail!("dockerd of {} is running", self.host);
        }
        let p = |s: &str| self.dir.path().join(s);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p("dockerd.log"))?;
        let child = Command::new(&self.launcher()[0])
            .args(&self.launcher()[1..])
            .arg("dockerd")
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", p("docker.sock").display()))
            .args(["--storage-driver", "overlay2", "--shutdown-timeout", "2"])
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        self.daemon = Some(child);
        poll(&format!("dockerd of {} to answer", self.host), START_TIMEOUT, || {
            let out = self.docker(&["version", "--format", "{{.Server.Version}}"]).ok()?;
            out.status.success().then_some(())
        })
        .with_context(|| format!("dockerd log:\n{}", self.log()))
    }

    /// Stops dockerd with SIGTERM (it stops its containers and containerd)
    /// and waits for it, killing it after 30 s.
    pub fn stop_daemon(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.daemon.take() else { return Ok(()) };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let done = poll("dockerd to stop", Duration::from_secs(30), || child.try_wait().ok().flatten());
        if done.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dockerd of {} did not stop within 30 s; killed", self.host);
        }
        Ok(())
    }

    /// Kills dockerd and the containerd it started with SIGKILL, as a crash
    /// of the Docker service would (the containers' shims live on), and
    /// reaps dockerd; `start_daemon` starts both again. dockerd alone is not
    /// enough: a new dockerd finds the old containerd's PID alive and waits
    /// for it forever (seen with 20.10: "containerd is still running", then
    /// every dial of its socket times out).
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let pidfile = self.exec_root().join("containerd/containerd.pid");
        let pid = std::fs::read_to_string(pidfile).ok().and_then(|t| t.trim().parse::<i32>().ok());
        let is_containerd = |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "containerd")
        };
        if let Some(pid) = pid.filter(|&p| is_containerd(p)) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let gone = || (!is_containerd(pid)).then_some(());
            let _ = poll("the killed containerd to go", Duration::from_secs(10), gone);
        }
    }

    /// Runs `docker -H unix://SOCKET ARGS` (Debian's CLI).
    pub fn docker(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.cli().args(args).output().context("running docker")
    }

    /// `docker ARGS`, failing unless it succeeds; returns trimmed stdout.
    pub fn docker_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.docker(args)?;
        if !out.status.success() {
            bail!("docker {args:?} on {} failed: {}", self.host, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `docker` with a command line split at whitespace; returns stdout.
    pub fn run(&self, command: &str) -> anyhow::Result<String> {
        self.docker_ok(&command.split_whitespace().collect::<Vec<_>>())
    }

    /// The docker CLI pointed at this dockerd, with a config dir of its own.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg("-H").arg(format!("unix://{}", self.socket().display()));
        cmd.env("DOCKER_CONFIG", self.dir.path().join("cli"));
        cmd
    }

    /// Imports the busybox image as [`IMAGE`].
    pub fn import_image(&self) -> anyhow::Result<()> {
        let rootfs = Rootfs::busybox()?;
        rootfs.import_with(self.cli().args(["import", "-", IMAGE]))?;
        Ok(())
    }

    /// Starts `ping -i INTERVAL -c COUNT DST` (busybox's) inside container
    /// `name`; finish it with [`ping_tally`].
    pub fn ping_stream(
        &self,
        name: &str,
        dst: &str,
        interval: Duration,
        count: u64,
    ) -> anyhow::Result<Child> {
        let secs = format!("{:.3}", interval.as_secs_f64());
        let count = count.to_string();
        let child = self
            .cli()
            .args(["exec", name, "ping", "-q", "-W", "2", "-i", &secs, "-c", &count, dst])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker exec ping")?;
        Ok(child)
    }

    /// Removes every container (SIGKILL, no grace period).
    pub fn remove_all(&self) -> anyhow::Result<()> {
        let ids = self.docker_ok(&["ps", "-aq"])?;
        for id in ids.split_whitespace() {
            self.docker_ok(&["rm", "-f", id])?;
        }
        Ok(())
    }

    /// The PIDs of every process in this dockerd's mount namespace but the
    /// holder: dockerd, its containerd and shims, containers, the agent.
    fn processes_inside(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/mnt", self.holder.id())) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != self.holder.id())
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l == ns))
            .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("OVNET_LAB_LOGS").is_some() {
            eprintln!("==== dockerd of {} ====\n{}", self.host, self.log());
        }
        if self.daemon.is_some()
            && let Err(e) = self.remove_all()
        {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = self.stop_daemon() {
            eprintln!("cleanup: {e}");
        }
        // What dockerd left (shims, containers) was started by it, in its namespace.
        for pid in self.processes_inside() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // The overlay mounts lived in the namespace, gone with it.
        if let Err(e) = remove_tree(self.dir.path()) {
            eprintln!("cleanup: removing {}: {e}", self.dir.path().display());
        }
    }
}

/// (sent, received) of a finished busybox `ping` stream: its summary line
/// reads `N packets transmitted, M packets received, ...`.
pub fn ping_tally(child: Child) -> anyhow::Result<(u64, u64)> {
    let out = child.wait_with_output().context("waiting for ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in {text:?} ({})", String::from_utf8_lossy(&out.stderr)))?;
    let number_before = |what: &str| -> anyhow::Result<u64> {
        let part =
            line.split(',').find(|p| p.contains(what)).with_context(|| format!("no {what} in {line}"))?;
        let n = part.split_whitespace().next().context("empty")?;
        Ok(n.parse()?)
    };
    Ok((number_before("transmitted")?, number_before("received")?))
}

/// `rm -rf`, tolerating files that vanish meanwhile.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Starts a dockerd in lab host `i` and restarts that host's agent inside
/// the dockerd's mount namespace with `--docker-plugin` on the dockerd's
/// plugin directory. The image [`IMAGE`] is imported.
pub fn docker_host(lab: &mut Lab, i: usize) -> anyhow::Result<Dockerd> {
    let (netns, host) = (lab.hosts[i].ns.name.clone(), lab.hosts[i].name.clone());
    let d = Dockerd::start(&netns, &host)?;
    lab.stop_agent(i)?;
    lab.set_agent_launch(i, d.launcher(), vec![d.plugin_flag()]);
    lab.start_agent(i)?;
    d.import_image()?;
    Ok(d)
}
