//! Creating and removing networks: subnet and VNI chosen once, claimed atomically.
//!
//! Creation reads all networks and the VNI index at one revision R, decides
//! with the pure [`plan_network`], then writes the network and its VNI index
//! entry in one transaction guarded by "name unused", "VNI unused" and "no
//! network key modified after R" (a range compare). The last guard is what
//! makes subnet overlap checks safe without a lock: any concurrent creation
//! invalidates our decision, and the retry re-decides on fresh data, turning
//! into a specific error (`NetworkExists`, `VniTaken`, `SubnetOverlap`) once
//! the conflict is real rather than a race.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Compare, CompareOp, DeleteOptions, TxnOp};
use ipnet::Ipv4Net;

use super::{EtcdStore, Kv, MAX_ATTEMPTS, Read, Witness, backoff, log_bad};
use crate::alloc;
use crate::error::Error;
use crate::keys::{Key, Keys};
use crate::records::{Driver, NetworkRecord, RECORD_VERSION, VniRecord, decode, encode, now_secs};
use crate::state::ClusterState;
use crate::validate;

/// What a caller asks for; `None` means "pick one for me".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNetwork {
    pub name: String,
    pub driver: String,
    /// The host asking: a `bridge` network belongs to it (not recorded for `overlay`).
    pub host: Option<String>,
    pub subnet: Option<Ipv4Net>,
    pub vni: Option<u32>,
    pub block_prefix: Option<u8>,
    pub mtu: u32,
    /// No way out and no published ports.
    pub internal: bool,
}

impl NewNetwork {
    /// An overlay network `name` with MTU `mtu`, everything else picked by
    /// the store (subnet, VNI, block size), not internal.
    pub fn overlay(name: &str, mtu: u32) -> NewNetwork {
        NewNetwork {
            name: name.to_string(),
            driver: "overlay".to_string(),
            host: None,
            subnet: None,
            vni: None,
            block_prefix: None,
            mtu,
            internal: false,
        }
    }

    /// Checks everything that does not depend on other networks.
    pub fn validate(&self) -> Result<(), Error> {
        validate::network_name(&self.name)?;
        self.owner()?;
        validate::mtu(self.mtu)?;
        if let Some(vni) = self.vni {
            validate::vni(vni)?;
        }
        if let Some(subnet) = &self.subnet {
            validate::subnet(subnet)?;
            if let Some(len) = self.block_prefix {
                validate::block_prefix(subnet, len)?;
            }
        } else if let Some(len) = self.block_prefix {
            // The automatic subnet is a /16; check the block fits it.
            let probe = Ipv4Net::new(alloc::DEFAULT_POOL.network(), alloc::DEFAULT_SUBNET_PREFIX)
                .unwrap_or(alloc::DEFAULT_POOL);
            validate::block_prefix(&probe, len)?;
        }
        Ok(())
    }

    /// The driver, and the host the network belongs to (bridge networks only).
    fn owner(&self) -> Result<(Driver, Option<String>), Error> {
        match validate::driver(&self.driver)? {
            Driver::Overlay => Ok((Driver::Overlay, None)),
            Driver::Bridge => {
                let host = self.host.clone().unwrap_or_default();
                validate::host_name(&host)?;
                Ok((Driver::Bridge, Some(host)))
            }
        }
    }
}

/// Decides the record for `req` given the existing networks and the VNI index
/// (VNI -> network name). Pure; `id` and `now` are supplied by the caller.
pub fn plan_network(
    req: &NewNetwork,
    networks: &BTreeMap<String, NetworkRecord>,
    vnis: &BTreeMap<u32, String>,
    id: String,
    now: u64,
) -> Result<NetworkRecord, Error> {
    if networks.contains_key(&req.name) {
        return Err(Error::NetworkExists(req.name.clone()));
    }
    let (driver, host) = req.owner()?;
    let subnet = match req.subnet {
        Some(subnet) => {
            if let Some(other) = networks
                .values()
                .find(|n| alloc::overlapping(subnet, std::slice::from_ref(&n.subnet)).is_some())
            {
                return Err(Error::SubnetOverlap {
                    subnet,
                    network: other.name.clone(),
                    other_subnet: other.subnet,
                });
            }
            subnet
        }
        None => {
            let existing: Vec<Ipv4Net> = networks.values().map(|n| n.subnet).collect();
            alloc::pick_subnet(alloc::DEFAULT_POOL, alloc::DEFAULT_SUBNET_PREFIX, &existing)
                .ok_or(Error::PoolExhausted { pool: alloc::DEFAULT_POOL })?
        }
    };
    let mut used: BTreeMap<u32, String> = vnis.clone();
    for n in networks.values() {
        used.entry(n.vni).or_insert_with(|| n.name.clone());
    }
    let vni = match req.vni {
        Some(vni) => match used.get(&vni) {
            Some(owner) => {
                return Err(Error::VniTaken { vni, network: owner.clone() });
            }
            None => vni,
        },
        None => {
            let set: BTreeSet<u32> = used.keys().copied().collect();
            alloc::pick_vni(&set).ok_or(Error::NoFreeVni)?
        }
    };
    let block_prefix = req.block_prefix.unwrap_or_else(|| alloc::default_block_prefix(&subnet));
    validate::block_prefix(&subnet, block_prefix)?;
    Ok(NetworkRecord {
        v: RECORD_VERSION,
        id,
        name: req.name.clone(),
        driver,
        host,
        subnet,
        gateway: alloc::gateway(subnet),
        vni,
        mtu: req.mtu,
        block_prefix,
        created_at: now,
        internal: req.internal,
    })
}

