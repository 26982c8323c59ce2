//! ovagent's flags, parsed and validated before anything is bound or dialed.
//!
//! clap checks each value; the combinations clap cannot express (TLS flags
//! with a unix socket, a non-loopback TCP listener without TLS, an etcd user
//! without a password...) are checked by [`Config::api_tls`],
//! [`Config::etcd_tls`] and [`Config::etcd_credentials`], which `run` calls
//! before it binds or dials anything. The etcd password never sits in a
//! field that `Debug` would print: it is a [`Secret`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
    /// Serve the Docker network and IPAM plugin `ovnet` on this unix socket
    /// (dockerd finds it in /run/docker/plugins); off when not given.
    #[arg(long, env = "OVNET_DOCKER_PLUGIN", value_name = "unix:///PATH", num_args = 0..=1,
          default_missing_value = crate::docker::DEFAULT_SOCKET, value_parser = parse_plugin_socket,
          help_heading = "Container runtimes")]
    pub docker_plugin: Option<PathBuf>,
    /// Keep one CNI conflist per ovnet network in this directory (for
    /// podman, containerd: their CNI config dir), naming this agent's
    /// --listen address for the `ovnet` CNI plugin.
    #[arg(long, env = "OVNET_CNI_CONF_DIR", value_name = "DIR", help_heading = "Container runtimes")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Keep the docker networks of driver `ovnet` of the dockerd on this
    /// Engine API socket equal to ovnet's networks, and this host's Docker
    /// endpoints equal to dockerd's; off when not given.
    #[arg(long, env = "OVNET_DOCKER_SYNC", value_name = "unix:///PATH", num_args = 0..=1,
          default_missing_value = crate::docker::engine::DEFAULT_SOCKET,
          value_parser = crate::docker::engine::parse_socket, help_heading = "Container runtimes")]
    pub docker_sync: Option<PathBuf>,
    /// The fixed address the DNS server also answers on, put on the host's
    /// `lo` so every container reaches it through its gateway (dockerd
    /// `--dns` with it gives Docker containers cross-host names); `off` for none.
    #[arg(long, env = "OVNET_DNS_ADDRESS", value_name = "IP|off", default_value = "169.254.53.53",
          value_parser = crate::dns::parse_dns_address, help_heading = "Names (DNS)")]
    pub dns_address: crate::dns::DnsAddress,
    /// Where the DNS server reads the resolvers it forwards other names to.
    #[arg(
        long,
        env = "OVNET_RESOLV_CONF",
        value_name = "PATH",
        default_value = "/etc/resolv.conf",
        help_heading = "Names (DNS)"
    )]
    pub resolv_conf: PathBuf,
    /// PEM certificate (chain) the API presents on a tcp:// --listen; turns TLS on.
    #[arg(long, env = "OVNET_TLS_CERT", value_name = "FILE", help_heading = "API security")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "OVNET_TLS_KEY", value_name = "FILE", help_heading = "API security")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by one of them.
    #[arg(long, env = "OVNET_TLS_CLIENT_CA", value_name = "FILE", help_heading = "API security")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve the API over plain TCP on a non-loopback address (anyone who
    /// reaches the port controls the host's networks).
    #[arg(long, env = "OVNET_INSECURE", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "API security")]
    pub insecure: bool,
    /// Let containers reach the control plane. By default the agent's own
    /// nftables rules drop TCP from every ovnet network to the etcd
    /// endpoints it was given, its TCP API and its metrics listener (and
    /// their ports on this host and at every host's VTEP).
    #[arg(long, env = "OVNET_OPEN_CONTROL_PLANE", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "API security")]
    pub open_control_plane: bool,
    /// PEM CA certificate(s) that signed etcd's server certificates (needed for https:// endpoints).
    #[arg(long, env = "OVNET_ETCD_CACERT", value_name = "FILE", help_heading = "etcd security")]
    pub etcd_cacert: Option<PathBuf>,
    /// PEM client certificate presented to etcd.
    #[arg(long, env = "OVNET_ETCD_CERT", value_name = "FILE", help_heading = "etcd security")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert.
    #[arg(long, env = "OVNET_ETCD_KEY", value_name = "FILE", help_heading = "etcd security")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name (etcd authentication); the password comes from
    /// $OVNET_ETCD_PASSWORD or --etcd-password-file.
    #[arg(long, env = "OVNET_ETCD_USER", value_name = "NAME", value_parser = parse_user, help_heading = "etcd security")]
    pub etcd_user: Option<String>,
    /// File holding the etcd password (one line; a trailing newline is ignored).
    #[arg(long, env = "OVNET_ETCD_PASSWORD_FILE", value_name = "FILE", help_heading = "etcd security")]
    pub etcd_password_file: Option<PathBuf>,
    /// The etcd password from the environment ([`PASSWORD_ENV`]); never a
    /// flag, so it cannot show in `ps`. Filled by `main`.
    #[arg(skip)]
    pub etcd_password_env: Option<Secret>,
}

