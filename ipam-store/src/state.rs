//! The whole cluster as typed records, decoded from one etcd snapshot and
//! kept current one change at a time.
//!
//! [`ClusterState::from_kvs`] decodes a snapshot; [`ClusterState::apply`]
//! applies one watched put or delete, so a watcher decodes only the keys that
//! changed. Blocks and endpoints are indexed by network, so one network's
//! entries are found without scanning the others, and each network's map is
//! shared (`Arc`): a copy of the state, as a watcher makes while readers
//! still hold its last snapshot, copies only the outer maps, and a change
//! copies only the map of the network it touches. A reader can tell a
//! network whose map is the very same (`Arc::ptr_eq`) as in an earlier
//! snapshot is unchanged. The design decision: one
//! bad value must not hide the rest of the cluster, so undecodable records,
//! and records whose content disagrees with their key, are skipped (a bad
//! put removes what the key held before) and returned as [`BadRecord`]s for
//! the caller to log; keys outside the layout are ignored silently.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::keys::{Key, Keys};
use crate::records::{
    AliveRecord, BlockRecord, EndpointRecord, HostRecord, NetworkRecord, Versioned, VniRecord, decode,
};

/// Every record of the cluster at one etcd revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub revision: i64,
    pub hosts: BTreeMap<String, HostRecord>,
    pub alive: BTreeMap<String, AliveRecord>,
    pub networks: BTreeMap<String, NetworkRecord>,
    /// Blocks by network, then block; a network's map is never empty.
    pub blocks: BTreeMap<String, Arc<BTreeMap<Ipv4Net, BlockRecord>>>,
    /// Endpoints by network, then address; a network's map is never empty.
    pub endpoints: BTreeMap<String, Arc<EndpointMap>>,
}

/// One network's endpoints by address. Each record is shared too, so copying
/// the map copies no record, and a record that is the same allocation
/// (`Arc::ptr_eq`) as in an earlier copy is unchanged.
pub type EndpointMap = BTreeMap<Ipv4Addr, Arc<EndpointRecord>>;

/// A value under the prefix that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad record at {}: {}", self.key, self.reason)
    }
}

fn typed<T: DeserializeOwned + Versioned>(key: &str, bytes: &[u8]) -> Result<T, BadRecord> {
    decode(key, bytes).map_err(|e| match e {
        Error::BadRecord { key, reason } => BadRecord { key, reason },
        other => BadRecord { key: key.to_string(), reason: other.to_string() },
    })
}

fn mismatch(
    key: &str,
    what: &str,
    in_key: &dyn std::fmt::Display,
    in_value: &dyn std::fmt::Display,
) -> BadRecord {
    BadRecord {
        key: key.to_string(),
        reason: format!("the key names {what} {in_key} but the record says {in_value}"),
    }
}

impl ClusterState {
    /// Decodes the keys and values of a prefix read taken at `revision`.
    pub fn from_kvs<'a>(
        keys: &Keys,
        revision: i64,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> (ClusterState, Vec<BadRecord>) {
        let mut state = ClusterState { revision, ..ClusterState::default() };
        let bad =
            kvs.into_iter().filter_map(|(key, value)| state.apply(keys, key, Some(value)).err()).collect();
        (state, bad)
    }

