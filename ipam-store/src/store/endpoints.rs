//! Address management inside a network: host blocks and endpoint addresses.
//!
//! A network's subnet is cut into blocks (`block_prefix`) that hosts lease;
//! a host gives its endpoints addresses from its own blocks. The design
//! decision: the endpoint and, when needed, the new block it lives in are
//! written in ONE transaction, guarded by "network unchanged", "block still
//! ours / still free" and "address still free" — so a failed or exhausted
//! allocation leaves nothing behind, and two hosts racing for the same block
//! or address cannot both win. Losers re-read and, after the first retry,
//! spread over several free candidates so many racing hosts finish quickly.
//! A connect is one read and one transaction: the read that picks the
//! address also answers "is this namespace already connected here?", and is
//! split from the write (`offer_endpoint`, `claim_endpoint`) so that the
//! agent can plumb the kernel while etcd writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, DeleteOptions, TxnOp};
use ipnet::Ipv4Net;

use super::{EtcdStore, Kv, MAX_ATTEMPTS, Read, Witness, backoff, roll, spread};
use crate::alloc;
use crate::error::Error;
use crate::keys::{Key, Keys};
use crate::mac::Mac;
use crate::records::{
    BlockRecord, ContainerRef, EndpointRecord, NetworkRecord, RECORD_VERSION, decode, encode, now_secs,
};
use crate::validate;

/// A request for an endpoint address; `ip: None` means "any free address".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    pub id: String,
    pub network: String,
    pub host: String,
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Option<Ipv4Addr>,
    pub container: Option<ContainerRef>,
    /// DNS name (unique on the network) and aliases; see `EndpointRecord`.
    pub name: String,
    pub aliases: Vec<String>,
    /// Ports to publish, host ports already picked (none is 0).
    pub ports: Vec<crate::PortMapping>,
}

/// A network's address state at one revision.
#[derive(Clone, Debug)]
pub struct NetworkView {
    pub network: NetworkRecord,
    pub network_mod_revision: i64,
    /// Block -> (owning host, mod revision). Unreadable records count as
    /// owned by "<unreadable record>".
    pub blocks: BTreeMap<Ipv4Net, (String, i64)>,
    /// Addresses with an endpoint key (readable or not).
    pub used: BTreeSet<Ipv4Addr>,
}

/// An address picked for a new endpoint from one read of its network, not
/// written yet (see `EtcdStore::offer_endpoint`).
#[derive(Clone, Debug)]
pub struct EndpointOffer {
    /// The network as read.
    pub network: NetworkRecord,
    pub ip: Ipv4Addr,
    /// The MAC that goes with `ip`.
    pub mac: Mac,
    pub(super) network_mod_revision: i64,
    pub(super) claim: BlockClaim,
    /// How the claim guards what the offer read (see `Guard`).
    pub(super) guard: Guard,
}

/// What the claim's transaction compares to be sure the offer still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guard {
    /// The network's and block's mod revisions, as read from etcd.
    Revisions,
    /// Their values, as the caller's cache holds them (it has no revisions):
    /// the records are compared byte for byte as this code encodes them.
    Values,
}

/// The block an allocation lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockClaim {
    /// Already leased to this host, at this mod revision.
    Ours { cidr: Ipv4Net, mod_revision: i64 },
    /// Free; leased in the same transaction.
    New(Ipv4Net),
}

impl BlockClaim {
    fn cidr(&self) -> Ipv4Net {
        match self {
            BlockClaim::Ours { cidr, .. } | BlockClaim::New(cidr) => *cidr,
        }
    }
}

