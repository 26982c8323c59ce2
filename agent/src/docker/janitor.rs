//! Keeps this host's Docker endpoints in etcd equal to what dockerd has:
//! releases (veth, then address) the endpoints Docker no longer knows, and
//! names each endpoint's container, which the plugin cannot (Docker's
//! plugin calls carry neither the container's id nor its name).
//!
//! Docker forgets endpoints without telling the driver: at start it
//! force-deletes the stale ones of containers that died with it, and a
//! container removed while the agent was down never reaches the plugin.
//! The design decision: [`judge`] is pure and errs on the side of keeping
//! an endpoint. A record matches a Docker endpoint by address, endpoint or
//! container id, or sandbox key, and a record younger than [`GRACE_SECS`]
//! is never released (Docker lists an endpoint only once the container's
//! network is set up, after the plugin wrote the record). Releases take
//! the plugin's path (`Endpoints::unplumb`, then the address), so the veth
//! goes before the address.

use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use ovnet_ipam_store::{ClusterState, ContainerRef, EndpointRecord, EtcdStore, now_secs};
use tracing::{info, warn};

use super::engine::{DockerEndpoint, Engine};
use super::mapping::{EndpointMapping, endpoints_prefix};
use crate::dataplane::Dataplane;
use crate::endpoint::Endpoints;
use crate::error::AgentError;

/// The runtime name in the records of Docker endpoints.
pub const RUNTIME: &str = "docker";
/// How old (seconds) a record must be before Docker's not knowing it counts.
pub const GRACE_SECS: u64 = 10;

/// What one pass changes in etcd (and the kernel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Endpoints Docker no longer has.
    pub release: Vec<EndpointRecord>,
    /// Endpoints whose container reference should read so.
    pub name: Vec<(EndpointRecord, ContainerRef, Vec<String>)>,
    /// When (unix seconds) the youngest record Docker does not list yet
    /// comes of age, for a pass then.
    pub recheck_at: Option<u64>,
}

/// True for a record of a Docker endpoint on `host`.
pub fn is_docker_endpoint_of(r: &EndpointRecord, host: &str) -> bool {
    r.host == host && r.container.as_ref().is_some_and(|c| c.runtime == RUNTIME)
}

/// True when the record stands for that Docker endpoint.
fn same(r: &EndpointRecord, ep: &DockerEndpoint) -> bool {
    let by_address = ep.ovnet == r.network && ep.ip == Some(r.ip);
    let by_id = r
        .container
        .as_ref()
        .is_some_and(|c| (!ep.endpoint_id.is_empty() && c.id == ep.endpoint_id) || c.id == ep.container_id);
    let by_sandbox = !ep.sandbox_key.is_empty() && ep.sandbox_key == r.netns;
    by_address || ((by_id || by_sandbox) && (ep.ovnet == r.network || ep.ip == Some(r.ip)))
}

/// Compares this host's Docker endpoint records (`mine`) with the endpoints
/// dockerd lists, at `now` (unix seconds).
pub fn judge(mine: &[&EndpointRecord], docker: &[DockerEndpoint], now: u64) -> Verdict {
    let mut v = Verdict::default();
    for r in mine {
        match docker.iter().find(|ep| same(r, ep)) {
            Some(ep) => {
                let want = ContainerRef {
                    runtime: RUNTIME.into(),
                    id: ep.container_id.clone(),
                    name: ep.container_name.clone(),
                };
                let renamed = r.container.as_ref() != Some(&want) || r.aliases != ep.aliases;
                if !ep.container_id.is_empty() && renamed {
                    v.name.push(((*r).clone(), want, ep.aliases.clone()));
                }
            }
            None if now >= r.created_at.saturating_add(GRACE_SECS) => v.release.push((*r).clone()),
            None => {
                let due = r.created_at.saturating_add(GRACE_SECS);
                v.recheck_at = Some(v.recheck_at.map_or(due, |t| t.min(due)));
            }
        }
    }
    v
}

