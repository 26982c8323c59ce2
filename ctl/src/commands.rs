//! One function per subcommand: build the request, call the agent, render.
//!
//! Commands write into a caller-supplied buffer rather than to stdout, so
//! `version` can leave its client line there even when the agent fails, and
//! tests can run whole commands against a fake agent and read what they print.

use std::time::Duration;

use clap::CommandFactory;
use ovnet_proto as pb;

use crate::cli::{Cli, Command, ConnectArgs, CreateArgs, Format, HostCommand, NetworkCommand};
use crate::client::{Agent, Target};
use crate::error::CtlError;
use crate::output;
use crate::tls::Mode;
use crate::view::{
    AttachedEndpointView, ClientVersion, DoctorView, HostView, NetworkDetailView, NetworkView,
    RemovedHostView, RemovedView, VersionView,
};

/// Runs a parsed command, appending its output to `out`. Talking to the agent
/// (connecting and calling) is bounded by `--timeout`.
pub async fn run(cli: Cli, out: &mut String) -> Result<(), CtlError> {
    if let Command::Completion { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "ovctl", &mut script);
        out.push_str(&String::from_utf8_lossy(&script));
        return Ok(());
    }
    let (tls, mode) = match cli.tls()? {
        Some(files) => {
            let mode = if files.identity.is_some() { Mode::TlsWithCert } else { Mode::Tls };
            (Some(crate::tls::client_config(&files)?), mode)
        }
        None => (None, Mode::Plain),
    };
    let format = cli.format;
    let host = Target { addr: cli.host, tls, mode };
    let limit = Limit { target: &host, secs: cli.timeout };
    match cli.command {
        Command::Completion { .. } => Ok(()),
        Command::Version => version(limit, format, out).await,
        Command::Doctor => {
            let report = limit.apply(async { Agent::connect(&host).await?.doctor().await }).await?;
            let report = DoctorView::from(report);
            render(out, format, &report, output::doctor_text)?;
            match report.problems {
                0 => Ok(()),
                count => Err(CtlError::Problems { node: report.node, count }),
            }
        }
        Command::Network(cmd) => {
            let work = async {
                let mut agent = Agent::connect(&host).await?;
                network(&mut agent, cmd, format, out).await
            };
            limit.apply(work).await
        }
        Command::Host(HostCommand::Ls) => {
            let hosts = limit.apply(async { Agent::connect(&host).await?.list_hosts().await });
            let mut hosts: Vec<HostView> = hosts.await?.into_iter().map(HostView::from).collect();
            hosts.sort_by(|a, b| a.name.cmp(&b.name));
            render(out, format, hosts.as_slice(), output::hosts_table)
        }
        Command::Host(HostCommand::Rm { name }) => {
            let removed = limit.apply(async { Agent::connect(&host).await?.remove_host(name.clone()).await });
            let removed = removed.await?;
            let view = RemovedHostView { name, blocks: removed.blocks, endpoints: removed.endpoints };
            render(out, format, &view, |r| {
                format!("{} (blocks: {}, endpoints: {})\n", r.name, r.blocks, r.endpoints)
            })
        }
    }
}

/// The `--timeout` bound on talking to one agent.
#[derive(Clone, Copy)]
struct Limit<'a> {
    target: &'a Target,
    secs: u64,
}

impl Limit<'_> {
    async fn apply<T>(self, work: impl Future<Output = Result<T, CtlError>>) -> Result<T, CtlError> {
        tokio::time::timeout(Duration::from_secs(self.secs), work)
            .await
            .map_err(|_| CtlError::Timeout { addr: self.target.addr.to_string(), secs: self.secs })?
    }
}