impl Config {
    /// What containers are kept from: the etcd endpoints (a name is
    /// resolved with `resolve`; one that does not resolve is skipped with a
    /// warning), the TCP API and the metrics listener (`open` with
    /// `--open-control-plane`).
    pub fn control_plane(
        &self,
        resolve: impl Fn(&str, u16) -> Vec<std::net::Ipv4Addr>,
    ) -> crate::desired::ControlPlane {
        let mut cp = crate::desired::ControlPlane { open: self.open_control_plane, ..Default::default() };
        let mut listener = |addr: SocketAddr| {
            let a = match addr {
                SocketAddr::V4(a) => a,
                // IPv6 listeners also take IPv4 on every address.
                SocketAddr::V6(a) => std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, a.port()),
            };
            cp.own.insert(a);
        };
        if let Listen::Tcp(addr) = self.listen {
            listener(addr);
        }
        if let Some(addr) = self.metrics_listen {
            listener(addr);
        }
        for endpoint in &self.etcd_endpoints {
            let Some((host, port)) = etcd_host_port(endpoint) else {
                tracing::warn!(endpoint = %endpoint, "cannot tell the etcd endpoint's address: containers are not kept from it");
                continue;
            };
            let ips = match host.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => vec![ip],
                Err(_) => resolve(&host, port),
            };
            if ips.is_empty() {
                tracing::warn!(endpoint = %endpoint, "the etcd endpoint's name does not resolve to an IPv4 address: containers are kept from its port only");
                cp.etcd_ports.insert(port);
            }
            cp.etcd.extend(ips.into_iter().map(|ip| std::net::SocketAddrV4::new(ip, port)));
        }
        cp
    }
}

/// Host and port of an etcd endpoint (`http://HOST:PORT`, `https://...`,
/// `HOST:PORT`; port 2379 when none is given).
fn etcd_host_port(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 2379),
    };
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), port))
}

/// Resolves a name to its IPv4 addresses (the system resolver).
pub fn resolve_ipv4(host: &str, port: u16) -> Vec<std::net::Ipv4Addr> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(*a.ip()),
                    SocketAddr::V6(_) => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A plugin socket: `unix:///absolute/path`.
fn parse_plugin_socket(s: &str) -> Result<PathBuf, String> {
    match s.parse::<Listen>()? {
        Listen::Unix(path) => Ok(path),
        Listen::Tcp(_) => Err(format!("{s}: the Docker plugin listens on a unix:///path socket only")),
    }
}

/// The environment variable that may hold the etcd password.
pub const PASSWORD_ENV: &str = "OVNET_ETCD_PASSWORD";

