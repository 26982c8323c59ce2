//! The gRPC service `ovctl` talks to.
//!
//! Every request is validated before anything is written: a bad value is an
//! `InvalidArgument` naming it, and etcd and the kernel stay unchanged. Errors
//! become gRPC statuses in one place (`AgentError` -> `Status`).

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{
    BlockRecord, ContainerRef, EndpointRecord, EtcdStore, NetworkRecord, NewNetwork, PortMapping, validate,
};
use ovnet_proto as pb;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::dataplane::Dataplane;
use crate::desired::HostContext;
use crate::doctor::{self, Severity};
use crate::endpoint::{Attach, Detach, Endpoints};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::model::VXLAN_OVERHEAD;

pub struct AgentService<D: Dataplane> {
    store: EtcdStore,
    dp: D,
    me: HostContext,
    metrics: Metrics,
    endpoints: Arc<Endpoints<D>>,
}

type Reply<T> = Result<Response<T>, Status>;

impl<D: Dataplane> AgentService<D> {
    /// Serves `endpoints` (shared with the runtime plugins) and the rest of the API.
    pub fn new(store: EtcdStore, dp: D, endpoints: Arc<Endpoints<D>>, metrics: Metrics) -> Self {
        let me = endpoints.host().clone();
        AgentService { store, dp, me, metrics, endpoints }
    }

    /// Counts the errors that are etcd's (unreachable, timed out) before
    /// they become a status.
    fn counted<T>(&self, r: Result<T, AgentError>) -> Result<T, AgentError> {
        if let Err(AgentError::Store(e)) = &r
            && e.kind() == ovnet_ipam_store::ErrorKind::Unavailable
        {
            self.metrics.etcd_error();
        }
        r
    }

    async fn create(&self, r: pb::CreateNetworkRequest) -> Result<pb::Network, AgentError> {
        let driver = if r.driver.is_empty() { "overlay".to_string() } else { r.driver };
        validate::driver(&driver)?;
        // A bridge network belongs to this host (overlay networks to none).
        let host = Some(self.me.node.clone());
        let subnet = match r.subnet.as_str() {
            "" => None,
            s => Some(s.parse::<Ipv4Net>().map_err(|_| {
                AgentError::InvalidArgument(format!(
                    "invalid subnet {s:?}: expected an IPv4 CIDR such as 10.10.0.0/16"
                ))
            })?),
        };
        let block_prefix = r
            .block_prefix
            .map(|b| {
                u8::try_from(b).map_err(|_| {
                    AgentError::InvalidArgument(format!("invalid block prefix /{b}: at most /30"))
                })
            })
            .transpose()?;
        let max_mtu = self.me.underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
        let mtu = r.mtu.unwrap_or(max_mtu);
        validate::mtu(mtu)?;
        if mtu > max_mtu {
            return Err(AgentError::InvalidArgument(format!(
                "MTU {mtu} is too large: this host's underlay MTU is {} and VXLAN needs {VXLAN_OVERHEAD} bytes, so at most {max_mtu}",
                self.me.underlay_mtu
            )));
        }
        let net = self
            .store
            .create_network(NewNetwork {
                name: r.name,
                driver,
                host,
                subnet,
                vni: r.vni,
                block_prefix,
                mtu,
                internal: r.internal,
            })
            .await?;
        info!(network = %net.name, id = %net.id, driver = %net.driver, subnet = %net.subnet, vni = net.vni, "network created");
        Ok(network_pb(&net))
    }

    async fn inspect(&self, name: &str) -> Result<pb::NetworkDetail, AgentError> {
        validate::network_name(name)?;
        let net = self.store.get_network(name).await?;
        let blocks = self.store.list_blocks(Some(name)).await?;
        let endpoints = self.store.list_endpoints(Some(name)).await?;
        Ok(pb::NetworkDetail {
            network: Some(network_pb(&net)),
            blocks: blocks.iter().map(block_pb).collect(),
            endpoints: endpoints.iter().map(|e| endpoint_pb(e, &net)).collect(),
        })
    }
    async fn connect(&self, r: pb::ConnectRequest) -> Result<pb::Endpoint, AgentError> {
        let ip = match r.ip.as_str() {
            "" => None,
            s => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|_| AgentError::InvalidArgument(format!("invalid IP address {s:?}")))?,
            ),
        };
        let container = match (r.runtime.as_str(), r.container_id.as_str()) {
            ("", "") => None,
            _ => Some(ContainerRef { runtime: r.runtime, id: r.container_id, name: r.container_name }),
        };
        let ifname = Some(r.ifname).filter(|i| !i.is_empty());
        let ports = r
            .publish
            .iter()
            .map(|s| s.parse::<PortMapping>().map_err(AgentError::InvalidArgument))
            .collect::<Result<Vec<_>, _>>()?;
        let (name, aliases) = (r.name, r.aliases);
        let plain = container.is_none();
        let attach =
            Attach { network: r.network, netns: r.netns, ip, ifname, container, name, aliases, ports };
        let (ep, net) = self.endpoints.connect(attach).await?;
        if plain
            && let Err(e) =
                crate::dns::resolv::connected(&ep.netns, net.gateway, &net.name.to_ascii_lowercase())
        {
            warn!(netns = %ep.netns, error = %e, "cannot write the namespace's resolv.conf");
        }
        Ok(endpoint_pb(&ep, &net))
    }

    async fn disconnect(&self, r: pb::DisconnectRequest) -> Result<pb::Endpoint, AgentError> {
        let which = if r.container_id.is_empty() {
            Detach::Netns(r.netns)
        } else {
            Detach::Container { id: r.container_id, ifname: r.ifname }
        };
        let (ep, net) = self.endpoints.disconnect(&r.network, &which).await?;
        if let Err(e) = crate::dns::resolv::disconnected(&ep.netns, &net.name.to_ascii_lowercase()) {
            warn!(netns = %ep.netns, error = %e, "cannot update the namespace's resolv.conf");
        }
        Ok(endpoint_pb(&ep, &net))
    }
}