/// Carries out the janitor's verdicts through the endpoint service.
pub struct Janitor<D: Dataplane> {
    pub endpoints: Arc<Endpoints<D>>,
    pub store: EtcdStore,
}

impl<D: Dataplane> Janitor<D> {
    fn host(&self) -> &str {
        &self.endpoints.host().node
    }

    /// One comparison of etcd's view (`state`) with dockerd's, and its
    /// consequences; returns how soon to look again for records too young
    /// to judge. Only Docker errors end the pass (dockerd went away); etcd
    /// and kernel failures are logged and retried on the next pass.
    pub async fn pass(&self, engine: &Engine, state: &ClusterState) -> Result<Option<Duration>, DockerError> {
        let mine: Vec<&EndpointRecord> =
            state.all_endpoints().filter(|r| is_docker_endpoint_of(r, self.host())).collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let docker = engine.endpoints().await?;
        let now = now_secs();
        let v = judge(&mine, &docker, now);
        let recheck = v.recheck_at.map(|t| Duration::from_secs(t.saturating_sub(now).max(1)));
        for r in &v.release {
            self.release(r).await;
        }
        for (r, c, aliases) in v.name {
            let named = c.clone();
            let update = |e: &mut EndpointRecord| {
                e.container = Some(named.clone());
                e.aliases = aliases.clone();
            };
            match self.store.update_endpoint(&r.network, r.ip, &r.id, update).await {
                Ok(Some(_)) => {
                    info!(network = %r.network, ip = %r.ip, container = %c.name, id = %c.id, "endpoint's container named")
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(network = %r.network, ip = %r.ip, error = %e, "naming an endpoint's container failed; will retry")
                }
            }
        }
        Ok(recheck)
    }

    /// Frees an endpoint Docker no longer has, as the plugin's
    /// ReleaseAddress would (veth, then address), while it is still the
    /// same endpoint; its EndpointID mapping goes first, since Docker will
    /// never call DeleteEndpoint for it.
    async fn release(&self, r: &EndpointRecord) {
        match self.try_release(r).await {
            Ok(true) => {
                info!(network = %r.network, ip = %r.ip, "released an endpoint that dockerd no longer has")
            }
            Ok(false) | Err(AgentError::Store(ovnet_ipam_store::Error::NetworkNotFound(_))) => {}
            Err(e) => {
                warn!(network = %r.network, ip = %r.ip, error = %e, "releasing an endpoint dockerd no longer has failed; will retry")
            }
        }
    }

    async fn try_release(&self, r: &EndpointRecord) -> Result<bool, AgentError> {
        let Some((ep, _)) = self.endpoints.local_endpoint(&r.network, r.ip).await? else {
            return Ok(false);
        };
        if ep.id != r.id {
            return Ok(false);
        }
        self.forget_mappings(r).await?;
        self.endpoints.unplumb(&ep).await?;
        Ok(self.store.release_endpoint_if(&r.network, r.ip, &r.id).await?)
    }

