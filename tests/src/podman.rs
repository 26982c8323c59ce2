//! Podman on lab hosts: one podman per host namespace, with its own storage
//! root, run root, temporary directory and `CONTAINERS_CONF`, using the CNI
//! backend with the `ovnet` plugin and the host agent's `--cni-conf-dir`.
//!
//! The design decision: podman is entered with `nsenter --net` only, never
//! `ip netns exec`, so it stays in the machine's mount namespace: the
//! container namespaces it mounts under /run/netns then reach the agent
//! (which runs under `ip netns exec`, a slave of that mount namespace), and
//! the agent can open the `CNI_NETNS` path the plugin passes on. Drop
//! removes every container (each a CNI DEL), unmounts what podman left
//! under its directories and deletes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

use crate::image;
use crate::lab::{Lab, bin_dir};

/// The lab agents' flags for `--cni-conf-dir`, one directory per host
/// under `base` (pass them in `AgentOptions::extra_args`).
pub fn agent_args(base: &Path) -> Vec<String> {
    vec!["--cni-conf-dir".into(), conf_dir(base, "{host}").display().to_string()]
}

/// Host `host`'s CNI configuration directory under `base`.
pub fn conf_dir(base: &Path, host: &str) -> PathBuf {
    base.join(format!("{host}-net.d"))
}

/// The podman of one lab host.
pub struct Podman {
    pub host: String,
    netns_path: String,
    dir: PathBuf,
    conf: PathBuf,
}

impl Podman {
    /// A podman for lab host `i` whose networks are the conflists in
    /// `cni_dir` (its agent's `--cni-conf-dir`); state lives under `dir`,
    /// and the busybox image is imported as [`image::IMAGE`].
    pub fn start(lab: &Lab, i: usize, dir: &Path, cni_dir: &Path) -> anyhow::Result<Podman> {
        let host = lab.hosts[i].name.clone();
        let dir = dir.join(format!("podman-{host}"));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, containers_conf(&[bin_dir().as_path(), Path::new("/usr/lib/cni")], cni_dir))?;
        let p = Podman { host, netns_path: lab.hosts[i].ns.path(), dir, conf };
        image::podman_import(&mut p.command(&[]), image::IMAGE)?;
        Ok(p)
    }

    /// `podman ARGS` inside the host, with this podman's storage and configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path)).arg("podman");
        cmd.arg("--root").arg(self.dir.join("root"));
        cmd.arg("--runroot").arg(self.dir.join("run"));
        cmd.arg("--tmpdir").arg(self.dir.join("tmp"));
        cmd.args(args).env("CONTAINERS_CONF", &self.conf);
        cmd
    }

    /// `podman ARGS`, whatever its exit.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args).output().with_context(|| format!("running podman {args:?}"))
    }

    /// `podman ARGS`, failing unless it succeeds; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!("podman {args:?} on {} failed: {}", self.host, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts a container `name` of the busybox image on `network` that
    /// sleeps (and may ping: NET_RAW is not among podman's default
    /// capabilities); returns its id.
    pub fn run(&self, name: &str, network: &str) -> anyhow::Result<String> {
        let args = ["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW", image::IMAGE];
        self.ok(&[&args[..], &["sleep", "3600"]].concat())
    }

    /// The address podman recorded for container `name` on `network` (from
    /// the plugin's CNI result).
    pub fn ip(&self, name: &str, network: &str) -> anyhow::Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.ok(&["inspect", "--format", &format, name])
    }

    /// One ping from container `name` to `ip` with a one-second deadline.
    pub fn ping(&self, name: &str, ip: &str) -> bool {
        self.output(&["exec", name, "ping", "-c1", "-W1", ip]).is_ok_and(|o| o.status.success())
    }
}

/// The containers.conf of a lab podman: CNI backend, our plugin, limits a
/// container can set here (podman's defaults fail with "error setting
/// rlimit"), no systemd, and locks in files under its own temporary
/// directory: the default shared-memory locks are one segment for every
/// podman of the machine, which a new podman's first run frees wholesale.
pub fn containers_conf(plugin_dirs: &[&Path], cni_dir: &Path) -> String {
    let dirs: Vec<String> = plugin_dirs.iter().map(|d| format!("{:?}", d.display().to_string())).collect();
    format!(
        "[containers]\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [network]\n\
         network_backend = \"cni\"\n\
         cni_plugin_dirs = [{}]\n\
         network_config_dir = {:?}\n\
         [engine]\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n\
         lock_type = \"file\"\n",
        dirs.join(", "),
        cni_dir.display().to_string()
    )
}

impl Drop for Podman {
    fn drop(&mut self) {
        match self.output(&["rm", "--all", "--force", "--time", "0"]) {
            Ok(o) if !o.status.success() => {
                eprintln!("cleanup: podman rm on {}: {}", self.host, String::from_utf8_lossy(&o.stderr))
            }
            Err(e) => eprintln!("cleanup: podman rm on {}: {e}", self.host),
            _ => {}
        }
        unmount_under(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).output();
    }
}
