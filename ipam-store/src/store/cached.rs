//! Endpoint offers made from the caller's copy of the cluster (the agent's
//! watch cache) instead of a read of the network's every endpoint.
//!
//! A connect then costs etcd one transaction whatever the network's size.
//! The design decision: the copy may lag, so nothing in it is trusted for
//! correctness. The claim compares the network's and block's values (the
//! copy has no revisions) and the endpoint key's absence; if anything
//! differs, the claim falls back to a fresh read of etcd and picks again.
//! Whether the namespace is already connected is asked of the copy, so the
//! caller must make sure the copy holds its own earlier writes.

use std::collections::{BTreeMap, BTreeSet};

use super::endpoints::{EndpointOffer, Guard, NetworkView, NewEndpoint};
use super::{EtcdStore, roll, spread};
use crate::error::Error;
use crate::mac::Mac;
use crate::state::ClusterState;
use crate::validate;

impl EtcdStore {
    /// `offer_endpoint`, from `state` instead of etcd: no request. `None`
    /// when `state` does not know the network (ask etcd instead).
    pub fn offer_endpoint_cached(
        &self,
        state: &ClusterState,
        req: &NewEndpoint,
        same_netns: impl Fn(&str) -> bool,
    ) -> Result<Option<EndpointOffer>, Error> {
        validate::network_name(&req.network)?;
        validate::host_name(&req.host)?;
        let Some(network) = state.networks.get(&req.network) else {
            return Ok(None);
        };
        let here = state.endpoints_of(&req.network).find(|e| e.host == req.host && same_netns(&e.netns));
        if let Some(e) = here {
            let (netns, network, ip) = (req.netns.clone(), req.network.clone(), e.ip);
            return Err(Error::NetnsConnected { netns, network, ip });
        }
        super::endpoints::dns_names(req)?;
        super::endpoints::names_free(state.endpoints_of(&req.network), req)?;
        let blocks: BTreeMap<_, _> = state
            .blocks
            .get(&req.network)
            .map(|m| m.values().map(|b| (b.cidr, (b.host.clone(), 0))).collect())
            .unwrap_or_default();
        let used: BTreeSet<_> =
            state.endpoint_map(&req.network).map(|m| m.keys().copied().collect()).unwrap_or_default();
        let view = NetworkView { network: network.clone(), network_mod_revision: 0, blocks, used };
        let (ip, claim) = view.plan_endpoint(&req.host, req.ip, spread(0), roll)?;
        Ok(Some(EndpointOffer {
            network: view.network,
            ip,
            mac: Mac::endpoint(ip),
            network_mod_revision: 0,
            claim,
            guard: Guard::Values,
        }))
    }
}