    /// Applies one change: a put (`Some(value)`) or a delete (`None`). A bad
    /// value is reported and leaves the key empty.
    pub fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) -> Result<(), BadRecord> {
        let Some(parsed) = keys.parse(key) else {
            return Ok(());
        };
        self.remove(&parsed);
        match value {
            Some(value) => self.add(key, parsed, value),
            None => Ok(()),
        }
    }

    /// Every endpoint, by network and address.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.values().flat_map(|m| m.values()).map(Arc::as_ref)
    }

    /// The endpoints of one network, by address.
    pub fn endpoints_of(&self, network: &str) -> impl Iterator<Item = &EndpointRecord> {
        self.endpoints.get(network).into_iter().flat_map(|m| m.values()).map(Arc::as_ref)
    }

    /// Every block, by network and address.
    pub fn all_blocks(&self) -> impl Iterator<Item = &BlockRecord> {
        self.blocks.values().flat_map(|m| m.values())
    }

    /// The endpoint map of one network, shared with earlier copies of the
    /// state as long as it is unchanged.
    pub fn endpoint_map(&self, network: &str) -> Option<&Arc<EndpointMap>> {
        self.endpoints.get(network)
    }

    /// Adds or replaces an endpoint; copies its network's map only if
    /// another copy of the state shares it.
    pub fn insert_endpoint(&mut self, r: EndpointRecord) {
        insert_nested(&mut self.endpoints, Arc::new(r), |r| (&r.network, r.ip));
    }

    /// Adds or replaces a block, like [`insert_endpoint`](Self::insert_endpoint).
    pub fn insert_block(&mut self, r: BlockRecord) {
        insert_nested(&mut self.blocks, r, |r| (&r.network, r.cidr));
    }

    fn remove(&mut self, parsed: &Key) {
        match parsed {
            Key::Host(name) => drop(self.hosts.remove(name)),
            Key::Alive(name) => drop(self.alive.remove(name)),
            Key::Network(name) => drop(self.networks.remove(name)),
            Key::Vni(_) => {}
            Key::Block { network, cidr } => remove_nested(&mut self.blocks, network, cidr),
            Key::Endpoint { network, ip } => remove_nested(&mut self.endpoints, network, ip),
        }
    }

    fn add(&mut self, key: &str, parsed: Key, value: &[u8]) -> Result<(), BadRecord> {
        match parsed {
            Key::Host(name) => {
                let r: HostRecord = typed(key, value)?;
                check(key, "host", &name, &r.name)?;
                self.hosts.insert(name, r);
            }
            Key::Alive(name) => {
                let r: AliveRecord = typed(key, value)?;
                check(key, "host", &name, &r.name)?;
                self.alive.insert(name, r);
            }
            Key::Network(name) => {
                let r: NetworkRecord = typed(key, value)?;
                check(key, "network", &name, &r.name)?;
                self.networks.insert(name, r);
            }
            Key::Vni(vni) => {
                // The VNI index only guards uniqueness; it is checked, not kept.
                let r: VniRecord = typed(key, value)?;
                check(key, "VNI", &vni, &r.vni)?;
            }
            Key::Block { network, cidr } => {
                let r: BlockRecord = typed(key, value)?;
                check(key, "network", &network, &r.network)?;
                check(key, "block", &cidr, &r.cidr)?;
                self.insert_block(r);
            }
            Key::Endpoint { network, ip } => {
                let r: EndpointRecord = typed(key, value)?;
                check(key, "network", &network, &r.network)?;
                check(key, "address", &ip, &r.ip)?;
                self.insert_endpoint(r);
            }
        }
        Ok(())
    }
}

type Nested<K, V> = BTreeMap<String, Arc<BTreeMap<K, V>>>;

/// Inserts `value` in `outer[network]` at `inner`, as `at` names them,
/// copying that one map only if it is shared.
fn insert_nested<K: Ord + Clone, V: Clone>(
    outer: &mut Nested<K, V>,
    value: V,
    at: impl Fn(&V) -> (&String, K),
) {
    let (network, inner) = at(&value);
    match outer.get_mut(network.as_str()) {
        Some(m) => drop(Arc::make_mut(m).insert(inner, value)),
        None => {
            let network = network.clone();
            outer.insert(network, Arc::new(BTreeMap::from([(inner, value)])));
        }
    }
}

/// Removes `inner` from `outer[network]`, dropping the network's map when
/// empty; a shared map is copied only if it holds `inner`.
fn remove_nested<K: Ord + Clone, V: Clone>(outer: &mut Nested<K, V>, network: &str, inner: &K) {
    let Some(m) = outer.get_mut(network) else { return };
    if !m.contains_key(inner) {
        return;
    }
    if m.len() == 1 {
        outer.remove(network);
    } else {
        Arc::make_mut(m).remove(inner);
    }
}