impl NetworkView {
    fn new(keys: &Keys, net: &Kv, blocks: &[Kv], endpoints: &[Kv]) -> Result<NetworkView, Error> {
        let network: NetworkRecord = decode(&net.key, &net.value)?;
        let blocks = blocks
            .iter()
            .filter_map(|kv| match keys.parse(&kv.key) {
                Some(Key::Block { cidr, .. }) => {
                    let owner = decode::<BlockRecord>(&kv.key, &kv.value)
                        .map(|b| b.host)
                        .unwrap_or_else(|_| "<unreadable record>".to_string());
                    Some((cidr, (owner, kv.mod_revision)))
                }
                _ => None,
            })
            .collect();
        let used = endpoints
            .iter()
            .filter_map(|kv| match keys.parse(&kv.key) {
                Some(Key::Endpoint { ip, .. }) => Some(ip),
                _ => None,
            })
            .collect();
        Ok(NetworkView { network, network_mod_revision: net.mod_revision, blocks, used })
    }

    fn exhausted(&self) -> Error {
        Error::AddressExhausted { network: self.network.name.clone(), subnet: self.network.subnet }
    }

    /// Up to `limit` free blocks, lowest first.
    pub fn free_blocks(&self, limit: usize) -> Vec<Ipv4Net> {
        let taken: BTreeSet<Ipv4Net> = self.blocks.keys().copied().collect();
        let n = &self.network;
        alloc::free_blocks(n.subnet, n.block_prefix, &taken, limit)
    }

    /// Chooses the address and block for `host`. With `spread` > 1 a random
    /// (`roll`) one of the first `spread` candidates is taken instead of the lowest.
    pub fn plan_endpoint(
        &self,
        host: &str,
        ip: Option<Ipv4Addr>,
        spread: usize,
        roll: impl Fn(usize) -> usize,
    ) -> Result<(Ipv4Addr, BlockClaim), Error> {
        self.network.check_usable_on(host)?;
        match ip {
            Some(ip) => self.plan_fixed(host, ip),
            None => self.plan_any(host, spread, roll),
        }
    }

    fn plan_fixed(&self, host: &str, ip: Ipv4Addr) -> Result<(Ipv4Addr, BlockClaim), Error> {
        let n = &self.network;
        if !n.subnet.contains(&ip) {
            return Err(Error::IpNotInSubnet { ip, subnet: n.subnet });
        }
        if let Some(why) = alloc::reserved_reason(ip, n.subnet) {
            return Err(Error::IpReserved { ip, why: why.to_string() });
        }
        if self.used.contains(&ip) {
            return Err(Error::IpTaken { ip, network: n.name.clone() });
        }
        let cidr = alloc::block_of(ip, n.subnet, n.block_prefix);
        match self.blocks.get(&cidr) {
            None => Ok((ip, BlockClaim::New(cidr))),
            Some((owner, rev)) if owner == host => Ok((ip, BlockClaim::Ours { cidr, mod_revision: *rev })),
            Some((owner, _)) => Err(Error::BlockOwnedByOtherHost { ip, block: cidr, host: owner.clone() }),
        }
    }

    fn plan_any(
        &self,
        host: &str,
        spread: usize,
        roll: impl Fn(usize) -> usize,
    ) -> Result<(Ipv4Addr, BlockClaim), Error> {
        let subnet = self.network.subnet;
        let mut candidates = Vec::new();
        for (cidr, (owner, rev)) in &self.blocks {
            if owner != host || candidates.len() >= spread {
                continue;
            }
            let claim = BlockClaim::Ours { cidr: *cidr, mod_revision: *rev };
            let free = alloc::free_ips(*cidr, subnet, &self.used, spread - candidates.len());
            candidates.extend(free.into_iter().map(|ip| (ip, claim)));
        }
        if candidates.is_empty() {
            for cidr in self.free_blocks(spread) {
                if let Some(ip) = alloc::pick_ip(cidr, subnet, &self.used) {
                    candidates.push((ip, BlockClaim::New(cidr)));
                }
            }
        }
        if candidates.is_empty() {
            return Err(self.exhausted());
        }
        let i = roll(candidates.len()).min(candidates.len() - 1);
        Ok(candidates[i])
    }
}

