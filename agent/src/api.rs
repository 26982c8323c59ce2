//! The gRPC service `ovctl` talks to.
//!
//! Every request is validated before anything is written: a bad value is an
//! `InvalidArgument` naming it, and etcd and the kernel stay unchanged. Errors
//! become gRPC statuses in one place (`AgentError` -> `Status`).

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{
    BlockRecord, EndpointOffer, EndpointRecord, EtcdStore, Mac, NetworkRecord, NewEndpoint, NewNetwork,
    validate,
};
use ovnet_proto as pb;
use tokio::sync::{Mutex, watch};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::dataplane::{AttachSpec, Dataplane, DataplaneError};
use crate::desired::HostContext;
use crate::doctor::{self, Severity};
use crate::error::AgentError;
use crate::leaks::Busy;
use crate::metrics::Metrics;
use crate::model::{VXLAN_OVERHEAD, bridge_name, veth_host_name, veth_temp_name};
use crate::netns::{is_own_netns, netns_path};
use crate::reconcile::ReadyRx;

/// How long `connect` waits for this host to build a just-created network.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AgentService<D: Dataplane> {
    store: EtcdStore,
    dp: D,
    me: HostContext,
    ready: ReadyRx,
    metrics: Metrics,
    /// Serialises connect/disconnect on this host (interface names in a namespace).
    plumbing: Mutex<()>,
    /// Veths being plumbed, which the reconcile loop must not take for leaks.
    busy: Busy,
    /// True once this host is registered (its records then go on its reservation).
    registered: watch::Receiver<bool>,
}

type Reply<T> = Result<Response<T>, Status>;

impl<D: Dataplane> AgentService<D> {
    pub fn new(store: EtcdStore, dp: D, me: HostContext, ready: ReadyRx, metrics: Metrics) -> Self {
        let registered = watch::channel(true).1;
        AgentService {
            store,
            dp,
            me,
            ready,
            metrics,
            plumbing: Mutex::new(()),
            busy: Busy::default(),
            registered,
        }
    }

    /// Makes `connect` wait until this host is registered.
    pub fn with_registered(mut self, registered: watch::Receiver<bool>) -> Self {
        self.registered = registered;
        self
    }

