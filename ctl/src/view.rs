//! What `ovctl` shows: plain serde structs converted from the proto types.
//!
//! JSON output is serialized from these, never from the generated proto
//! types, so field names stay stable whatever happens to the wire format.
//! Empty strings from the agent (an unknown VTEP) become `null`.

use std::collections::BTreeMap;

use ovnet_proto as pb;
use serde::Serialize;

/// A network, as `network create`, `network ls` and `network inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The host a bridge network belongs to; `null` for an overlay network.
    pub host: Option<String>,
    pub subnet: String,
    pub gateway: String,
    pub vni: u32,
    pub mtu: u32,
    pub block_prefix: u32,
    pub internal: bool,
}

impl From<pb::Network> for NetworkView {
    fn from(n: pb::Network) -> Self {
        NetworkView {
            id: n.id,
            name: n.name,
            driver: n.driver,
            host: Some(n.host).filter(|h| !h.is_empty()),
            subnet: n.subnet,
            gateway: n.gateway,
            vni: n.vni,
            mtu: n.mtu,
            block_prefix: n.block_prefix,
            internal: n.internal,
        }
    }
}

/// `network inspect`: the network, its blocks by host, and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkDetailView {
    #[serde(flatten)]
    pub network: NetworkView,
    /// Host name to the CIDRs of the blocks it holds, in the agent's order.
    pub blocks: BTreeMap<String, Vec<String>>,
    pub endpoints: Vec<EndpointView>,
}

impl NetworkDetailView {
    /// `None` when the agent left out the network itself.
    pub fn from_proto(d: pb::NetworkDetail) -> Option<Self> {
        let network = NetworkView::from(d.network?);
        let mut blocks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for b in d.blocks {
            blocks.entry(b.host).or_default().push(b.cidr);
        }
        let endpoints = d.endpoints.into_iter().map(EndpointView::from).collect();
        Some(NetworkDetailView { network, blocks, endpoints })
    }
}

/// An endpoint as listed by `network inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub host: String,
    pub netns: String,
    pub ip: String,
    pub mac: String,
    pub ifname: String,
    /// DNS name on the network (absent when it has none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Published ports of its host, `[HOSTIP:]HOSTPORT:PORT/PROTO`.
    pub ports: Vec<String>,
}

impl From<pb::Endpoint> for EndpointView {
    fn from(e: pb::Endpoint) -> Self {
        let (name, aliases) = (e.name, e.aliases);
        EndpointView {
            id: e.id,
            host: e.host,
            netns: e.netns,
            ip: e.ip,
            mac: e.mac,
            ifname: e.ifname,
            name,
            aliases,
            ports: e.ports,
        }
    }
}

/// An endpoint as `network connect`/`disconnect` show it: the inspect fields
/// plus what a caller needs to configure the namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachedEndpointView {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    pub network: String,
    pub prefix_len: u32,
    pub gateway: String,
}

impl From<pb::Endpoint> for AttachedEndpointView {
    fn from(e: pb::Endpoint) -> Self {
        let network = e.network.clone();
        let (prefix_len, gateway) = (e.prefix_len, e.gateway.clone());
        AttachedEndpointView { endpoint: EndpointView::from(e), network, prefix_len, gateway }
    }
}

/// `network rm`: the name of the network that is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemovedView {
    pub name: String,
}

/// What `host rm` removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemovedHostView {
    pub name: String,
    pub blocks: u32,
    pub endpoints: u32,
}

/// A host as `host ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostView {
    pub name: String,
    /// `None` when the agent does not know it (a dead host).
    pub vtep: Option<String>,
    pub alive: bool,
    pub blocks: Vec<BlockView>,
}

impl From<pb::Host> for HostView {
    fn from(h: pb::Host) -> Self {
        HostView {
            name: h.name,
            vtep: Some(h.vtep).filter(|v| !v.is_empty()),
            alive: h.alive,
            blocks: h.blocks.into_iter().map(BlockView::from).collect(),
        }
    }
}

/// One address block held by a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockView {
    pub network: String,
    pub cidr: String,
}

impl From<pb::Block> for BlockView {
    fn from(b: pb::Block) -> Self {
        BlockView { network: b.network, cidr: b.cidr }
    }
}

/// `version`: ours, and the agent's when it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionView {
    pub client: ClientVersion,
    pub agent: Option<AgentVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientVersion {
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentVersion {
    pub version: String,
    pub node_name: String,
}

impl From<pb::VersionResponse> for AgentVersion {
    fn from(v: pb::VersionResponse) -> Self {
        AgentVersion { version: v.version, node_name: v.node_name }
    }
}

/// `doctor`: the agent's findings, counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoctorView {
    pub node: String,
    /// The etcd revision the agent compared the kernel with.
    pub revision: i64,
    pub problems: usize,
    pub warnings: usize,
    pub findings: Vec<FindingView>,
}

/// One finding: `severity` is `ok`, `warning` or `problem`; `fix` is the
/// command that repairs it, when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingView {
    pub severity: &'static str,
    pub area: String,
    pub message: String,
    pub fix: Option<String>,
}

impl From<pb::DoctorReport> for DoctorView {
    fn from(r: pb::DoctorReport) -> Self {
        use pb::finding::Severity;
        let findings: Vec<FindingView> = r
            .findings
            .into_iter()
            .map(|f| FindingView {
                severity: match f.severity() {
                    Severity::Ok => "ok",
                    Severity::Problem => "problem",
                    // Unknown to this client: worth a look, not a failure.
                    Severity::Warning | Severity::Unspecified => "warning",
                },
                area: f.area,
                message: f.message,
                fix: Some(f.fix).filter(|x| !x.is_empty()),
            })
            .collect();
        let count = |s: &str| findings.iter().filter(|f| f.severity == s).count();
        DoctorView {
            node: r.node_name,
            revision: r.revision,
            problems: count("problem"),
            warnings: count("warning"),
            findings,
        }
    }
}
