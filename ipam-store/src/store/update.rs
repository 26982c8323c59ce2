//! Changing an endpoint record in place: a runtime plugin learns where an
//! endpoint went (Docker's sandbox) or whose it is (a container's name and
//! id) after the address was written.
//!
//! The design decision: an update is a read and one transaction guarded by
//! the record's mod revision, and it keeps the key's lease (a put without
//! the lease would detach the record from its host's reservation). An
//! update of a record that is gone, or is another endpoint now, changes
//! nothing.

use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};

use super::{EtcdStore, MAX_ATTEMPTS, Read, Witness, backoff};
use crate::error::Error;
use crate::records::{EndpointRecord, decode, encode};

impl EtcdStore {
    /// Applies `change` to the endpoint at `ip` of `network` while it is
    /// still the one with `id`. Returns the record written, or `None` when
    /// there is no such endpoint (any more).
    pub async fn update_endpoint(
        &self,
        network: &str,
        ip: Ipv4Addr,
        id: &str,
        change: impl Fn(&mut EndpointRecord),
    ) -> Result<Option<EndpointRecord>, Error> {
        let key = self.keys.endpoint(network, ip);
        for attempt in 1..=MAX_ATTEMPTS {
            let (_, res) = self.read("reading an endpoint", vec![Read::Key(key.clone())]).await?;
            let Some(kv) = res.into_iter().flatten().next() else {
                return Ok(None);
            };
            let mut record = decode::<EndpointRecord>(&key, &kv.value)?;
            if record.id != id {
                return Ok(None);
            }
            change(&mut record);
            let put = (kv.lease != 0).then(|| PutOptions::new().with_lease(kv.lease));
            let compares = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision)];
            let value = encode(&record);
            let ops = vec![TxnOp::put(key.clone(), value.clone(), put)];
            if self
                .commit_witnessed(
                    "updating an endpoint",
                    compares,
                    ops,
                    Witness::Holds { key: &key, value: &value },
                )
                .await?
            {
                return Ok(Some(record));
            }
            backoff(attempt).await;
        }
        Err(Error::Contention { what: format!("updating endpoint {ip} of network {network:?}") })
    }
}