    /// Shares the set of veths being plumbed with the reconcile loop.
    pub fn with_busy(mut self, busy: Busy) -> Self {
        self.busy = busy;
        self
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
            .create_network(NewNetwork { name: r.name, driver, subnet, vni: r.vni, block_prefix, mtu })
            .await?;
        info!(network = %net.name, id = %net.id, subnet = %net.subnet, vni = net.vni, "network created");
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

    /// A connect is one visit to the container's namespace and one etcd
    /// read, side by side (its links; the address, refused when the namespace
    /// is already connected here), then the veth is made and raised while
    /// etcd writes the endpoint, then given its address. No extra read of the
    /// network when this host has built it already. Answers once the veth
    /// forwards. The container end has no address until etcd holds the
    /// endpoint; whichever half fails, the other is undone (an agent killed
    /// in between leaves a veth without an endpoint, which `ovctl doctor`
    /// reports, as it reported an endpoint without a veth before).
    async fn connect(&self, r: pb::ConnectRequest) -> Result<pb::Endpoint, AgentError> {
        validate::network_name(&r.network)?;
        container_netns(&r.netns)?;
        let ip = match r.ip.as_str() {
            "" => None,
            s => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|_| AgentError::InvalidArgument(format!("invalid IP address {s:?}")))?,
            ),
        };
        if !self.ready.borrow().contains(&r.network) {
            // Not built here (yet): a clear "not found" before waiting for it.
            self.store.get_network(&r.network).await?;
        }
        self.wait_registered().await?;
        let _plumbing = self.plumbing.lock().await;
        let same = netns_matcher(&r.netns);
        let id = new_id();
        let _busy = self.busy.hold(&[veth_host_name(&id), veth_temp_name(&id)]);
        let (ns, req, offer) = self.prepare(&r, id, ip, &same).await?;
        self.wait_ready(&r.network).await?;
        let planned = self.attach_spec(&req.host_ifname, &req.ifname, &offer.network, offer.ip);
        let (made, claimed) =
            tokio::join!(self.dp.create_veth(&ns, &planned), self.store.claim_endpoint(offer, req, &same));
        let (ep, net) = match (made, claimed) {
            (Ok(()), Ok(claimed)) => claimed,
            (Ok(()), Err(e)) => {
                return Err(self.undo_connect(Some(&planned.host_ifname), None, e.into()).await);
            }
            (Err(e), Ok((ep, net))) => {
                return Err(self.undo_connect(None, Some((&net, ep.ip)), e.into()).await);
            }
            (Err(made), Err(e)) => {
                warn!(error = %made, "making the veth of a failed connect failed too");
                return Err(e.into());
            }
        };
        let spec = self.attach_spec(&ep.host_ifname, &ep.ifname, &net, ep.ip);
        if let Err(e) = self.finish_veth(&ns, &planned, &spec).await {
            return Err(self.undo_connect(Some(&spec.host_ifname), Some((&net, ep.ip)), e.into()).await);
        }
        info!(network = %net.name, netns = %r.netns, ip = %ep.ip, ifname = %ep.ifname, "endpoint connected");
        Ok(endpoint_pb(&ep, &net))
    }

    /// Enters the namespace (its links give the interface name) while etcd
    /// offers an address; nothing is written yet.
    async fn prepare(
        &self,
        r: &pb::ConnectRequest,
        id: String,
        ip: Option<Ipv4Addr>,
        same_netns: &(impl Fn(&str) -> bool + Sync),
    ) -> Result<(D::Netns, NewEndpoint, EndpointOffer), AgentError> {
        let mut req = NewEndpoint {
            id: id.clone(),
            network: r.network.clone(),
            host: self.me.node.clone(),
            netns: r.netns.clone(),
            ifname: String::new(),
            host_ifname: veth_host_name(&id),
            ip,
        };
        let visit = async {
            let ns = self.dp.open_netns(netns_path(&r.netns)).await?;
            let links = self.dp.netns_links(&ns).await?;
            Ok::<_, DataplaneError>((ns, links))
        };
        let (visit, offer) = tokio::join!(visit, self.store.offer_endpoint(&req, same_netns));
        let (ns, links) = visit?;
        let offer = offer?;
        req.ifname = next_ifname(&links);
        Ok((ns, req, offer))
    }

    /// Gives the pair made as `planned` its address. When the claim ended
    /// with another address (it lost a race and picked again), the pair is
    /// made again first, since its MAC follows the address.
    async fn finish_veth(
        &self,
        ns: &D::Netns,
        planned: &AttachSpec,
        spec: &AttachSpec,
    ) -> Result<(), DataplaneError> {
        if planned != spec {
            self.dp.detach(planned.host_ifname.clone()).await?;
            self.dp.create_veth(ns, spec).await?;
        }
        self.dp.configure_veth(ns, spec).await
    }

    /// How to plumb an endpoint with address `ip` of `net`.
    fn attach_spec(&self, host_ifname: &str, ifname: &str, net: &NetworkRecord, ip: Ipv4Addr) -> AttachSpec {
        AttachSpec {
            host_ifname: host_ifname.to_string(),
            ifname: ifname.to_string(),
            bridge: bridge_name(net.vni),
            mac: Mac::endpoint(ip),
            addr: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
            gateway: net.gateway,
            mtu: self.me.mtu_for(net),
        }
    }

    /// Undoes the half of a failed connect that succeeded (the veth, the
    /// address) and returns `err`; what cannot be undone is logged.
    async fn undo_connect(
        &self,
        veth: Option<&str>,
        address: Option<(&NetworkRecord, Ipv4Addr)>,
        err: AgentError,
    ) -> AgentError {
        if let Some(host_ifname) = veth
            && let Err(undo) = self.dp.detach(host_ifname.to_string()).await
        {
            warn!(error = %undo, "could not remove veth {host_ifname} of a failed connect");
        }
        if let Some((net, ip)) = address
            && let Err(undo) = self.store.release_endpoint(&net.name, ip).await
        {
            warn!(error = %undo, %ip, "could not release the address of a failed connect");
        }
        err
    }

    /// Deletes the veth before it frees the address and answers, on purpose:
    /// the deletion is most of a disconnect (about 20 ms of RCU grace periods
    /// in the kernel), but answering first would hand the address out again
    /// while the old container still holds it, leave `ethN` inside the
    /// namespace after `disconnect` returned (a reconnect would get `eth1`),
    /// and leave a veth behind if the agent stopped in between.
    async fn disconnect(&self, r: pb::DisconnectRequest) -> Result<pb::Endpoint, AgentError> {
        validate::network_name(&r.network)?;
        let _plumbing = self.plumbing.lock().await;
        let (net, endpoints) = self.store.network_endpoints(&r.network).await?;
        let same = netns_matcher(&r.netns);
        let matching = |e: &&EndpointRecord| same(&e.netns);
        let mine = endpoints.iter().filter(|e| e.host == self.me.node).find(matching);
        let Some(ep) = mine else {
            if let Some(other) = endpoints.iter().find(matching) {
                return Err(AgentError::FailedPrecondition(format!(
                    "namespace {} is connected to network {} on host {}; disconnect it there",
                    r.netns, net.name, other.host
                )));
            }
            return Err(AgentError::NotFound(format!(
                "namespace {} is not connected to network {} on host {}",
                r.netns, net.name, self.me.node
            )));
        };
        let _busy = self.busy.hold(std::slice::from_ref(&ep.host_ifname));
        self.dp.detach(ep.host_ifname.clone()).await?;
        let ep = self.store.release_endpoint(&net.name, ep.ip).await?;
        info!(network = %net.name, netns = %r.netns, ip = %ep.ip, "endpoint disconnected");
        Ok(endpoint_pb(&ep, &net))
    }

    async fn wait_registered(&self) -> Result<(), AgentError> {
        let mut rx = self.registered.clone();
        match tokio::time::timeout(READY_TIMEOUT, rx.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AgentError::Unavailable(format!(
                "host {} is not registered in etcd yet (is etcd reachable?)",
                self.me.node
            ))),
        }
    }

    async fn wait_ready(&self, network: &str) -> Result<(), AgentError> {
        let mut rx = self.ready.clone();
        match tokio::time::timeout(READY_TIMEOUT, rx.wait_for(|s| s.contains(network))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AgentError::Unavailable(format!(
                "the datapath of network {network} is not ready on host {} (is etcd reachable?)",
                self.me.node
            ))),
        }
    }
}

