//! An endpoint in the steps a runtime that owns the sandbox takes (Docker):
//! an address first (`reserve`), then the veth with both ends on the host
//! (`plumb_here`), which the runtime moves into its sandbox itself, then
//! where it went (`settle`); undone by `unplumb` and `release_reserved`.
//!
//! The design decision: the same records and veth names as a `connect`, so
//! every other part of the agent (datapath, leaks, doctor, `ovctl`) sees a
//! Docker endpoint as any other; a reserved endpoint has no namespace
//! (`netns` empty) until the runtime says where it went.

use std::net::Ipv4Addr;

use ovnet_ipam_store::{ContainerRef, EndpointRecord, NetworkRecord, NewEndpoint, validate};
use tracing::info;

use super::{Endpoints, new_id};
use crate::dataplane::{AttachSpec, Dataplane};
use crate::error::AgentError;
use crate::model::{veth_host_name, veth_temp_name};

impl<D: Dataplane> Endpoints<D> {
    /// Writes an endpoint of this host at `ip` (or the next free address of
    /// this host's block) with no namespace and no veth yet.
    pub async fn reserve(
        &self,
        network: &str,
        ip: Option<Ipv4Addr>,
        container: ContainerRef,
    ) -> Result<(EndpointRecord, NetworkRecord), AgentError> {
        validate::network_name(network)?;
        self.wait_registered().await?;
        let id = new_id();
        let req = NewEndpoint {
            id: id.clone(),
            network: network.to_string(),
            host: self.me.node.clone(),
            netns: String::new(),
            ifname: String::new(),
            host_ifname: veth_host_name(&id),
            ip,
            container: Some(container),
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        };
        let nobody = |_: &str| false;
        // As connect: the offer from the watch cache when it can be trusted
        // (the claim's transaction still checks it against etcd).
        let cached = match self.cached().await {
            Some(snap) => self.store.offer_endpoint_cached(&snap.state, &req, nobody)?,
            None => None,
        };
        let offer = match cached {
            Some(offer) => offer,
            None => self.store.offer_endpoint(&req, nobody).await?,
        };
        let (ep, net) = self.store.claim_endpoint(offer, req, nobody).await?;
        self.wrote(&net.name, ep.ip, true);
        info!(network = %net.name, ip = %ep.ip, "address reserved");
        Ok((ep, net))
    }

    /// True when this host has built `network` (its bridge, with the route
    /// into the subnet, exists).
    pub fn is_built(&self, network: &str) -> bool {
        self.ready.borrow().contains(network)
    }

    /// This host's endpoint at `ip` of `network`, if there is one.
    pub async fn local_endpoint(
        &self,
        network: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<(EndpointRecord, NetworkRecord)>, AgentError> {
        validate::network_name(network)?;
        let (net, endpoints) = self.endpoints_of(network).await?;
        let ep = endpoints.into_iter().find(|e| e.ip == ip && e.host == self.me.node);
        Ok(ep.map(|ep| (ep, net)))
    }

    /// Makes the veth of the reserved endpoint `ep`: the host end a port of
    /// the bridge, the container end (`ovtp...`, the endpoint's MAC and MTU)
    /// left on the host for the runtime to move. Returns how it was made.
    pub async fn plumb_here(
        &self,
        ep: &EndpointRecord,
        net: &NetworkRecord,
    ) -> Result<AttachSpec, AgentError> {
        self.wait_ready(&net.name).await?;
        let temp = veth_temp_name(&ep.id);
        let _busy = self.busy.hold(&[ep.host_ifname.clone(), temp.clone()]);
        let spec = self.attach_spec(&ep.host_ifname, &temp, net, ep.ip);
        self.dp.create_veth_here(&spec).await?;
        Ok(spec)
    }

    /// Records in `ep`'s record that it now lives in namespace `netns` (a
    /// path, e.g. Docker's SandboxKey); nothing when the record is gone or
    /// is another endpoint's now.
    pub async fn settle(&self, ep: &EndpointRecord, netns: &str) -> Result<(), AgentError> {
        let netns = netns.to_string();
        self.store.update_endpoint(&ep.network, ep.ip, &ep.id, |e| e.netns = netns.clone()).await?;
        Ok(())
    }

    /// Deletes `ep`'s veth (wherever its container end is); the address
    /// stays reserved.
    pub async fn unplumb(&self, ep: &EndpointRecord) -> Result<(), AgentError> {
        let _busy = self.busy.hold(std::slice::from_ref(&ep.host_ifname));
        self.dp.detach(ep.host_ifname.clone()).await?;
        Ok(())
    }

    /// Frees this host's endpoint at `ip` of `network`: its veth if any,
    /// then its address. `None` when there is none (any more).
    pub async fn release_reserved(
        &self,
        network: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<EndpointRecord>, AgentError> {
        let Some((ep, _)) = self.local_endpoint(network, ip).await? else {
            return Ok(None);
        };
        self.unplumb(&ep).await?;
        if !self.store.release_endpoint_if(network, ip, &ep.id).await? {
            return Ok(None);
        }
        self.wrote(network, ip, false);
        info!(network, %ip, "address released");
        Ok(Some(ep))
    }
}
