//! Forgets the NetworkID mappings (`<p>/docker/<host>/networks/<id>`) of
//! docker networks that dockerd no longer has: removed while the agent was
//! down, or lost with dockerd's data root. Dockerd calls DeleteNetwork only
//! on a plugin that is up, so without this they would stay in etcd forever.
//!
//! The design decision: dockerd calls CreateNetwork *before* it lists the
//! network, so a mapping younger than [`GRACE_SECS`] is never judged (as the
//! janitor does for endpoints); mappings written before they carried a time
//! count as old.

use std::collections::HashSet;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use ovnet_ipam_store::now_secs;
use tracing::{info, warn};

use super::engine::DockerNetwork;
use super::janitor::GRACE_SECS;
use super::mapping::{NetworkMapping, networks_prefix};
use crate::error::AgentError;

/// One stored mapping: its docker network id, when it was written, and its
/// etcd mod revision (the delete is guarded by it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMapping {
    pub id: String,
    pub created_at: u64,
    pub mod_revision: i64,
}

/// The mappings to forget: old enough, and of no docker network dockerd has.
pub fn stale<'a>(
    mappings: &'a [StoredMapping],
    docker: &[DockerNetwork],
    now: u64,
) -> Vec<&'a StoredMapping> {
    let known: HashSet<&str> = docker.iter().map(|d| d.id.as_str()).collect();
    mappings
        .iter()
        .filter(|m| !known.contains(m.id.as_str()) && now >= m.created_at.saturating_add(GRACE_SECS))
        .collect()
}

/// Reads `host`'s network mappings and deletes the stale ones; returns how
/// many went. A mapping changed meanwhile is left for the next pass.
pub async fn forget(
    store: &ovnet_ipam_store::EtcdStore,
    host: &str,
    docker: &[DockerNetwork],
) -> Result<usize, AgentError> {
    let unavailable =
        |e: etcd_client::Error| AgentError::Unavailable(format!("docker mappings in etcd: {e}"));
    let prefix = networks_prefix(store.keys().prefix(), host);
    let mut c = store.client();
    let resp = c.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await.map_err(unavailable)?;
    let mappings: Vec<StoredMapping> = resp
        .kvs()
        .iter()
        .map(|kv| {
            let id = String::from_utf8_lossy(kv.key()).trim_start_matches(&prefix).to_string();
            let created_at = match serde_json::from_slice::<NetworkMapping>(kv.value()) {
                Ok(m) => m.created_at,
                Err(e) => {
                    warn!(id, error = %e, "an unreadable docker network mapping counts as old");
                    0
                }
            };
            StoredMapping { id, created_at, mod_revision: kv.mod_revision() }
        })
        .collect();
    let mut forgotten = 0;
    for m in stale(&mappings, docker, now_secs()) {
        let key = format!("{prefix}{}", m.id);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, m.mod_revision)])
            .and_then([TxnOp::delete(key, None)]);
        if c.txn(txn).await.map_err(unavailable)?.succeeded() {
            info!(docker_id = %m.id, "forgot the mapping of a docker network dockerd no longer has");
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(id: &str, created_at: u64) -> StoredMapping {
        StoredMapping { id: id.into(), created_at, mod_revision: 1 }
    }

    fn network(id: &str) -> DockerNetwork {
        DockerNetwork { id: id.into(), name: format!("n-{id}"), driver: "ovnet".into(), ovnet: String::new() }
    }

    #[test]
    fn forgets_old_mappings_of_networks_dockerd_lacks() {
        let mappings = [mapping("gone", 100), mapping("here", 100), mapping("legacy", 0)];
        let ids: Vec<&str> =
            stale(&mappings, &[network("here")], 1_000).iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["gone", "legacy"]);
    }

    #[test]
    fn a_young_mapping_is_kept_though_dockerd_does_not_list_it_yet() {
        let mappings = [mapping("creating", 1_000 - GRACE_SECS + 1)];
        assert!(stale(&mappings, &[], 1_000).is_empty());
        assert_eq!(stale(&mappings, &[], 1_000 + 1).len(), 1);
    }
}