/// Refuses what cannot name a container's namespace before anything is
/// entered: nothing, a relative path (the agent's working directory is not
/// the caller's), or the host's own namespace (`/proc/self/ns/net` is the
/// agent's), whose links a connect would change.
pub fn container_netns(netns: &str) -> Result<(), AgentError> {
    let invalid = |why: String| Err(AgentError::InvalidArgument(why));
    if netns.is_empty() {
        return invalid(
            "the namespace is empty: give an `ip netns` name or a path such as /proc/PID/ns/net".into(),
        );
    }
    let path = netns_path(netns);
    if !path.is_absolute() {
        return invalid(format!("namespace path {netns:?} must be an absolute path (or an `ip netns` name)"));
    }
    if is_own_netns(&path) {
        return invalid(format!("namespace {netns} is the host's own network namespace, not a container's"));
    }
    Ok(())
}

/// True when two netns references name the same namespace: the same path,
/// or the same namespace inode (a name and /proc/PID/ns/net of one process).
pub fn same_netns(a: &str, b: &str) -> bool {
    netns_matcher(a)(b)
}

/// `same_netns(netns, _)` with `netns` looked up once, for checking many.
pub fn netns_matcher(netns: &str) -> impl Fn(&str) -> bool + Send + Sync + use<> {
    let path = netns_path(netns);
    let id = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
    move |other: &str| {
        let other = netns_path(other);
        if other == path {
            return true;
        }
        let other_id = || std::fs::metadata(&other).ok().map(|m| (m.dev(), m.ino()));
        id.is_some() && id == other_id()
    }
}

/// `eth0`, or the lowest `ethN` not yet present.
pub fn next_ifname(existing: &[String]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| !existing.iter().any(|e| e == name))
        .unwrap_or_else(|| "eth0".to_string())
}

fn new_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

fn network_pb(n: &NetworkRecord) -> pb::Network {
    pb::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        driver: n.driver.clone(),
        subnet: n.subnet.to_string(),
        gateway: n.gateway.to_string(),
        vni: n.vni,
        mtu: n.mtu,
        block_prefix: u32::from(n.block_prefix),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_lowest_free_ethn() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(next_ifname(&s(&["lo"])), "eth0");
        assert_eq!(next_ifname(&s(&["lo", "eth0"])), "eth1");
        assert_eq!(next_ifname(&s(&["lo", "eth1"])), "eth0");
        assert_eq!(next_ifname(&s(&["eth0", "eth1", "eth2"])), "eth3");
    }

    #[test]
    fn same_netns_by_name_and_path() {
        assert!(same_netns("c1", "c1"));
        assert!(same_netns("c1", "/run/netns/c1"));
        assert!(!same_netns("c1", "c2"));
        assert!(same_netns("/proc/self/ns/net", "/proc/self/ns/net"));
    }
}