impl EtcdStore {
    /// Reads a network with its blocks (and endpoints, when asked) at one
    /// revision; also returns the endpoint keys as read.
    async fn view(&self, network: &str, with_endpoints: bool) -> Result<(NetworkView, Vec<Kv>), Error> {
        let keys = &self.keys;
        let mut reads = vec![Read::Key(keys.network(network)), Read::Prefix(keys.blocks_prefix(network))];
        if with_endpoints {
            reads.push(Read::Prefix(keys.endpoints_prefix(network)));
        }
        let (_, mut res) = self.read("reading a network's addresses", reads).await?;
        let endpoints = if with_endpoints { res.pop().unwrap_or_default() } else { Vec::new() };
        let Some(net) = res[0].first() else {
            return Err(Error::NetworkNotFound(network.to_string()));
        };
        Ok((NetworkView::new(keys, net, &res[1], &endpoints)?, endpoints))
    }

    /// A network and its endpoints (sorted by address), read at one revision.
    /// Unreadable endpoint records are logged and skipped.
    pub async fn network_endpoints(
        &self,
        network: &str,
    ) -> Result<(NetworkRecord, Vec<EndpointRecord>), Error> {
        let keys = &self.keys;
        let reads = vec![Read::Key(keys.network(network)), Read::Prefix(keys.endpoints_prefix(network))];
        let (_, res) = self.read("reading a network's endpoints", reads).await?;
        let Some(net) = res[0].first() else {
            return Err(Error::NetworkNotFound(network.to_string()));
        };
        let net = decode::<NetworkRecord>(&net.key, &net.value)?;
        let endpoints = res[1]
            .iter()
            .filter(|kv| matches!(keys.parse(&kv.key), Some(Key::Endpoint { .. })))
            .filter_map(|kv| match decode::<EndpointRecord>(&kv.key, &kv.value) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(key = %kv.key, reason = %e, "skipping bad record in etcd");
                    None
                }
            });
        let mut endpoints: Vec<EndpointRecord> = endpoints.collect();
        endpoints.sort_by_key(|e| e.ip);
        Ok((net, endpoints))
    }

    fn block_record(&self, network: &str, cidr: Ipv4Net, host: &str) -> BlockRecord {
        BlockRecord { v: RECORD_VERSION, network: network.to_string(), cidr, host: host.to_string() }
    }

    /// Leases a free block of `network` to `host`.
    pub async fn lease_block(&self, network: &str, host: &str) -> Result<BlockRecord, Error> {
        validate::host_name(host)?;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let (view, _) = self.view(network, false).await?;
            view.network.check_usable_on(host)?;
            let free = view.free_blocks(spread(attempt));
            let Some(&cidr) = free.get(roll(free.len())) else {
                return Err(view.exhausted());
            };
            let record = self.block_record(network, cidr, host);
            let key = self.keys.block(network, &cidr);
            let net_key = self.keys.network(network);
            let compares = vec![
                Compare::version(key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(net_key, CompareOp::Equal, view.network_mod_revision),
            ];
            let value = encode(&record);
            let ops = vec![TxnOp::put(key.clone(), value.clone(), self.owned_put())];
            let witness = Witness::Holds { key: &key, value: &value };
            if self.commit_witnessed("leasing a block", compares, ops, witness).await? {
                return Ok(record);
            }
        }
        Err(Error::Contention { what: format!("leasing a block of network {network:?} for host {host:?}") })
    }

    /// Gives an endpoint an address (and its host a block, when needed).
    pub async fn allocate_endpoint(&self, req: NewEndpoint) -> Result<EndpointRecord, Error> {
        let offer = self.offer(&req, None::<&fn(&str) -> bool>, 0).await?;
        Ok(self.claim(offer, req, None::<fn(&str) -> bool>).await?.0)
    }

    /// The first half of `allocate_endpoint` for a container namespace: one
    /// read of the network picks the address, and refuses with
    /// `Error::NetnsConnected` when `req.host` already has an endpoint in the
    /// network whose namespace `same_netns` says is this one (a name and a
    /// /proc path can name the same namespace, so the caller decides).
    /// Nothing is written; `req.ifname` is not used yet and may be filled in
    /// before `claim_endpoint`.
    pub async fn offer_endpoint(
        &self,
        req: &NewEndpoint,
        same_netns: impl Fn(&str) -> bool,
    ) -> Result<EndpointOffer, Error> {
        self.offer(req, Some(&same_netns), 0).await
    }

    /// The second half: writes the offered endpoint in one transaction. If
    /// anything the offer depended on changed meanwhile, it reads, checks and
    /// picks again (so the address may differ from the offer's). A racing
    /// connect of the same namespace on the same host is not caught by the
    /// transaction's guards, so the caller serialises its own (the agent
    /// does, per host). Returns the endpoint and the network as last read.
    pub async fn claim_endpoint(
        &self,
        offer: EndpointOffer,
        req: NewEndpoint,
        same_netns: impl Fn(&str) -> bool + Send + Sync,
    ) -> Result<(EndpointRecord, NetworkRecord), Error> {
        self.claim(offer, req, Some(same_netns)).await
    }

    async fn offer<F: Fn(&str) -> bool>(
        &self,
        req: &NewEndpoint,
        same_netns: Option<&F>,
        attempt: u32,
    ) -> Result<EndpointOffer, Error> {
        validate::network_name(&req.network)?;
        validate::host_name(&req.host)?;
        dns_names(req)?;
        let (view, endpoints) = self.view(&req.network, true).await?;
        if let Some(same) = same_netns
            && let Some(ip) = connected_here(&endpoints, &req.host, same)
        {
            let (netns, network) = (req.netns.clone(), req.network.clone());
            return Err(Error::NetnsConnected { netns, network, ip });
        }
        let decoded: Vec<EndpointRecord> = if req.name.is_empty() {
            Vec::new()
        } else {
            endpoints.iter().filter_map(|kv| decode::<EndpointRecord>(&kv.key, &kv.value).ok()).collect()
        };
        names_free(decoded.iter(), req)?;
        let (ip, claim) = view.plan_endpoint(&req.host, req.ip, spread(attempt), roll)?;
        let network_mod_revision = view.network_mod_revision;
        Ok(EndpointOffer {
            network: view.network,
            ip,
            mac: Mac::endpoint(ip),
            network_mod_revision,
            claim,
            guard: Guard::Revisions,
        })
    }

    async fn claim<F: Fn(&str) -> bool + Send + Sync>(
        &self,
        mut offer: EndpointOffer,
        req: NewEndpoint,
        same_netns: Option<F>,
    ) -> Result<(EndpointRecord, NetworkRecord), Error> {
        for attempt in 1..=MAX_ATTEMPTS {
            if let Some(record) = self.try_claim(&offer, &req).await? {
                return Ok((record, offer.network));
            }
            if attempt < MAX_ATTEMPTS {
                backoff(attempt).await;
                offer = self.offer(&req, same_netns.as_ref(), attempt).await?;
            }
        }
        Err(Error::Contention { what: format!("allocating an address in network {:?}", req.network) })
    }

    /// One transaction writing `offer`; `None` when something it depended on
    /// changed.
    async fn try_claim(
        &self,
        offer: &EndpointOffer,
        req: &NewEndpoint,
    ) -> Result<Option<EndpointRecord>, Error> {
        let ip = offer.ip;
        let record = EndpointRecord {
            v: RECORD_VERSION,
            id: req.id.clone(),
            network: req.network.clone(),
            host: req.host.clone(),
            netns: req.netns.clone(),
            ip,
            mac: offer.mac,
            ifname: req.ifname.clone(),
            host_ifname: req.host_ifname.clone(),
            created_at: now_secs(),
            container: req.container.clone(),
            name: req.name.clone(),
            aliases: req.aliases.clone(),
            ports: req.ports.clone(),
        };
        let keys = &self.keys;
        let ep_key = keys.endpoint(&req.network, ip);
        let block_key = keys.block(&req.network, &offer.claim.cidr());
        let net_key = keys.network(&req.network);
        let mut compares = vec![
            match offer.guard {
                Guard::Revisions => {
                    Compare::mod_revision(net_key, CompareOp::Equal, offer.network_mod_revision)
                }
                Guard::Values => Compare::value(net_key, CompareOp::Equal, encode(&offer.network)),
            },
            Compare::version(ep_key.clone(), CompareOp::Equal, 0),
        ];
        let mut ops = Vec::new();
        match offer.claim {
            BlockClaim::Ours { mod_revision, cidr } => compares.push(match offer.guard {
                Guard::Revisions => Compare::mod_revision(block_key, CompareOp::Equal, mod_revision),
                Guard::Values => {
                    let block = self.block_record(&req.network, cidr, &req.host);
                    Compare::value(block_key, CompareOp::Equal, encode(&block))
                }
            }),
            BlockClaim::New(cidr) => {
                compares.push(Compare::version(block_key.clone(), CompareOp::Equal, 0));
                let block = self.block_record(&req.network, cidr, &req.host);
                ops.push(TxnOp::put(block_key, encode(&block), self.owned_put()));
            }
        }
        let value = encode(&record);
        ops.push(TxnOp::put(ep_key.clone(), value.clone(), self.owned_put()));
        let won = self
            .commit_witnessed(
                "allocating an endpoint",
                compares,
                ops,
                Witness::Holds { key: &ep_key, value: &value },
            )
            .await?;
        Ok(won.then_some(record))
    }

    /// Deletes the endpoint at `ip` of `network` only while it is still the
    /// one with `id` (a cleanup must not remove a newer endpoint that got the
    /// same address). `Ok(false)` when it is gone or is another one now.
    pub async fn release_endpoint_if(&self, network: &str, ip: Ipv4Addr, id: &str) -> Result<bool, Error> {
        let key = self.keys.endpoint(network, ip);
        let (_, res) = self.read("reading an endpoint", vec![Read::Key(key.clone())]).await?;
        let Some(kv) = res.into_iter().flatten().next() else {
            return Ok(false);
        };
        match decode::<EndpointRecord>(&key, &kv.value) {
            Ok(e) if e.id == id => {}
            _ => return Ok(false),
        }
        let compares = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision)];
        let ops = vec![TxnOp::delete(key.clone(), None)];
        self.commit_witnessed("releasing an endpoint", compares, ops, Witness::Absent { key: &key }).await
    }

    /// Deletes an endpoint; its block stays with the host. One request: the
    /// deletion returns the record it removed.
    pub async fn release_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<EndpointRecord, Error> {
        let key = self.keys.endpoint(network, ip);
        let opts = DeleteOptions::new().with_prev_key();
        // Repeatable: a delete stuck on a frozen or dying member is sent to
        // the next member after a second (chaos finding: disconnects failed
        // with quorum up).
        let resp = self
            .retried("releasing an endpoint", || {
                let (mut c, key, opts) = (self.client(), key.clone(), opts.clone());
                async move { c.delete(key, Some(opts)).await }
            })
            .await?;
        let Some(kv) = resp.prev_kvs().first() else {
            return Err(Error::EndpointNotFound { network: network.to_string(), ip });
        };
        // An unreadable record is still removed; the caller gets the error.
        decode::<EndpointRecord>(&key, kv.value())
    }
}