async fn network(
    agent: &mut Agent,
    cmd: NetworkCommand,
    format: Format,
    out: &mut String,
) -> Result<(), CtlError> {
    match cmd {
        NetworkCommand::Create(args) => {
            let net = NetworkView::from(agent.create_network(create_request(args)).await?);
            render(out, format, &net, |n| format!("{}\n", n.id))
        }
        NetworkCommand::Ls => {
            let mut nets: Vec<NetworkView> =
                agent.list_networks().await?.into_iter().map(NetworkView::from).collect();
            nets.sort_by(|a, b| a.name.cmp(&b.name));
            render(out, format, nets.as_slice(), output::networks_table)
        }
        NetworkCommand::Inspect { name } => {
            let detail = NetworkDetailView::from_proto(agent.inspect_network(name).await?)
                .ok_or_else(|| CtlError::BadReply("network detail without a network".into()))?;
            out.push_str(&output::json(&detail)?);
            Ok(())
        }
        NetworkCommand::Rm { name } => {
            agent.remove_network(name.clone()).await?;
            render(out, format, &RemovedView { name }, |r| format!("{}\n", r.name))
        }
        NetworkCommand::Connect(args) => {
            let ep = AttachedEndpointView::from(agent.connect_endpoint(connect_request(args)).await?);
            if format == Format::Table && ep.endpoint.netns.contains('/') {
                // A name gets /etc/netns/NAME/resolv.conf from the agent; a path cannot.
                eprintln!(
                    "names: put \"nameserver {}\", \"search {}\" and \"options timeout:1 attempts:3\" in the container's resolv.conf",
                    ep.gateway,
                    ep.network.to_ascii_lowercase()
                );
            }
            render(out, format, &ep, |e| {
                let ports = e.endpoint.ports.iter().map(|p| format!("{p}\n"));
                std::iter::once(format!("{}\n", e.endpoint.ip)).chain(ports).collect()
            })
        }
        NetworkCommand::Conflist { name } => {
            if agent.tls() {
                return Err(CtlError::Usage(format!(
                    "the ovnet CNI plugin does not speak TLS, so a conflist cannot name {}: run ovctl on the agent's host against its unix socket",
                    agent.addr()
                )));
            }
            // Refuses a network the agent does not know, and another host's
            // bridge network (the agent would refuse every ADD).
            let detail = agent.inspect_network(name.clone()).await?;
            if let Some(owner) = detail.network.map(|n| n.host).filter(|h| !h.is_empty()) {
                let node = agent.version().await?.node_name;
                if owner != node {
                    let message = format!(
                        "network {name:?} is a bridge network of host {owner:?}: only {owner:?} builds it and connects to it (this is host {node:?})"
                    );
                    return Err(CtlError::Agent { code: tonic::Code::FailedPrecondition, message });
                }
            }
            out.push_str(&crate::cni::conf::conflist(&name, &agent.addr().to_string()));
            Ok(())
        }
        NetworkCommand::Disconnect { network, netns } => {
            let req = pb::DisconnectRequest { network, netns, ..Default::default() };
            let ep = agent.disconnect_endpoint(req).await?.map(AttachedEndpointView::from);
            render(out, format, &ep, |e| match e {
                Some(e) => format!("{}\n", e.endpoint.ip),
                None => String::new(),
            })
        }
    }
}

/// `version`: the client version is printed even when the agent fails.
async fn version(limit: Limit<'_>, format: Format, out: &mut String) -> Result<(), CtlError> {
    let mut view =
        VersionView { client: ClientVersion { version: env!("CARGO_PKG_VERSION").to_string() }, agent: None };
    let asked = limit.apply(async { Agent::connect(limit.target).await?.version().await });
    let result = asked.await.map(|v| view.agent = Some(v.into()));
    render(out, format, &view, output::version_text)?;
    result
}

fn render<T: serde::Serialize + ?Sized>(
    out: &mut String,
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<(), CtlError> {
    match format {
        Format::Table => out.push_str(&table(value)),
        Format::Json => out.push_str(&output::json(value)?),
    }
    Ok(())
}

fn create_request(args: CreateArgs) -> pb::CreateNetworkRequest {
    pb::CreateNetworkRequest {
        name: args.name,
        driver: args.driver,
        subnet: args.subnet.map(|s| s.to_string()).unwrap_or_default(),
        vni: args.vni,
        block_prefix: args.block_prefix.map(u32::from),
        mtu: args.mtu,
        internal: args.internal,
    }
}

fn connect_request(args: ConnectArgs) -> pb::ConnectRequest {
    pb::ConnectRequest {
        network: args.network,
        netns: args.netns,
        ip: args.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        name: args.name.unwrap_or_default(),
        aliases: args.aliases,
        publish: args.publish.iter().map(ToString::to_string).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