    /// Deletes the plugin's EndpointID mappings (`<p>/docker/<host>/endpoints/`)
    /// that point at `r`'s address.
    async fn forget_mappings(&self, r: &EndpointRecord) -> Result<(), AgentError> {
        let prefix = endpoints_prefix(self.store.keys().prefix(), self.host());
        let unavailable =
            |e: etcd_client::Error| AgentError::Unavailable(format!("docker mappings in etcd: {e}"));
        let mut c = self.store.client();
        let opts = etcd_client::GetOptions::new().with_prefix();
        let resp = c.get(prefix, Some(opts)).await.map_err(unavailable)?;
        for kv in resp.kvs() {
            let Ok(m) = serde_json::from_slice::<EndpointMapping>(kv.value()) else { continue };
            if m.network == r.network && m.ip == r.ip {
                c.delete(kv.key(), None).await.map_err(unavailable)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(network: &str, ip: &str, id: &str, created_at: u64) -> EndpointRecord {
        EndpointRecord {
            v: 1,
            id: format!("rec-{ip}"),
            network: network.into(),
            host: "h1".into(),
            netns: format!("/var/run/docker/netns/{id}"),
            ip: ip.parse().unwrap(),
            mac: ovnet_ipam_store::Mac::endpoint(ip.parse().unwrap()),
            ifname: "eth0".into(),
            host_ifname: "ovve1".into(),
            created_at,
            container: Some(ContainerRef { runtime: RUNTIME.into(), id: id.into(), name: String::new() }),
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        }
    }

    fn endpoint(ovnet: &str, ip: &str, endpoint_id: &str, container: &str) -> DockerEndpoint {
        DockerEndpoint {
            network_id: format!("{ovnet}-did"),
            ovnet: ovnet.into(),
            endpoint_id: endpoint_id.into(),
            container_id: container.into(),
            container_name: format!("{container}-name"),
            ip: ip.parse().ok(),
            sandbox_key: String::new(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn releases_what_docker_lost_and_names_what_it_has() {
        let kept = record("demo", "10.1.0.2", "ep1", 100);
        let lost = record("demo", "10.1.0.3", "ep2", 100);
        let docker = [endpoint("demo", "10.1.0.2", "ep1", "c1")];
        let v = judge(&[&kept, &lost], &docker, 1000);
        assert_eq!(v.release, vec![lost]);
        assert_eq!(v.name.len(), 1);
        assert_eq!(
            v.name[0].1,
            ContainerRef { runtime: "docker".into(), id: "c1".into(), name: "c1-name".into() }
        );
    }

    #[test]
    fn a_named_endpoint_needs_nothing() {
        let mut r = record("demo", "10.1.0.2", "c1", 100);
        r.container = Some(ContainerRef { runtime: RUNTIME.into(), id: "c1".into(), name: "c1-name".into() });
        let v = judge(&[&r], &[endpoint("demo", "10.1.0.2", "ep1", "c1")], 1000);
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn a_young_record_is_never_released() {
        let r = record("demo", "10.1.0.2", "ep1", 995);
        assert_eq!(judge(&[&r], &[], 1000), Verdict { recheck_at: Some(1005), ..Verdict::default() });
        assert_eq!(judge(&[&r], &[], 1005).release.len(), 1);
    }

    #[test]
    fn the_same_address_on_another_network_is_another_endpoint() {
        let r = record("demo", "10.1.0.2", "ep1", 100);
        let v = judge(&[&r], &[endpoint("other", "10.1.0.2", "ep9", "c9")], 1000);
        assert_eq!(v.release.len(), 1);
    }

    #[test]
    fn matches_by_endpoint_id_or_sandbox_when_the_address_is_unknown() {
        let r = record("demo", "10.1.0.2", "ep1", 100);
        let by_id = endpoint("demo", "", "ep1", "c1");
        assert!(judge(&[&r], &[by_id], 1000).release.is_empty());
        let mut by_sandbox = endpoint("demo", "", "epX", "c1");
        by_sandbox.sandbox_key = r.netns.clone();
        assert!(judge(&[&r], &[by_sandbox], 1000).release.is_empty());
    }

    #[test]
    fn only_this_hosts_docker_records_count() {
        let mine = record("demo", "10.1.0.2", "ep1", 100);
        assert!(is_docker_endpoint_of(&mine, "h1"));
        assert!(!is_docker_endpoint_of(&mine, "h2"));
        let mut cni = mine.clone();
        cni.container.as_mut().unwrap().runtime = "cni".into();
        assert!(!is_docker_endpoint_of(&cni, "h1"));
        let mut plain = mine;
        plain.container = None;
        assert!(!is_docker_endpoint_of(&plain, "h1"));
    }
}
