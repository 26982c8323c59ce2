//! ovagent's flags, parsed and validated before anything is bound or dialed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where the gRPC API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("unix socket path in {s:?} must be absolute"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| format!("invalid TCP listen address {addr:?}: expected IP:PORT"));
        }
        Err(format!("invalid listen address {s:?}: expected unix:///path or tcp://IP:PORT"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix://{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// ovagent: the per-host ovnet daemon. It manages the network namespace it
/// is started in.
#[derive(Clone, Debug, Parser)]
#[command(name = "ovagent", version)]
pub struct Config {
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "OVNET_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every ovnet key in etcd.
    #[arg(long, env = "OVNET_ETCD_PREFIX", default_value = "/ovnet", value_parser = parse_prefix)]
    pub etcd_prefix: String,
    /// This host's name in the cluster (default: the hostname).
    #[arg(long, env = "OVNET_NODE_NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// This host's underlay IPv4 address, the VTEP (default: source address of the default route).
    #[arg(long, env = "OVNET_ADVERTISE_ADDR")]
    pub advertise_addr: Option<Ipv4Addr>,
    /// gRPC API address: unix:///path (mode 0660) or tcp://IP:PORT.
    #[arg(long, env = "OVNET_LISTEN", default_value = "unix:///run/ovnet/ovagent.sock")]
    pub listen: Listen,
    /// TTL in seconds of the etcd lease that keeps this host alive.
    #[arg(long, env = "OVNET_LEASE_TTL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_ttl: u64,
    /// Seconds between full reconcile passes that run even when nothing was announced.
    #[arg(long, env = "OVNET_RESYNC_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub resync_interval: u64,
    /// Log format.
    #[arg(long, env = "OVNET_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this
    /// IP:PORT, e.g. 127.0.0.1:9475 (off when not given).
    #[arg(long, env = "OVNET_METRICS_LISTEN", value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long a dead host's blocks and endpoints stay reserved for it
    /// (etcd lease TTL), e.g. 24h, 90m, 30s; after that any host may lease them.
    #[arg(long, env = "OVNET_BLOCK_GRACE", default_value = "24h", value_parser = parse_grace)]
    pub block_grace: Duration,
}

impl Config {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl)
    }

    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_interval)
    }

    /// The node name, defaulting to the kernel's hostname.
    pub fn node_name(&self) -> Result<String, String> {
        if let Some(n) = &self.node_name {
            return Ok(n.clone());
        }
        let host = nix::unistd::gethostname().map_err(|e| format!("reading hostname: {e}"))?;
        let host = host.to_string_lossy().to_string();
        parse_node_name(&host).map_err(|e| format!("hostname {e}; pass --node-name"))
    }
}

/// A duration in seconds (`90`) or with one unit (`30s`, `90m`, `24h`, `7d`),
/// between 2 s (etcd's shortest lease) and 365 days.
fn parse_grace(s: &str) -> Result<Duration, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration {s:?}: expected a number with s, m, h or d, e.g. 24h")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected a number with s, m, h or d, e.g. 24h"))?;
    let secs = n.saturating_mul(scale);
    if !(2..=365 * 86400).contains(&secs) {
        return Err(format!("duration {s:?} out of range: between 2s and 365d"));
    }
    Ok(Duration::from_secs(secs))
}

fn parse_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(format!("etcd prefix {s:?} must start with '/' and name something, e.g. /ovnet"));
    }
    Ok(trimmed.to_string())
}

fn parse_node_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid node name: 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("ovagent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(c.etcd_prefix, "/ovnet");
        assert_eq!(c.listen, Listen::Unix("/run/ovnet/ovagent.sock".into()));
        assert_eq!(c.lease_ttl, 10);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.block_grace, Duration::from_secs(86400));
    }

    #[test]
    fn grace_durations() {
        assert_eq!(parse_grace("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_grace("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_grace("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_grace("2d").unwrap(), Duration::from_secs(172800));
        for bad in ["", "1s", "h", "10x", "-5", "1.5h", "400d", "99999999999999999999"] {
            assert!(parse_grace(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parses_everything() {
        let c = parse(&[
            "--etcd-endpoints",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "--etcd-prefix",
            "/lab1/",
            "--node-name",
            "h1",
            "--advertise-addr",
            "172.30.0.1",
            "--listen",
            "tcp://127.0.0.1:7000",
            "--lease-ttl",
            "3",
            "--metrics-listen",
            "127.0.0.1:9475",
        ])
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9475".parse().unwrap()));
        assert_eq!(c.etcd_endpoints.len(), 2);
        assert_eq!(c.etcd_prefix, "/lab1");
        assert_eq!(c.node_name().unwrap(), "h1");
        assert_eq!(c.advertise_addr, Some(Ipv4Addr::new(172, 30, 0, 1)));
        assert_eq!(c.listen, Listen::Tcp("127.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--listen", "http://x"][..],
            &["--listen", "unix://relative"],
            &["--listen", "tcp://nope"],
            &["--etcd-prefix", "ovnet"],
            &["--node-name", "bad name"],
            &["--node-name", ""],
            &["--advertise-addr", "::1"],
            &["--lease-ttl", "0"],
            &["--metrics-listen", "9475"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }
}