/// A password: `Debug` shows `<redacted>`, and there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The variable `name`, when set and not empty.
    pub fn from_env(name: &str) -> Option<Secret> {
        std::env::var(name).ok().filter(|v| !v.is_empty()).map(Secret)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The API's TLS files, as the flags name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The files for TLS towards etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    pub ca: PathBuf,
    /// Client certificate and key, when etcd wants one.
    pub identity: Option<(PathBuf, PathBuf)>,
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

    /// The API's TLS setting, refusing flag combinations that make no sense
    /// and a plain-text API on a non-loopback address without --insecure.
    pub fn api_tls(&self) -> Result<Option<ApiTlsFiles>, String> {
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ApiTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (the certificate's private key)".into());
            }
            (None, Some(_)) => {
                return Err("--tls-key needs --tls-cert (the certificate it belongs to)".into());
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return Err("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked only over TLS".into());
            }
            (None, None) => None,
        };
        match (&self.listen, &files) {
            (Listen::Unix(path), Some(_)) => Err(format!(
                "--tls-cert, --tls-key and --tls-client-ca apply to a tcp:// --listen, not to the unix socket {} (its mode 0660 guards it)",
                path.display()
            )),
            (Listen::Tcp(_), Some(_)) if self.insecure => {
                Err("--insecure contradicts --tls-cert: give one or the other".into())
            }
            (Listen::Tcp(addr), None) if !addr.ip().is_loopback() && !self.insecure => Err(format!(
                "refusing to serve the API in plain text on {addr}, which is not a loopback address: \
                 pass --tls-cert and --tls-key (and --tls-client-ca to check clients), or --insecure"
            )),
            _ => Ok(files),
        }
    }

    /// TLS towards etcd: on when an endpoint is https:// or a TLS flag is given.
    pub fn etcd_tls(&self) -> Result<Option<EtcdTlsFiles>, String> {
        let identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (Some(_), None) => {
                return Err("--etcd-cert needs --etcd-key (the certificate's private key)".into());
            }
            (None, Some(_)) => {
                return Err("--etcd-key needs --etcd-cert (the certificate it belongs to)".into());
            }
            (None, None) => None,
        };
        let https = self.etcd_endpoints.iter().find(|e| e.starts_with("https://"));
        let flags = self.etcd_cacert.is_some() || identity.is_some();
        if !flags && https.is_none() {
            return Ok(None);
        }
        if let Some(plain) = self.etcd_endpoints.iter().find(|e| e.starts_with("http://")) {
            return Err(format!(
                "etcd endpoint {plain} is plain HTTP, but TLS is on (an https:// endpoint or --etcd-cacert/--etcd-cert): \
                 use https:// for every endpoint"
            ));
        }
        let Some(ca) = self.etcd_cacert.clone() else {
            let why = https.map_or("--etcd-cert".to_string(), |e| format!("etcd endpoint {e}"));
            return Err(format!("{why} needs --etcd-cacert, the CA that signed etcd's certificate"));
        };
        Ok(Some(EtcdTlsFiles { ca, identity }))
    }

    /// The etcd user and password, when --etcd-user is given. The password
    /// comes from $OVNET_ETCD_PASSWORD or --etcd-password-file (not both).
    pub fn etcd_credentials(&self) -> Result<Option<(String, Secret)>, String> {
        let from_file = match &self.etcd_password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        let password = match (from_file, &self.etcd_password_env) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "the etcd password is given twice, in ${PASSWORD_ENV} and in --etcd-password-file: keep one"
                ));
            }
            (Some(p), None) => Some(p),
            (None, p) => p.clone(),
        };
        match (&self.etcd_user, password) {
            (Some(user), Some(p)) => Ok(Some((user.clone(), p))),
            (Some(user), None) => Err(format!(
                "--etcd-user {user} needs a password: set ${PASSWORD_ENV} or pass --etcd-password-file"
            )),
            (None, Some(_)) => Err(format!(
                "an etcd password is set (${PASSWORD_ENV} or --etcd-password-file) but no --etcd-user"
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The first line of a password file, without its line ending.
fn read_password(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("reading --etcd-password-file {}: {}", path.display(), crate::tls::io_reason(&e))
    })?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(format!("--etcd-password-file {} is empty", path.display()));
    }
    Ok(Secret(line.to_string()))
}

