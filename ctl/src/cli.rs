//! The command-line grammar of `ovctl`, as clap derive structs.
//!
//! Everything that can be checked without the agent is checked here, by clap
//! value parsers (address, CIDR, driver, number ranges), so a malformed
//! command is a usage error (exit 2) before any connection is made; so are
//! TLS flags that do not fit the address ([`Cli::tls`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use ipnet::Ipv4Net;
use ovnet_ipam_store::PortMapping;

use crate::addr::{AgentAddr, Scheme};
use crate::error::CtlError;

/// Where the agent listens unless `-H`/`OVNET_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/ovnet/ovagent.sock";
/// Network drivers the agent implements.
pub const SUPPORTED_DRIVERS: &[&str] = &["overlay", "bridge"];
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// ovctl: manage ovnet overlay networks through the local ovagent.
#[derive(Debug, Parser)]
#[command(name = "ovctl", version, propagate_version = true)]
pub struct Cli {
    /// Agent address: unix:///PATH, tcp://IP:PORT, http://IP:PORT (plain
    /// text) or https://IP:PORT (TLS).
    #[arg(
        short = 'H',
        long = "host",
        env = "OVNET_HOST",
        value_name = "ADDR",
        default_value = DEFAULT_HOST,
        global = true
    )]
    pub host: AgentAddr,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,

    /// Give up when the agent has not answered within this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub timeout: u64,

    /// PEM CA certificate that signed the agent's certificate; turns TLS on
    /// for a tcp:// address (needed for https://).
    #[arg(long, env = "OVNET_CTL_TLS_CA", value_name = "FILE", global = true, help_heading = "TLS")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for an agent started with --tls-client-ca.
    #[arg(long, env = "OVNET_CTL_TLS_CERT", value_name = "FILE", global = true, help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "OVNET_CTL_TLS_KEY", value_name = "FILE", global = true, help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The TLS files for talking to the agent, as the flags name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// Client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Cli {
    /// Whether to speak TLS, refusing TLS flags that do not fit the address
    /// (a usage error, exit 2). TLS is on for https://, and for tcp:// when
    /// --tls-ca is given.
    pub fn tls(&self) -> Result<Option<TlsFiles>, CtlError> {
        let usage = |m: String| Err(CtlError::Usage(m));
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (Some(_), None) => {
                return usage("--tls-cert needs --tls-key (the certificate's private key)".into());
            }
            (None, Some(_)) => {
                return usage("--tls-key needs --tls-cert (the certificate it belongs to)".into());
            }
            (None, None) => None,
        };
        let any = self.tls_ca.is_some() || identity.is_some();
        match (self.host.scheme(), &self.tls_ca) {
            (Scheme::Unix, _) if any => usage(format!(
                "--tls-ca, --tls-cert and --tls-key (or $OVNET_CTL_TLS_*) apply to tcp:// and https:// addresses, not to the unix socket {}",
                self.host
            )),
            (Scheme::Http, _) if any => usage(format!(
                "{} is plain text, but TLS flags are given: use tcp:// or https:// with --tls-ca",
                self.host
            )),
            (Scheme::Https, None) => {
                usage(format!("{} needs --tls-ca, the CA that signed the agent's certificate", self.host))
            }
            (Scheme::Tcp, None) if any => {
                usage("--tls-cert needs --tls-ca, the CA that signed the agent's certificate".into())
            }
            (_, Some(ca)) => Ok(Some(TlsFiles { ca: ca.clone(), identity })),
            _ => Ok(None),
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and remove networks; attach namespaces.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Show the hosts of the cluster.
    #[command(subcommand)]
    Host(HostCommand),
    /// Show the client's and the agent's versions.
    Version,
    /// Compare this host's kernel with etcd and check the datapath; exits 4 on a problem.
    ///
    /// Each finding names its area (the AREA column):
    ///   link        bridges and VXLAN devices: present, right kind, VNI, MAC, up
    ///   addr        the gateway address on each bridge
    ///   fdb         FDB entries toward the other hosts' endpoints and flood entries
    ///   neigh       neighbour entries of the other hosts' endpoints
    ///   veth        veths of this host's endpoints, and veths no endpoint owns
    ///   mtu         device MTUs as etcd says, and networks that fit the underlay MTU - 50
    ///   vxlan-port  UDP port 4789 open for VXLAN
    ///   checksum    tx checksum offload of the VXLAN devices (kernels before 5.7)
    ///   firewall    nftables table inet ovnet present and isolating every network
    ///   etcd        records in etcd that do not decode (skipped)
    #[command(verbatim_doc_comment)]
    Doctor,
    /// Print a shell completion script.
    Completion {
        /// The shell to complete for.
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network and print its id.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls,
    /// Show a network with its blocks and endpoints, as JSON.
    Inspect {
        /// Network name.
        name: String,
    },
    /// Remove a network.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network name.
        name: String,
    },
    /// Attach a network namespace to a network and print its address.
    Connect(ConnectArgs),
    /// Print the CNI conflist that lets podman or containerd use a network
    /// through this agent (ovagent --cni-conf-dir writes the same file).
    Conflist {
        /// Network name.
        name: String,
    },
    /// Detach a network namespace from a network.
    Disconnect {
        /// Network name.
        network: String,
        /// Namespace name (`ip netns add`) or path such as /proc/PID/ns/net.
        netns: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Network driver: overlay (every host) or bridge (this host alone).
    #[arg(short = 'd', long, default_value = "overlay", value_parser = parse_driver)]
    pub driver: String,
    /// IPv4 subnet; by default the agent picks a free /16.
    #[arg(long, value_name = "CIDR", value_parser = crate::usage::parse_subnet)]
    pub subnet: Option<Ipv4Net>,
    /// VXLAN network identifier; by default the agent picks a free one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VNI)))]
    pub vni: Option<u32>,
    /// Prefix length of the address blocks handed to each host.
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=32))]
    pub block_prefix: Option<u8>,
    /// MTU of the network's interfaces; by default the agent's choice.
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// No way out: containers reach nothing outside the network, and no
    /// port can be published to them.
    #[arg(long)]
    pub internal: bool,
    /// Network name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Fixed address inside the network; by default the next free one.
    #[arg(long, value_name = "IP", value_parser = crate::usage::parse_ip)]
    pub ip: Option<Ipv4Addr>,
    /// DNS name of the endpoint on the network (a DNS label, unique there).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Another DNS name (repeatable); several endpoints may share one.
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// Publish a port of this host: `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`
    /// (repeatable; HOSTPORT 0 picks a free port, shown in the answer).
    #[arg(short = 'p', long, value_name = "SPEC", value_parser = parse_publish)]
    pub publish: Vec<PortMapping>,
    /// Network name.
    pub network: String,
    /// Namespace name (`ip netns add`) or path such as /proc/PID/ns/net.
    pub netns: String,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts, their VTEP addresses and address blocks.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a dead host's registration, blocks and endpoints at once
    /// (refused while the host is alive).
    #[command(visible_alias = "remove")]
    Rm {
        /// Host name, as `host ls` shows it.
        name: String,
    },
}

/// A `--publish` spec, checked before anything is sent (the agent checks as well).
fn parse_publish(s: &str) -> Result<PortMapping, String> {
    s.parse()
}

/// Refuses drivers the agent does not implement (the agent checks as well).
fn parse_driver(s: &str) -> Result<String, String> {
    if SUPPORTED_DRIVERS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!("unsupported network driver; supported drivers: {}", SUPPORTED_DRIVERS.join(", ")))
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