fn check<T: PartialEq + std::fmt::Display>(
    key: &str,
    what: &str,
    in_key: &T,
    in_value: &T,
) -> Result<(), BadRecord> {
    if in_key == in_value { Ok(()) } else { Err(mismatch(key, what, in_key, in_value)) }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::mac::Mac;
    use crate::records::encode;

    fn endpoint(ip: Ipv4Addr) -> EndpointRecord {
        EndpointRecord {
            v: 1,
            id: "c".into(),
            network: "blue".into(),
            host: "h1".into(),
            netns: "/run/netns/c".into(),
            ip,
            mac: Mac::endpoint(ip),
            ifname: "eth0".into(),
            host_ifname: "ovvec".into(),
            created_at: 1,
            container: None,
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        }
    }

    #[test]
    fn applies_puts_and_deletes_one_key_at_a_time() {
        let k = Keys::new("/ovnet");
        let mut s = ClusterState::default();
        let (ip2, ip3) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        s.apply(&k, &k.endpoint("blue", ip2), Some(&encode(&endpoint(ip2)))).unwrap();
        s.apply(&k, &k.endpoint("blue", ip3), Some(&encode(&endpoint(ip3)))).unwrap();
        assert_eq!(s.endpoints_of("blue").count(), 2);
        assert_eq!(s.endpoints_of("red").count(), 0);
        s.apply(&k, &k.endpoint("blue", ip2), None).unwrap();
        assert_eq!(s.all_endpoints().map(|e| e.ip).collect::<Vec<_>>(), vec![ip3]);
        // Garbage over a good record: reported, and the old record is gone.
        let bad = s.apply(&k, &k.endpoint("blue", ip3), Some(b"{")).unwrap_err();
        assert_eq!(bad.key, k.endpoint("blue", ip3));
        assert_eq!(s.all_endpoints().count(), 0);
        assert!(s.endpoints.is_empty(), "an empty network's map is dropped");
        // Deleting what is not there, and keys outside the layout, are no-ops.
        s.apply(&k, &k.endpoint("blue", ip3), None).unwrap();
        s.apply(&k, "/ovnet/unknown/x", Some(b"zz")).unwrap();
        assert_eq!(s, ClusterState::default());
    }

    #[test]
    fn a_copy_shares_every_network_map_until_it_changes() {
        let k = Keys::new("/ovnet");
        let mut s = ClusterState::default();
        let mut red = endpoint(Ipv4Addr::new(10, 2, 0, 2));
        red.network = "red".into();
        s.insert_endpoint(endpoint(Ipv4Addr::new(10, 1, 0, 2)));
        s.insert_endpoint(red.clone());
        let before = s.clone();
        let ip3 = Ipv4Addr::new(10, 1, 0, 3);
        s.apply(&k, &k.endpoint("blue", ip3), Some(&encode(&endpoint(ip3)))).unwrap();
        assert!(Arc::ptr_eq(&s.endpoints["red"], &before.endpoints["red"]), "red untouched");
        assert!(!Arc::ptr_eq(&s.endpoints["blue"], &before.endpoints["blue"]));
        assert_eq!(before.endpoints["blue"].len(), 1, "the copy keeps its own");
        // Deleting what is not there copies nothing.
        let before = s.clone();
        s.apply(&k, &k.endpoint("blue", Ipv4Addr::new(10, 1, 0, 9)), None).unwrap();
        assert!(Arc::ptr_eq(&s.endpoints["blue"], &before.endpoints["blue"]));
        s.apply(&k, &k.endpoint("red", red.ip), None).unwrap();
        assert!(!s.endpoints.contains_key("red") && before.endpoints.contains_key("red"));
        assert_eq!(s.endpoint_map("blue").map(|m| m.len()), Some(2));
    }

    #[test]
    fn decodes_good_records_and_reports_garbage() {
        let k = Keys::new("/ovnet");
        let host = HostRecord {
            v: 1,
            name: "h1".into(),
            vtep: Ipv4Addr::new(192, 0, 2, 1),
            registered_at: 1,
            control: Vec::new(),
        };
        let block = BlockRecord {
            v: 1,
            network: "blue".into(),
            cidr: "10.1.0.0/24".parse().unwrap(),
            host: "h1".into(),
        };
        let ip2 = Ipv4Addr::new(10, 1, 0, 2);
        let ip10 = Ipv4Addr::new(10, 1, 0, 10);
        let kvs: Vec<(String, Vec<u8>)> = vec![
            (k.host("h1"), encode(&host)),
            (k.host("h2"), b"\x00garbage".to_vec()),
            (k.alive("h1"), br#"{"v":7}"#.to_vec()),
            (k.block("blue", &block.cidr), encode(&block)),
            (k.endpoint("blue", ip10), encode(&endpoint(ip10))),
            (k.endpoint("blue", ip2), encode(&endpoint(ip2))),
            // key says .3, record says .2
            (k.endpoint("blue", Ipv4Addr::new(10, 1, 0, 3)), encode(&endpoint(ip2))),
            (k.network("red"), br#"{"v":1,"name":"red"#.to_vec()),
            (k.vni(5), br#"{"v":1,"vni":6,"network":"red"}"#.to_vec()),
            ("/ovnet/unknown/x".into(), b"whatever".to_vec()),
            ("/elsewhere/hosts/h9".into(), b"whatever".to_vec()),
        ];
        let (state, bad) =
            ClusterState::from_kvs(&k, 42, kvs.iter().map(|(key, v)| (key.as_str(), v.as_slice())));
        assert_eq!(state.revision, 42);
        assert_eq!(state.hosts.len(), 1);
        assert_eq!(state.hosts["h1"], host);
        assert!(state.alive.is_empty() && state.networks.is_empty());
        assert_eq!(state.all_blocks().collect::<Vec<_>>(), vec![&block]);
        let ips: Vec<Ipv4Addr> = state.all_endpoints().map(|e| e.ip).collect();
        assert_eq!(ips, vec![ip2, ip10], "sorted numerically");
        let bad_keys: Vec<&str> = bad.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(
            bad_keys,
            vec![
                "/ovnet/hosts/h2",
                "/ovnet/alive/h1",
                "/ovnet/endpoints/blue/10.1.0.3",
                "/ovnet/networks/red",
                "/ovnet/vnis/5",
            ]
        );
        assert!(bad[1].reason.contains("version 7"), "{}", bad[1]);
        assert!(bad[2].reason.contains("10.1.0.3"), "{}", bad[2]);
    }
}