fn network_pb(n: &NetworkRecord) -> pb::Network {
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.to_string(),
        host: n.owner().unwrap_or_default().to_string(),
        subnet: n.subnet.to_string(),
        gateway: n.gateway.to_string(),
        vni: n.vni,
        mtu: n.mtu,
        block_prefix: u32::from(n.block_prefix),
        internal: n.internal,
    }
}

fn block_pb(b: &BlockRecord) -> pb::Block {
    pb::Block { network: b.network.clone(), cidr: b.cidr.to_string(), host: b.host.clone() }
}

fn endpoint_pb(e: &EndpointRecord, net: &NetworkRecord) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.clone(),
        network: e.network.clone(),
        host: e.host.clone(),
        netns: e.netns.clone(),
        ip: e.ip.to_string(),
        mac: e.mac.to_string(),
        ifname: e.ifname.clone(),
        prefix_len: u32::from(net.subnet.prefix_len()),
        gateway: net.gateway.to_string(),
        runtime: e.container.as_ref().map(|c| c.runtime.clone()).unwrap_or_default(),
        container_id: e.container.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        container_name: e.container.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
        name: e.dns_name().unwrap_or_default(),
        aliases: e.aliases.clone(),
        ports: e.ports.iter().map(ToString::to_string).collect(),
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::agent_server::Agent for AgentService<D> {
    async fn create_network(&self, req: Request<pb::CreateNetworkRequest>) -> Reply<pb::Network> {
        Ok(Response::new(self.counted(self.create(req.into_inner()).await)?))
    }

    async fn list_networks(&self, _: Request<pb::ListNetworksRequest>) -> Reply<pb::ListNetworksResponse> {
        let nets = self.counted(self.store.list_networks().await.map_err(AgentError::from))?;
        Ok(Response::new(pb::ListNetworksResponse { networks: nets.iter().map(network_pb).collect() }))
    }

    async fn inspect_network(&self, req: Request<pb::InspectNetworkRequest>) -> Reply<pb::NetworkDetail> {
        Ok(Response::new(self.counted(self.inspect(&req.into_inner().name).await)?))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Reply<pb::RemoveNetworkResponse> {
        let name = req.into_inner().name;
        validate::network_name(&name).map_err(AgentError::from)?;
        let net = self.counted(self.store.remove_network(&name).await.map_err(AgentError::from))?;
        info!(network = %net.name, "network removed");
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn connect_endpoint(&self, req: Request<pb::ConnectRequest>) -> Reply<pb::Endpoint> {
        Ok(Response::new(self.counted(self.connect(req.into_inner()).await)?))
    }

    async fn disconnect_endpoint(
        &self,
        req: Request<pb::DisconnectRequest>,
    ) -> Reply<pb::DisconnectResponse> {
        let ep = self.counted(self.disconnect(req.into_inner()).await)?;
        Ok(Response::new(pb::DisconnectResponse { endpoint: Some(ep) }))
    }

    async fn list_hosts(&self, _: Request<pb::ListHostsRequest>) -> Reply<pb::ListHostsResponse> {
        let hosts = self.counted(self.store.list_hosts().await.map_err(AgentError::from))?;
        let hosts = hosts
            .iter()
            .map(|h| pb::Host {
                name: h.name.clone(),
                vtep: h.vtep.map(|v| v.to_string()).unwrap_or_default(),
                alive: h.alive,
                blocks: h.blocks.iter().map(block_pb).collect(),
            })
            .collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn remove_host(&self, req: Request<pb::RemoveHostRequest>) -> Reply<pb::RemoveHostResponse> {
        let name = req.into_inner().name;
        let removed = self.store.remove_host(&name).await.map_err(AgentError::from);
        let (blocks, endpoints) = self.counted(removed)?;
        info!(host = %name, blocks, endpoints, "host removed");
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        Ok(Response::new(pb::RemoveHostResponse { blocks: n(blocks), endpoints: n(endpoints) }))
    }

    async fn version(&self, _: Request<pb::VersionRequest>) -> Reply<pb::VersionResponse> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_name: self.me.node.clone(),
        }))
    }

    async fn doctor(&self, _: Request<pb::DoctorRequest>) -> Reply<pb::DoctorReport> {
        let report = self.counted(doctor::examine(&self.store, &self.dp, &self.me).await)?;
        Ok(Response::new(report_pb(report)))
    }
}

fn report_pb(r: doctor::Report) -> pb::DoctorReport {
    use pb::finding::Severity as S;
    let findings = r
        .findings
        .into_iter()
        .map(|f| pb::Finding {
            severity: match f.severity {
                Severity::Ok => S::Ok,
                Severity::Warning => S::Warning,
                Severity::Problem => S::Problem,
            }
            .into(),
            area: f.area.as_str().to_string(),
            message: f.message,
            fix: f.fix.unwrap_or_default(),
        })
        .collect();
    pb::DoctorReport { node_name: r.node, revision: r.revision, findings }
}