/// The VNI index as VNI -> owning network; undecodable entries still count as used.
fn vni_index(keys: &Keys, kvs: &[Kv]) -> BTreeMap<u32, String> {
    kvs.iter()
        .filter_map(|kv| match keys.parse(&kv.key) {
            Some(Key::Vni(vni)) => {
                let owner = decode::<VniRecord>(&kv.key, &kv.value)
                    .map(|r| r.network)
                    .unwrap_or_else(|_| "<unreadable record>".to_string());
                Some((vni, owner))
            }
            _ => None,
        })
        .collect()
}

impl EtcdStore {
    /// Creates a network, choosing subnet and VNI when not given.
    pub async fn create_network(&self, req: NewNetwork) -> Result<NetworkRecord, Error> {
        req.validate()?;
        let keys = &self.keys;
        let id = format!("{:016x}", rand::random::<u64>());
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let reads = vec![Read::Prefix(keys.networks_prefix()), Read::Prefix(keys.vnis_prefix())];
            let (rev, res) = self.read("reading networks", reads).await?;
            let (nets, vnis) = (&res[0], &res[1]);
            let (state, bad) = ClusterState::from_kvs(
                keys,
                rev,
                nets.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())),
            );
            log_bad(&bad);
            let record = plan_network(&req, &state.networks, &vni_index(keys, vnis), id.clone(), now_secs())?;
            let net_key = keys.network(&record.name);
            let vni_key = keys.vni(record.vni);
            let index = VniRecord { v: RECORD_VERSION, vni: record.vni, network: record.name.clone() };
            let compares = vec![
                Compare::version(net_key.clone(), CompareOp::Equal, 0),
                Compare::version(vni_key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(keys.networks_prefix(), CompareOp::Less, rev + 1).with_prefix(),
            ];
            let value = encode(&record);
            // A bridge network goes with its host: on its reservation, like
            // its blocks and endpoints (`ovctl host rm`, the grace running out).
            let lease = record.owner().and_then(|_| self.owned_put());
            let ops = vec![
                TxnOp::put(net_key.clone(), value.clone(), lease.clone()),
                TxnOp::put(vni_key, encode(&index), lease),
            ];
            if self
                .commit_witnessed(
                    "creating a network",
                    compares,
                    ops,
                    Witness::Holds { key: &net_key, value: &value },
                )
                .await?
            {
                tracing::info!(network = %record.name, subnet = %record.subnet, vni = record.vni, "created network");
                return Ok(record);
            }
        }
        Err(Error::Contention { what: format!("creating network {:?}", req.name) })
    }

    /// Removes a network with no endpoints, with its VNI index entry and blocks.
    pub async fn remove_network(&self, name: &str) -> Result<NetworkRecord, Error> {
        let keys = &self.keys;
        let net_key = keys.network(name);
        let ep_prefix = keys.endpoints_prefix(name);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let reads = vec![
                Read::Key(net_key.clone()),
                Read::Prefix(keys.vnis_prefix()),
                Read::Prefix(ep_prefix.clone()),
            ];
            let (_, res) = self.read("reading a network", reads).await?;
            let Some(net_kv) = res[0].first() else {
                return Err(Error::NetworkNotFound(name.to_string()));
            };
            let record: NetworkRecord = decode(&net_kv.key, &net_kv.value)?;
            if !res[2].is_empty() {
                return Err(Error::NetworkInUse { network: name.to_string(), endpoints: res[2].len() });
            }
            let mut compares = vec![
                Compare::mod_revision(net_key.clone(), CompareOp::Equal, net_kv.mod_revision),
                Compare::version(ep_prefix.clone(), CompareOp::Equal, 0).with_prefix(),
            ];
            let mut ops = vec![
                TxnOp::delete(net_key.clone(), None),
                TxnOp::delete(keys.blocks_prefix(name), Some(DeleteOptions::new().with_prefix())),
            ];
            // Delete the VNI index entry only if it is ours.
            let vni_key = keys.vni(record.vni);
            if let Some(kv) = res[1].iter().find(|kv| kv.key == vni_key) {
                let ours = decode::<VniRecord>(&kv.key, &kv.value).is_ok_and(|r| r.network == name);
                if ours {
                    compares.push(Compare::mod_revision(vni_key.clone(), CompareOp::Equal, kv.mod_revision));
                    ops.push(TxnOp::delete(vni_key, None));
                }
            }
            if self
                .commit_witnessed("removing a network", compares, ops, Witness::Absent { key: &net_key })
                .await?
            {
                tracing::info!(network = %name, "removed network");
                return Ok(record);
            }
        }
        Err(Error::Contention { what: format!("removing network {name:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> NewNetwork {
        NewNetwork::overlay(name, 1450)
    }

    fn existing(name: &str, subnet: &str, vni: u32) -> (String, NetworkRecord) {
        let mut r = plan_network(&req(name), &BTreeMap::new(), &BTreeMap::new(), "0".into(), 0).unwrap();
        r.subnet = subnet.parse().unwrap();
        r.vni = vni;
        (name.to_string(), r)
    }

    #[test]
    fn automatic_choices() {
        let r = plan_network(&req("a"), &BTreeMap::new(), &BTreeMap::new(), "id".into(), 7).unwrap();
        assert_eq!(r.subnet.to_string(), "10.128.0.0/16");
        assert_eq!(r.gateway.to_string(), "10.128.0.1");
        assert_eq!((r.vni, r.block_prefix, r.created_at), (4096, 24, 7));
        let nets: BTreeMap<_, _> = [existing("a", "10.128.0.0/16", 4096)].into();
        let vnis: BTreeMap<u32, String> = [(4097, "ghost".to_string())].into();
        let r = plan_network(&req("b"), &nets, &vnis, "id".into(), 0).unwrap();
        assert_eq!((r.subnet.to_string().as_str(), r.vni), ("10.129.0.0/16", 4098));
    }

    #[test]
    fn specific_conflicts() {
        let nets: BTreeMap<_, _> = [existing("blue", "10.1.0.0/24", 4096)].into();
        let none = BTreeMap::new();
        let e = plan_network(&req("blue"), &nets, &none, "i".into(), 0).unwrap_err();
        assert!(matches!(e, Error::NetworkExists(ref n) if n == "blue"), "{e}");
        let mut r = req("red");
        r.vni = Some(4096);
        let e = plan_network(&r, &nets, &none, "i".into(), 0).unwrap_err();
        assert_eq!(e.to_string(), r#"VNI 4096 is already used by network "blue""#);
        let mut r = req("red");
        r.subnet = Some("10.1.0.0/16".parse().unwrap());
        let e = plan_network(&r, &nets, &none, "i".into(), 0).unwrap_err();
        assert_eq!(e.to_string(), r#"subnet 10.1.0.0/16 overlaps network "blue" (10.1.0.0/24)"#);
    }

    #[test]
    fn validation_before_anything() {
        let mut r = req("ok");
        r.block_prefix = Some(12);
        assert!(matches!(r.validate(), Err(Error::InvalidBlockPrefix { .. })));
        let mut r = req("ok");
        r.subnet = Some("10.9.0.0/30".parse().unwrap());
        assert!(r.validate().is_ok());
        let p = plan_network(&r, &BTreeMap::new(), &BTreeMap::new(), "i".into(), 0).unwrap();
        assert_eq!(p.block_prefix, 30);
        r.driver = "macvlan".into();
        assert!(matches!(r.validate(), Err(Error::UnsupportedDriver { .. })));
        r.driver = "bridge".into();
        assert!(
            matches!(r.validate(), Err(Error::InvalidHostName { .. })),
            "a bridge network needs its host"
        );
        r.host = Some("h1".into());
        assert!(r.validate().is_ok());
    }

    #[test]
    fn a_bridge_network_belongs_to_the_host_creating_it() {
        let mut r = req("lan");
        r.driver = "bridge".into();
        r.host = Some("h1".into());
        let p = plan_network(&r, &BTreeMap::new(), &BTreeMap::new(), "i".into(), 0).unwrap();
        assert_eq!((p.driver, p.owner()), (Driver::Bridge, Some("h1")));
        assert!(p.usable_on("h1") && !p.usable_on("h2"));
        let e = p.check_usable_on("h2").unwrap_err().to_string();
        assert!(e.contains(r#"bridge network of host "h1""#) && e.contains(r#"host "h2""#), "{e}");
        let json = String::from_utf8(encode(&p)).unwrap();
        assert!(json.contains(r#""driver":"bridge","host":"h1""#), "{json}");
        // An overlay network records no host, whoever created it.
        let mut o = req("wan");
        o.host = Some("h1".into());
        let o = plan_network(&o, &BTreeMap::new(), &BTreeMap::new(), "i".into(), 0).unwrap();
        assert_eq!((o.driver, o.host.as_deref()), (Driver::Overlay, None));
        assert!(o.usable_on("h2") && o.check_usable_on("h2").is_ok());
        assert!(!String::from_utf8(encode(&o)).unwrap().contains("host"));
    }
}
