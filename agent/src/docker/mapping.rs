//! What Docker's ids stand for, kept in etcd because dockerd never replays
//! `CreateNetwork` and the agent may restart between two calls:
//!
//! | key                                              | value                         |
//! |--------------------------------------------------|-------------------------------|
//! | `<p>/docker/<host>/networks/<docker-network-id>` | `{"network":"demo","created_at":1765000000}` |
//! | `<p>/docker/<host>/endpoints/<docker-endpoint-id>` | `{"network":"demo","ip":"10.128.0.2"}` |
//!
//! The design decision: per host, since each dockerd has its own ids for
//! its own view of a network; no lease, since the docker objects outlive an
//! agent's lease (dockerd's DeleteNetwork and DeleteEndpoint remove them;
//! with `--docker-sync`, `stale` and the janitor remove those of networks
//! and endpoints dockerd dropped without a call).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Plugin, locked};
use crate::dataplane::Dataplane;
use crate::error::AgentError;

/// How long one etcd call of the mapping may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkMapping {
    pub network: String,
    /// When it was written (unix seconds; 0 in mappings of older agents),
    /// so that `stale` never forgets one dockerd is still creating.
    #[serde(default)]
    pub created_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointMapping {
    pub network: String,
    pub ip: Ipv4Addr,
}

/// `<p>/docker/<host>/networks/`: the docker networks of `host`'s dockerd.
pub fn networks_prefix(prefix: &str, host: &str) -> String {
    format!("{prefix}/docker/{host}/networks/")
}

/// `<p>/docker/<host>/endpoints/`: the Docker endpoints on `host`.
pub fn endpoints_prefix(prefix: &str, host: &str) -> String {
    format!("{prefix}/docker/{host}/endpoints/")
}

impl<D: Dataplane> Plugin<D> {
    fn mapping_key(&self, kind: &str, id: &str) -> String {
        let (prefix, node) = (self.store.keys().prefix(), self.node());
        match kind {
            "networks" => format!("{}{id}", networks_prefix(prefix, node)),
            _ => format!("{}{id}", endpoints_prefix(prefix, node)),
        }
    }

    async fn etcd<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(ETCD_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AgentError::Unavailable(format!("{what} in etcd: {e}"))),
            Err(_) => {
                Err(AgentError::Unavailable(format!("{what} in etcd: no answer within {ETCD_TIMEOUT:?}")))
            }
        }
    }

    async fn put_mapping<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), AgentError> {
        let key = self.mapping_key(kind, id);
        let value = serde_json::to_vec(value).map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let mut c = self.store.client();
        self.etcd("writing a docker mapping", c.put(key, value, None)).await.map(drop)
    }

    async fn get_mapping<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, AgentError> {
        let key = self.mapping_key(kind, id);
        let mut c = self.store.client();
        let resp = self.etcd("reading a docker mapping", c.get(key.clone(), None)).await?;
        let Some(kv) = resp.kvs().first() else { return Ok(None) };
        match serde_json::from_slice(kv.value()) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(key, error = %e, "ignoring an unreadable docker mapping");
                Ok(None)
            }
        }
    }

    async fn delete_mapping(&self, kind: &str, id: &str) -> Result<(), AgentError> {
        let key = self.mapping_key(kind, id);
        let mut c = self.store.client();
        self.etcd("deleting a docker mapping", c.delete(key, None)).await.map(drop)
    }

    /// Remembers that docker network `id` is ovnet network `network`.
    pub(super) async fn map_network(&self, id: &str, network: &str) -> Result<(), AgentError> {
        let m = NetworkMapping { network: network.to_string(), created_at: ovnet_ipam_store::now_secs() };
        self.put_mapping("networks", id, &m).await?;
        locked(&self.networks).insert(id.to_string(), network.to_string());
        Ok(())
    }

    pub(super) async fn unmap_network(&self, id: &str) -> Result<(), AgentError> {
        self.delete_mapping("networks", id).await?;
        locked(&self.networks).remove(id);
        Ok(())
    }

    /// The ovnet network of docker network `id`, if it is one of ours.
    pub(super) async fn network_of(&self, id: &str) -> Result<Option<String>, AgentError> {
        if let Some(name) = locked(&self.networks).get(id) {
            return Ok(Some(name.clone()));
        }
        let found: Option<NetworkMapping> = self.get_mapping("networks", id).await?;
        if let Some(m) = &found {
            locked(&self.networks).insert(id.to_string(), m.network.clone());
        }
        Ok(found.map(|m| m.network))
    }

    pub(super) async fn map_endpoint(&self, id: &str, m: EndpointMapping) -> Result<(), AgentError> {
        self.put_mapping("endpoints", id, &m).await?;
        locked(&self.docker_endpoints).insert(id.to_string(), m);
        Ok(())
    }

    pub(super) async fn unmap_endpoint(&self, id: &str) -> Result<(), AgentError> {
        self.delete_mapping("endpoints", id).await?;
        locked(&self.docker_endpoints).remove(id);
        Ok(())
    }

    /// The address of docker endpoint `id`, if it is one of ours.
    pub(super) async fn endpoint_of(&self, id: &str) -> Result<Option<EndpointMapping>, AgentError> {
        if let Some(m) = locked(&self.docker_endpoints).get(id) {
            return Ok(Some(m.clone()));
        }
        let found: Option<EndpointMapping> = self.get_mapping("endpoints", id).await?;
        if let Some(m) = &found {
            locked(&self.docker_endpoints).insert(id.to_string(), m.clone());
        }
        Ok(found)
    }
}
