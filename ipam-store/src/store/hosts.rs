//! Host registration and liveness through an etcd lease.
//!
//! A host has two keys: `hosts/<name>`, written without a lease, says "this
//! host is part of the cluster" and survives crashes; `alive/<name>` is
//! attached to the host's lease and vanishes when the agent stops renewing it.
//! The design decision: liveness is etcd's lease expiry, never a timestamp
//! compared across machines, so clock skew between hosts does not matter.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use etcd_client::{PutOptions, TxnOp};

use super::{EtcdStore, Read, log_bad};
use crate::error::Error;
use crate::records::{BlockRecord, encode};
use crate::state::ClusterState;
use crate::validate;

/// What the cluster knows about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStatus {
    pub name: String,
    /// From the alive record if present, else from the registration.
    pub vtep: Option<Ipv4Addr>,
    /// Whether the host's lease (and so its `alive/` key) exists.
    pub alive: bool,
    pub blocks: Vec<BlockRecord>,
}

impl EtcdStore {
    /// Grants a lease of `ttl_secs` seconds and returns its id.
    pub async fn grant_lease(&self, ttl_secs: i64) -> Result<i64, Error> {
        let mut c = self.client();
        let resp = self.timed("granting a lease", c.lease_grant(ttl_secs, None)).await?;
        Ok(resp.id())
    }

    /// Writes `hosts/<name>` (no lease) and `alive/<name>` (on `lease`) in one transaction.
    pub async fn register_host(
        &self,
        host: &crate::records::HostRecord,
        alive: &crate::records::AliveRecord,
        lease: i64,
    ) -> Result<(), Error> {
        validate::host_name(&host.name)?;
        if alive.name != host.name {
            return Err(Error::InvalidHostName {
                name: alive.name.clone(),
                rule: format!(
                    "the alive record must name the same host as the registration ({:?})",
                    host.name
                ),
            });
        }
        let ops = vec![
            TxnOp::put(self.keys.host(&host.name), encode(host), None),
            TxnOp::put(
                self.keys.alive(&alive.name),
                encode(alive),
                Some(PutOptions::new().with_lease(lease)),
            ),
        ];
        self.commit("registering the host", Vec::new(), ops).await?;
        Ok(())
    }

    /// Renews `lease` once; returns its new TTL in seconds, 0 if the lease is gone.
    pub async fn keep_alive_once(&self, lease: i64) -> Result<i64, Error> {
        let mut c = self.client();
        let renew = async move {
            // The client sends one keep-alive while opening the stream and
            // fails with LeaseKeepAliveError when the lease does not exist.
            let (mut keeper, mut stream) = match c.lease_keep_alive(lease).await {
                Ok(pair) => pair,
                Err(etcd_client::Error::LeaseKeepAliveError(msg)) if msg.contains("not found") => {
                    return Ok(0);
                }
                Err(e) => return Err(e),
            };
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(resp) => Ok(resp.ttl().max(0)),
                None => Ok(0),
            }
        };
        self.timed("renewing the host lease", renew).await
    }

    /// Every host known from registrations, alive keys or block ownership, by name.
    pub async fn list_hosts(&self) -> Result<Vec<HostStatus>, Error> {
        let keys = &self.keys;
        let reads = vec![
            Read::Prefix(keys.hosts_prefix()),
            Read::Prefix(keys.alive_prefix()),
            Read::Prefix(keys.all_blocks_prefix()),
        ];
        let (rev, res) = self.read("listing hosts", reads).await?;
        let all = res.iter().flatten();
        let (state, bad) =
            ClusterState::from_kvs(keys, rev, all.map(|kv| (kv.key.as_str(), kv.value.as_slice())));
        log_bad(&bad);
        let mut hosts: BTreeMap<String, HostStatus> = BTreeMap::new();
        for (name, h) in &state.hosts {
            status(&mut hosts, name).vtep = Some(h.vtep);
        }
        for (name, a) in &state.alive {
            let s = status(&mut hosts, name);
            s.vtep = Some(a.vtep);
            s.alive = true;
        }
        for b in state.all_blocks() {
            status(&mut hosts, &b.host).blocks.push(b.clone());
        }
        Ok(hosts.into_values().collect())
    }
}

fn status<'a>(hosts: &'a mut BTreeMap<String, HostStatus>, name: &str) -> &'a mut HostStatus {
    hosts.entry(name.to_string()).or_insert_with(|| HostStatus {
        name: name.to_string(),
        vtep: None,
        alive: false,
        blocks: Vec::new(),
    })
}