/// Checks the DNS name and aliases of a new endpoint are valid labels.
pub(super) fn dns_names(req: &NewEndpoint) -> Result<(), Error> {
    if !req.name.is_empty() {
        validate::dns_label(&req.name)?;
    }
    req.aliases.iter().try_for_each(|a| validate::dns_label(a))
}

/// Refuses a name another endpoint of the network already has (as its
/// name: aliases may be shared). Checked against one read, not guarded by
/// the claim's transaction: two connects racing for one name on two hosts
/// can both win, and the DNS answer then holds both addresses.
pub(super) fn names_free<'a>(
    mut endpoints: impl Iterator<Item = &'a EndpointRecord>,
    req: &NewEndpoint,
) -> Result<(), Error> {
    if req.name.is_empty() {
        return Ok(());
    }
    match endpoints.find(|e| e.name == req.name) {
        Some(e) => {
            Err(Error::DnsNameTaken { name: req.name.clone(), network: req.network.clone(), ip: e.ip })
        }
        None => Ok(()),
    }
}

/// The address of `host`'s endpoint in the namespace `same_netns` accepts, if
/// there is one among `endpoints` (the raw keys of one network). Only records
/// that mention `host` are decoded: serde_json writes a host name (letters,
/// digits, '_', '.', '-') verbatim, so the others cannot be `host`'s.
fn connected_here(endpoints: &[Kv], host: &str, same_netns: impl Fn(&str) -> bool) -> Option<Ipv4Addr> {
    let mentions = |value: &[u8]| value.windows(host.len()).any(|w| w == host.as_bytes());
    endpoints
        .iter()
        .filter(|kv| mentions(&kv.value))
        .filter_map(|kv| decode::<EndpointRecord>(&kv.key, &kv.value).ok())
        .find(|e| e.host == host && same_netns(&e.netns))
        .map(|e| e.ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(subnet: &str, block_prefix: u8, blocks: &[(&str, &str)], used: &[&str]) -> NetworkView {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkView {
            network: NetworkRecord {
                v: 1,
                id: "0".into(),
                name: "n".into(),
                driver: crate::records::Driver::Overlay,
                host: None,
                subnet,
                gateway: alloc::gateway(subnet),
                vni: 4096,
                mtu: 1450,
                block_prefix,
                created_at: 0,
                internal: false,
            },
            network_mod_revision: 5,
            blocks: blocks.iter().map(|(c, h)| (c.parse().unwrap(), (h.to_string(), 3))).collect(),
            used: used.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn any_address_prefers_own_blocks_then_lowest_free_block() {
        let v = view("10.1.0.0/16", 24, &[("10.1.0.0/24", "a"), ("10.1.1.0/24", "b")], &["10.1.0.2"]);
        let (got, claim) = v.plan_endpoint("a", None, 1, |_| 0).unwrap();
        assert_eq!(got, ip("10.1.0.3"));
        assert!(matches!(claim, BlockClaim::Ours { mod_revision: 3, .. }));
        let (got, claim) = v.plan_endpoint("c", None, 1, |_| 0).unwrap();
        assert_eq!((got, claim), (ip("10.1.2.1"), BlockClaim::New("10.1.2.0/24".parse().unwrap())));
        // Spreading picks among the first candidates.
        let (got, _) = v.plan_endpoint("a", None, 4, |n| n - 1).unwrap();
        assert_eq!(got, ip("10.1.0.6"));
    }

    #[test]
    fn exhaustion() {
        let v = view("10.9.0.0/30", 30, &[], &["10.9.0.2"]);
        let e = v.plan_endpoint("a", None, 1, |_| 0).unwrap_err();
        assert_eq!(e.to_string(), r#"no free address left in network "n" (10.9.0.0/30)"#);
        let v = view("10.9.0.0/30", 30, &[("10.9.0.0/30", "b")], &[]);
        assert!(matches!(v.plan_endpoint("a", None, 1, |_| 0), Err(Error::AddressExhausted { .. })));
    }

    #[test]
    fn a_namespace_connected_here_is_found_among_the_records() {
        let record = |host: &str, netns: &str, ip: Ipv4Addr| EndpointRecord {
            v: RECORD_VERSION,
            id: "id".into(),
            network: "n".into(),
            host: host.into(),
            netns: netns.into(),
            ip,
            mac: Mac::endpoint(ip),
            ifname: "eth0".into(),
            host_ifname: "ovveid".into(),
            created_at: 0,
            container: None,
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        };
        let kv = |r: &EndpointRecord| Kv {
            key: format!("/ovnet/endpoints/n/{}", r.ip),
            value: encode(r),
            mod_revision: 1,
            lease: 0,
        };
        let mut kvs: Vec<Kv> = [
            record("a", "c1", ip("10.1.0.2")),
            record("b", "c2", ip("10.1.1.2")),
            record("ab", "c3", ip("10.1.0.4")),
        ]
        .iter()
        .map(kv)
        .collect();
        kvs.push(Kv {
            key: "/ovnet/endpoints/n/10.1.0.3".into(),
            value: b"{not json".to_vec(),
            mod_revision: 1,
            lease: 0,
        });
        let is = |ns: &'static str| move |other: &str| other == ns;
        assert_eq!(connected_here(&kvs, "a", is("c1")), Some(ip("10.1.0.2")));
        // Another host's namespace, or a host whose name contains ours, is not ours.
        assert_eq!(connected_here(&kvs, "a", is("c2")), None);
        assert_eq!(connected_here(&kvs, "a", is("c3")), None);
        assert_eq!(connected_here(&kvs, "b", is("c2")), Some(ip("10.1.1.2")));
        assert_eq!(connected_here(&kvs, "c", is("c1")), None);
    }

    #[test]
    fn a_name_is_unique_on_its_network_and_aliases_are_shared() {
        let mut taken = EndpointRecord {
            v: RECORD_VERSION,
            id: "id".into(),
            network: "n".into(),
            host: "a".into(),
            netns: "c1".into(),
            ip: ip("10.1.0.2"),
            mac: Mac::endpoint(ip("10.1.0.2")),
            ifname: "eth0".into(),
            host_ifname: "ovveid".into(),
            created_at: 0,
            container: None,
            name: "web".into(),
            aliases: vec!["www".into()],
            ports: Vec::new(),
        };
        let req = |name: &str, aliases: &[&str]| NewEndpoint {
            id: "new".into(),
            network: "n".into(),
            host: "b".into(),
            netns: "c2".into(),
            ifname: String::new(),
            host_ifname: "ovvenew".into(),
            ip: None,
            container: None,
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ports: Vec::new(),
        };
        let e = names_free([&taken].into_iter(), &req("web", &[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"name "web" is taken on network "n" by the endpoint at 10.1.0.2 (aliases may be shared, names may not)"#
        );
        assert!(names_free([&taken].into_iter(), &req("db", &["www", "web"])).is_ok());
        taken.name = String::new();
        assert!(names_free([&taken].into_iter(), &req("web", &[])).is_ok());
        assert!(matches!(dns_names(&req("Web", &[])), Err(Error::InvalidDnsName { .. })));
        assert!(matches!(dns_names(&req("web", &["a_b"])), Err(Error::InvalidDnsName { .. })));
        assert!(dns_names(&req("", &["a-b"])).is_ok());
    }

    #[test]
    fn fixed_address_rules() {
        let v = view("10.1.0.0/16", 24, &[("10.1.0.0/24", "a")], &["10.1.0.2"]);
        let plan = |host: &str, s: &str| v.plan_endpoint(host, Some(ip(s)), 1, |_| 0);
        assert!(matches!(plan("a", "10.2.0.2"), Err(Error::IpNotInSubnet { .. })));
        for reserved in ["10.1.0.0", "10.1.0.1", "10.1.255.255"] {
            assert!(matches!(plan("a", reserved), Err(Error::IpReserved { .. })), "{reserved}");
        }
        assert!(matches!(plan("a", "10.1.0.2"), Err(Error::IpTaken { .. })));
        assert!(matches!(plan("b", "10.1.0.9"), Err(Error::BlockOwnedByOtherHost { .. })));
        assert!(matches!(plan("a", "10.1.0.9"), Ok((_, BlockClaim::Ours { .. }))));
        assert_eq!(plan("b", "10.1.7.0").unwrap().1, BlockClaim::New("10.1.7.0/24".parse().unwrap()));
    }
}
