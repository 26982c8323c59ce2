//! Named network namespaces that delete themselves, and `ip` helpers.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A unique short id for one lab or test: pid and a counter.
pub fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{:x}{}", std::process::id() % 0xffff, NEXT.fetch_add(1, Ordering::SeqCst))
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// `ip ARGS...`
pub fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

/// One ping from namespace `ns` to `ip` with a one-second deadline.
pub fn ping(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A network namespace made by `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.to_string(), owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else owns: dropping it deletes nothing.
    pub fn borrowed(name: &str) -> Netns {
        Netns { name: name.to_string(), owned: false }
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip netns exec NAME PROGRAM ARGS...`, output captured.
    pub fn exec(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new("ip").args(["netns", "exec", &self.name, program]).args(args).output()
    }

    /// A parsed `-j` listing: `ip -n NAME -j ARGS` or `bridge -n NAME -j ARGS`.
    pub fn json(&self, tool: &str, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = run(Command::new(tool).args(["-n", &self.name, "-j"]).args(args))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).with_context(|| format!("parsing {tool} {args:?} output: {text}"))
    }

    /// Sets a per-namespace sysctl such as `net.ipv4.ip_forward` (what
    /// `ip netns exec NAME sysctl -w KEY=VALUE` does).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        let path = std::path::PathBuf::from(self.path());
        // /proc/sys/net shows the namespace of the thread that opens it.
        ovnet_agent::netns::run_in_netns(&path, move || std::fs::write(&file, value))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| format!("setting {key} in {}", self.name))
    }

    /// A sysctl's value inside, trimmed.
    pub fn sysctl_get(&self, key: &str) -> anyhow::Result<String> {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let path = std::path::PathBuf::from(self.path());
        let value = ovnet_agent::netns::run_in_netns(&path, move || std::fs::read_to_string(file))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| format!("reading {key} in {}", self.name))?;
        Ok(value.trim().to_string())
    }

    /// One ping with a one-second deadline.
    pub fn ping(&self, ip: &str) -> bool {
        ping(&self.name, ip)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        // The resolv.conf `ovctl network connect` may have written for it.
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}