fn parse_user(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not a valid etcd user name: not empty, no spaces"));
    }
    Ok(s.to_string())
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
    fn the_control_plane_kept_from_containers() {
        let c = parse(&[
            "--etcd-endpoints",
            "http://10.0.0.1:2379,https://etcd2:2479,10.0.0.3,http://[::1]:2379,http://nowhere:2379",
            "--listen",
            "tcp://0.0.0.0:7070",
            "--metrics-listen",
            "10.0.0.9:9475",
        ])
        .unwrap();
        let resolve = |host: &str, _: u16| match host {
            "etcd2" => vec![std::net::Ipv4Addr::new(10, 0, 0, 2)],
            _ => vec![],
        };
        let cp = c.control_plane(resolve);
        let etcd: Vec<String> = cp.etcd.iter().map(|a| a.to_string()).collect();
        assert_eq!(etcd, ["10.0.0.1:2379", "10.0.0.2:2479", "10.0.0.3:2379"]);
        // Names that do not resolve (or IPv6) by port.
        assert_eq!(cp.etcd_ports, [2379].into());
        let own: Vec<String> = cp.own.iter().map(|a| a.to_string()).collect();
        assert_eq!(own, ["0.0.0.0:7070", "10.0.0.9:9475"]);
        let vtep = std::net::Ipv4Addr::new(192, 0, 2, 1);
        let published: Vec<String> = cp.published(vtep).iter().map(|a| a.to_string()).collect();
        assert_eq!(published, ["192.0.2.1:7070", "10.0.0.9:9475"]);
        let open = parse(&["--open-control-plane", "--listen", "tcp://0.0.0.0:7070"]).unwrap();
        let open = open.control_plane(resolve);
        assert!(open.open && open.published(vtep) == [std::net::SocketAddrV4::new(vtep, 7070)]);
    }

    #[test]
    fn docker_plugin_socket() {
        assert_eq!(parse(&[]).unwrap().docker_plugin, None);
        let bare = parse(&["--docker-plugin"]).unwrap().docker_plugin;
        assert_eq!(bare, Some("/run/docker/plugins/ovnet.sock".into()));
        let given = parse(&["--docker-plugin=unix:///tmp/p/ovnet.sock"]).unwrap().docker_plugin;
        assert_eq!(given, Some("/tmp/p/ovnet.sock".into()));
        for bad in ["--docker-plugin=tcp://127.0.0.1:1", "--docker-plugin=unix://rel", "--docker-plugin=/x"] {
            assert!(parse(&[bad]).is_err(), "{bad} should be refused");
        }
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
            &["--etcd-user", ""],
            &["--etcd-user", "a b"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    fn api_tls(args: &[&str]) -> Result<Option<ApiTlsFiles>, String> {
        parse(args).unwrap().api_tls()
    }

    #[test]
    fn api_tls_combinations() {
        let tcp = |addr: &str| format!("tcp://{addr}");
        let public = tcp("172.30.0.11:7000");
        assert_eq!(api_tls(&[]), Ok(None), "the unix socket needs no TLS");
        assert_eq!(api_tls(&["--listen", &tcp("127.0.0.1:7000")]), Ok(None));
        assert_eq!(api_tls(&["--listen", &tcp("[::1]:7000")]), Ok(None));
        assert_eq!(api_tls(&["--listen", &public, "--insecure"]), Ok(None));
        let files =
            api_tls(&["--listen", &public, "--tls-cert", "/c", "--tls-key", "/k", "--tls-client-ca", "/ca"]);
        assert_eq!(
            files,
            Ok(Some(ApiTlsFiles { cert: "/c".into(), key: "/k".into(), client_ca: Some("/ca".into()) }))
        );
        let loopback_tls = api_tls(&["--listen", &tcp("127.0.0.1:1"), "--tls-cert", "/c", "--tls-key", "/k"]);
        assert_eq!(loopback_tls.map(|f| f.map(|f| f.client_ca)), Ok(Some(None)));
    }

    #[test]
    fn api_tls_refusals_name_the_problem() {
        let public = "tcp://172.30.0.11:7000";
        for (args, want) in [
            (&["--listen", public][..], "refusing to serve the API in plain text on 172.30.0.11:7000"),
            (&["--listen", "tcp://0.0.0.0:7000"], "not a loopback address"),
            (&["--listen", public, "--tls-cert", "/c"], "--tls-cert needs --tls-key"),
            (&["--listen", public, "--tls-key", "/k"], "--tls-key needs --tls-cert"),
            (
                &["--listen", public, "--tls-client-ca", "/ca", "--insecure"],
                "--tls-client-ca needs --tls-cert",
            ),
            (&["--tls-cert", "/c", "--tls-key", "/k"], "not to the unix socket /run/ovnet/ovagent.sock"),
            (
                &["--listen", public, "--tls-cert", "/c", "--tls-key", "/k", "--insecure"],
                "--insecure contradicts",
            ),
        ] {
            let e = api_tls(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    fn etcd_tls(args: &[&str]) -> Result<Option<EtcdTlsFiles>, String> {
        parse(args).unwrap().etcd_tls()
    }

    #[test]
    fn etcd_tls_combinations() {
        assert_eq!(etcd_tls(&[]), Ok(None));
        let https = ["--etcd-endpoints", "https://10.0.0.1:2379,https://10.0.0.2:2379"];
        let ca_only = etcd_tls(&[&https[..], &["--etcd-cacert", "/ca"]].concat());
        assert_eq!(ca_only, Ok(Some(EtcdTlsFiles { ca: "/ca".into(), identity: None })));
        let full = etcd_tls(
            &[&https[..], &["--etcd-cacert", "/ca", "--etcd-cert", "/c", "--etcd-key", "/k"]].concat(),
        );
        assert_eq!(full.unwrap().unwrap().identity, Some(("/c".into(), "/k".into())));
        let bare = etcd_tls(&["--etcd-endpoints", "10.0.0.1:2379", "--etcd-cacert", "/ca"]);
        assert!(bare.unwrap().is_some(), "an endpoint without scheme follows the flags");
        for (args, want) in [
            (&https[..], "etcd endpoint https://10.0.0.1:2379 needs --etcd-cacert"),
            (&["--etcd-cacert", "/ca"], "etcd endpoint http://127.0.0.1:2379 is plain HTTP"),
            (
                &["--etcd-endpoints", "https://a:1,http://b:2", "--etcd-cacert", "/ca"],
                "http://b:2 is plain HTTP",
            ),
            (&["--etcd-cert", "/c"], "--etcd-cert needs --etcd-key"),
            (&["--etcd-key", "/k"], "--etcd-key needs --etcd-cert"),
            (
                &["--etcd-endpoints", "a:1", "--etcd-cert", "/c", "--etcd-key", "/k"],
                "--etcd-cert needs --etcd-cacert",
            ),
        ] {
            let e = etcd_tls(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn etcd_credentials_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let file = file.to_str().unwrap();
        let with_env = |args: &[&str], env: Option<&str>| {
            let mut c = parse(args).unwrap();
            c.etcd_password_env = env.map(Secret::new);
            c.etcd_credentials()
        };
        assert_eq!(with_env(&[], None), Ok(None));
        let from_env = with_env(&["--etcd-user", "ovnet"], Some("pw")).unwrap().unwrap();
        assert_eq!((from_env.0.as_str(), from_env.1.expose()), ("ovnet", "pw"));
        let from_file =
            with_env(&["--etcd-user", "ovnet", "--etcd-password-file", file], None).unwrap().unwrap();
        assert_eq!(from_file.1.expose(), "s3cret", "the newline is not part of it");
        for (args, env, want) in [
            (&["--etcd-user", "ovnet"][..], None, "--etcd-user ovnet needs a password"),
            (&[], Some("pw"), "no --etcd-user"),
            (&["--etcd-password-file", file], None, "no --etcd-user"),
            (&["--etcd-user", "u", "--etcd-password-file", file], Some("pw"), "given twice"),
            (
                &["--etcd-user", "u", "--etcd-password-file", "/nonexistent/pw"],
                None,
                "reading --etcd-password-file /nonexistent/pw: No such file or directory",
            ),
        ] {
            let e = with_env(args, env).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.contains("s3cret") && !e.contains("pw\""), "{e}");
        }
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = with_env(&["--etcd-user", "u", "--etcd-password-file", empty.to_str().unwrap()], None)
            .unwrap_err();
        assert!(e.ends_with("is empty"), "{e}");
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let mut c = parse(&["--etcd-user", "ovnet"]).unwrap();
        c.etcd_password_env = Some(Secret::new("hunter2"));
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
