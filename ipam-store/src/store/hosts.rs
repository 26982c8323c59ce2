//! Host registration and liveness through an etcd lease.
//!
//! A host has two keys and two leases. `alive/<name>` is attached to a short
//! lease (the liveness TTL) and vanishes soon after the agent stops renewing
//! it. `hosts/<name>`, the host's blocks and its endpoints are attached to a
//! long one, the host's *reservation* (the block grace period, 24 h by
//! default): a dead host keeps its addresses while that lease lives, and when
//! it runs out etcd deletes them all at once, so any host may lease the blocks
//! again (flannel's subnet lease reuse). The design decision: liveness and
//! ownership are etcd lease expiries, never timestamps compared across
//! machines, so clock skew between hosts does not matter, and reclaiming needs
//! no agent to be up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, TxnOp};

use super::{EtcdStore, Kv, Read, log_bad};
use crate::error::Error;
use crate::keys::Key;
use crate::records::{BlockRecord, EndpointRecord, NetworkRecord, VniRecord, decode, encode};
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
        let resp = self
            .retried("granting a lease", || {
                let mut c = self.client();
                async move { c.lease_grant(ttl_secs, None).await }
            })
            .await?;
        Ok(resp.id())
    }

    /// Writes `hosts/<name>` (no lease) and `alive/<name>` (on `lease`) in one transaction.
    pub async fn register_host(
        &self,
        host: &crate::records::HostRecord,
        alive: &crate::records::AliveRecord,
        lease: i64,
    ) -> Result<(), Error> {
        self.register_host_with(host, alive, lease, None).await.map(|_| ())
    }

    /// Writes `hosts/<name>` (on the `reservation` lease, when given) and
    /// `alive/<name>` (on `alive_lease`) in one transaction; returns its revision.
    pub async fn register_host_with(
        &self,
        host: &crate::records::HostRecord,
        alive: &crate::records::AliveRecord,
        alive_lease: i64,
        reservation: Option<i64>,
    ) -> Result<i64, Error> {
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
            TxnOp::put(self.keys.host(&host.name), encode(host), reservation.map(on_lease)),
            TxnOp::put(self.keys.alive(&alive.name), encode(alive), Some(on_lease(alive_lease))),
        ];
        let resp = self
            .retried("registering the host", || {
                let mut c = self.client();
                let txn = etcd_client::Txn::new().and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Seconds left on `lease`; `None` when etcd no longer has it.
    pub async fn lease_ttl(&self, lease: i64) -> Result<Option<i64>, Error> {
        let resp = self
            .retried("reading a lease", || {
                let mut c = self.client();
                async move { c.lease_time_to_live(lease, None).await }
            })
            .await?;
        Ok((resp.ttl() > 0).then_some(resp.ttl()))
    }

    /// The reservation lease `hosts/<name>` is attached to, if that lease still lives.
    pub async fn reservation_of(&self, name: &str) -> Result<Option<i64>, Error> {
        let resp = self
            .retried("reading the host registration", || {
                let mut c = self.client();
                let key = self.keys.host(name);
                async move { c.get(key, None).await }
            })
            .await?;
        let lease = resp.kvs().first().map_or(0, |kv| kv.lease());
        if lease == 0 {
            return Ok(None);
        }
        Ok(self.lease_ttl(lease).await?.map(|_| lease))
    }

    /// Puts every block and endpoint record of `host` that is not on
    /// `reservation` onto it (records written before the host had one, or
    /// by an older ovnet). Returns how many were moved.
    pub async fn adopt_records(&self, host: &str, reservation: i64) -> Result<usize, Error> {
        for _ in 0..super::MAX_ATTEMPTS {
            let strays: Vec<Kv> =
                self.records_of(host).await?.into_iter().filter(|kv| kv.lease != reservation).collect();
            if strays.is_empty() {
                return Ok(0);
            }
            let mut moved = 0;
            let mut lost_race = false;
            for chunk in strays.chunks(TXN_CHUNK) {
                let compares = chunk
                    .iter()
                    .map(|kv| Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision))
                    .collect();
                let ops = chunk
                    .iter()
                    .map(|kv| TxnOp::put(kv.key.clone(), kv.value.clone(), Some(on_lease(reservation))))
                    .collect();
                if self.commit("moving records onto the host's reservation", compares, ops).await? {
                    moved += chunk.len();
                } else {
                    lost_race = true;
                }
            }
            if !lost_race {
                return Ok(moved);
            }
        }
        Err(Error::Contention { what: format!("moving host {host:?}'s records onto its reservation") })
    }

    /// The block and endpoint keys whose record names `host` as owner, and
    /// the network and VNI index keys of its bridge networks.
    async fn records_of(&self, host: &str) -> Result<Vec<Kv>, Error> {
        let reads = vec![
            Read::Prefix(self.keys.all_blocks_prefix()),
            Read::Prefix(self.keys.all_endpoints_prefix()),
            Read::Prefix(self.keys.networks_prefix()),
            Read::Prefix(self.keys.vnis_prefix()),
        ];
        let (_, res) = self.read("reading a host's blocks and endpoints", reads).await?;
        let bridges: BTreeMap<u32, String> = res[2]
            .iter()
            .filter_map(|kv| decode::<NetworkRecord>(&kv.key, &kv.value).ok())
            .filter(|n| n.owner() == Some(host))
            .map(|n| (n.vni, n.name))
            .collect();
        let owned = |kv: &Kv| match self.keys.parse(&kv.key) {
            Some(Key::Block { .. }) => {
                decode::<BlockRecord>(&kv.key, &kv.value).is_ok_and(|b| b.host == host)
            }
            Some(Key::Endpoint { .. }) => {
                decode::<EndpointRecord>(&kv.key, &kv.value).is_ok_and(|e| e.host == host)
            }
            Some(Key::Network(name)) => bridges.values().any(|n| *n == name),
            Some(Key::Vni(vni)) => {
                decode::<VniRecord>(&kv.key, &kv.value).is_ok_and(|r| bridges.get(&vni) == Some(&r.network))
            }
            _ => false,
        };
        Ok(res.into_iter().flatten().filter(|kv| owned(kv)).collect())
    }

    /// Removes a dead host at once: its registration, blocks, endpoints and
    /// bridge networks (revoking its reservation lease). Refused while the host is alive.
    /// Returns how many blocks and endpoints were removed.
    pub async fn remove_host(&self, name: &str) -> Result<(usize, usize), Error> {
        validate::host_name(name)?;
        let (host_key, alive_key) = (self.keys.host(name), self.keys.alive(name));
        let reads = vec![Read::Key(host_key.clone()), Read::Key(alive_key.clone())];
        let (_, res) = self.read("reading the host", reads).await?;
        if !res[1].is_empty() {
            return Err(Error::HostAlive(name.to_string()));
        }
        let records = self.records_of(name).await?;
        let Some(host_kv) = res[0].first() else {
            if records.is_empty() {
                return Err(Error::HostNotFound(name.to_string()));
            }
            return self.delete_records(name, &records).await;
        };
        // Unregister first, guarded by "still not alive, registration unchanged".
        let compares = vec![
            Compare::version(alive_key, CompareOp::Equal, 0),
            Compare::mod_revision(host_key.clone(), CompareOp::Equal, host_kv.mod_revision),
        ];
        let ops = vec![TxnOp::delete(host_key, None)];
        if !self.commit("removing the host", compares, ops).await? {
            return Err(Error::Contention { what: format!("removing host {name:?} (it changed meanwhile)") });
        }
        if host_kv.lease != 0 {
            let mut c = self.client();
            // Deletes every key on the reservation at once; a lease that just
            // ran out is fine, the keys went with it.
            if let Err(e) = self.timed("revoking the host's reservation", c.lease_revoke(host_kv.lease)).await
            {
                tracing::warn!(error = %e, host = name, "revoking the reservation failed; deleting its records one by one");
            }
        }
        self.delete_records(name, &records).await
    }

    /// Deletes what is left of `records` (those not gone with a lease), in
    /// chunks; returns (blocks, endpoints) among them.
    async fn delete_records(&self, host: &str, records: &[Kv]) -> Result<(usize, usize), Error> {
        let is_block = |kv: &&Kv| matches!(self.keys.parse(&kv.key), Some(Key::Block { .. }));
        let is_endpoint = |kv: &&Kv| matches!(self.keys.parse(&kv.key), Some(Key::Endpoint { .. }));
        let blocks = records.iter().filter(is_block).count();
        let endpoints = records.iter().filter(is_endpoint).count();
        for chunk in records.chunks(TXN_CHUNK) {
            let ops =
                chunk.iter().map(|kv| TxnOp::delete(kv.key.clone(), Some(DeleteOptions::new()))).collect();
            self.commit(&format!("deleting host {host:?}'s records"), Vec::new(), ops).await?;
        }
        Ok((blocks, endpoints))
    }

    /// Renews `lease` once; returns its new TTL in seconds, 0 if the lease is gone.
    pub async fn keep_alive_once(&self, lease: i64) -> Result<i64, Error> {
        // Repeatable: a renewal stuck on a frozen member moves on to the next
        // one after a second, well inside a short lease TTL (chaos finding).
        self.retried("renewing the host lease", || self.renew_once(lease)).await
    }

    async fn renew_once(&self, lease: i64) -> Result<i64, etcd_client::Error> {
        let mut c = self.client();
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

/// etcd refuses transactions of more than 128 operations by default.
const TXN_CHUNK: usize = 100;

fn on_lease(lease: i64) -> PutOptions {
    PutOptions::new().with_lease(lease)
}

fn status<'a>(hosts: &'a mut BTreeMap<String, HostStatus>, name: &str) -> &'a mut HostStatus {
    hosts.entry(name.to_string()).or_insert_with(|| HostStatus {
        name: name.to_string(),
        vtep: None,
        alive: false,
        blocks: Vec::new(),
    })
}
