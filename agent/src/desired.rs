//! What this host's kernel should hold, computed from a cluster snapshot.
//!
//! Pure: liveness is read from the snapshot's `alive/` keys, and a host that
//! is not alive simply gets no entries (its records stay in etcd, so when it
//! returns it is programmed again without anyone reconnecting anything).
//!
//! At scale one etcd change touches one network, so the reconcile loop keeps
//! a [`Memo`] and [`desired_memo`] recomputes only the networks whose inputs
//! changed; the result is always what [`desired_with`] computes from scratch.
//!
//! A bridge network (driver `bridge`) is built only on the host it belongs
//! to, as a bridge without a VXLAN device or entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{ClusterState, Driver, EndpointMap, EndpointRecord, Mac, NetworkRecord};

use crate::model::{
    BridgeSpec, Desired, DriverDatapath, FdbEntry, Guard, NeighEntry, NetworkDatapath, OverlayDatapath,
    Published, VXLAN_OVERHEAD, VXLAN_PORT, VxlanSpec, bridge_name, vxlan_name,
};

/// Who this host is, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContext {
    pub node: String,
    pub vtep: Ipv4Addr,
    pub underlay_mtu: u32,
    /// What containers are kept from.
    pub control_plane: ControlPlane,
}

impl HostContext {
    /// The MTU a network gets here: its own, capped by what the underlay carries.
    pub fn mtu_for(&self, net: &NetworkRecord) -> u32 {
        net.mtu.min(self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD))
    }
}

/// The control plane this agent keeps containers from (nothing with
/// `--open-control-plane`): the etcd members it was given, and its own TCP
/// API and metrics listeners (`0.0.0.0:PORT` for one bound to every
/// address). The other agents' own listeners come from their host records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlPlane {
    pub etcd: BTreeSet<SocketAddrV4>,
    /// Ports of etcd endpoints whose name did not resolve.
    pub etcd_ports: BTreeSet<u16>,
    pub own: BTreeSet<SocketAddrV4>,
    /// `--open-control-plane`: this host's containers are kept from none of
    /// it (its own listeners are still published for the other hosts).
    pub open: bool,
}

impl ControlPlane {
    /// This agent's listeners as other hosts reach them: one bound to every
    /// address at the VTEP; loopback ones not at all.
    pub fn published(&self, vtep: Ipv4Addr) -> Vec<SocketAddrV4> {
        self.own
            .iter()
            .map(|a| if a.ip().is_unspecified() { SocketAddrV4::new(vtep, a.port()) } else { *a })
            .filter(|a| !a.ip().is_loopback())
            .collect()
    }

    /// The rules that keep containers from it: every port it uses, on this
    /// host (any of its addresses); every address elsewhere, the other
    /// hosts' listeners included. Loopback addresses are not routed to
    /// containers, so only their ports need a rule.
    fn guard(&self, state: &ClusterState) -> Guard {
        if self.open {
            return Guard::default();
        }
        let all = || self.etcd.iter().chain(&self.own);
        let ports = all().map(|a| a.port()).chain(self.etcd_ports.iter().copied()).collect();
        let others = state.hosts.values().flat_map(|h| h.control.iter());
        let addrs = all()
            .chain(others)
            .filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified())
            .copied()
            .collect();
        Guard { ports, addrs }
    }
}

/// The VTEPs of registered hosts that are not among `peers` (nor this
/// host, nor a VTEP a live peer holds now): cut off.
fn cut_off(state: &ClusterState, me: &HostContext, peers: &BTreeMap<String, Ipv4Addr>) -> BTreeSet<Ipv4Addr> {
    let live: BTreeSet<Ipv4Addr> = peers.values().copied().collect();
    state
        .hosts
        .values()
        .filter(|h| h.name != me.node && !peers.contains_key(&h.name))
        .map(|h| h.vtep)
        .filter(|v| *v != me.vtep && !live.contains(v))
        .collect()
}

/// The desired datapath of every network in the snapshot, toward the peers
/// whose `alive/` key it holds.
pub fn desired(state: &ClusterState, me: &HostContext) -> Desired {
    let peers: BTreeMap<String, Ipv4Addr> =
        state.alive.values().filter(|a| a.name != me.node).map(|a| (a.name.clone(), a.vtep)).collect();
    desired_with(state, me, &peers)
}

/// `desired`, toward the given live peers (name -> VTEP).
pub fn desired_with(state: &ClusterState, me: &HostContext, peers: &BTreeMap<String, Ipv4Addr>) -> Desired {
    desired_memo(state, me, peers, &mut Memo::default())
}

/// Each network's datapath from an earlier [`desired_memo`], with the inputs
/// it was computed from.
#[derive(Debug, Default)]
pub struct Memo {
    me: Option<HostContext>,
    peers: BTreeMap<String, Ipv4Addr>,
    /// By network name.
    networks: BTreeMap<String, Memoised>,
    /// How many datapaths the last call computed from scratch.
    computed: usize,
    /// How many it brought up to date from the endpoints that changed.
    updated: usize,
}

#[derive(Debug)]
struct Memoised {
    net: NetworkRecord,
    /// The network's endpoint map the datapath was computed from; a map
    /// that is the same allocation is unchanged (the state copies a
    /// network's map on its first change, and a record on any change).
    endpoints: Option<Arc<EndpointMap>>,
    datapath: Arc<NetworkDatapath>,
    tally: Tally,
}

impl Memo {
    /// How many networks the last [`desired_memo`] computed from scratch.
    pub fn computed(&self) -> usize {
        self.computed
    }

    /// How many networks the last [`desired_memo`] updated from the
    /// endpoints that changed in them.
    pub fn updated(&self) -> usize {
        self.updated
    }
}

/// What an update of a network's entries needs besides the entries.
#[derive(Debug, Default)]
struct Tally {
    /// Remote endpoints toward each peer's VTEP: it has a flood entry while
    /// there are some.
    remote: BTreeMap<Ipv4Addr, usize>,
    /// Whether every FDB entry, neighbour and port comes from exactly one
    /// endpoint, so an endpoint that goes takes its own with it. When not
    /// (two records with one MAC or veth, an all-zeros MAC), each change
    /// computes the network from scratch.
    exact: bool,
}

/// At most this share (1/n) of a network's endpoints may have changed for
/// an update to be cheaper than computing the network afresh.
const UPDATE_SHARE: usize = 8;

/// `desired_with`, reusing from `memo` the datapath of every network whose
/// record and endpoint map are those it was computed from, as long as the
/// host context and the peers are too; a network where only a few endpoint
/// records changed is updated from them. `memo` then holds this call's
/// inputs. The result is always what `desired_with` computes.
pub fn desired_memo(
    state: &ClusterState,
    me: &HostContext,
    peers: &BTreeMap<String, Ipv4Addr>,
    memo: &mut Memo,
) -> Desired {
    if memo.me.as_ref() != Some(me) || memo.peers != *peers {
        memo.networks.clear();
        memo.me = Some(me.clone());
        memo.peers.clone_from(peers);
    }
    memo.networks.retain(|name, _| state.networks.contains_key(name));
    (memo.computed, memo.updated) = (0, 0);
    let mut networks = BTreeMap::new();
    // Another host's bridge network has nothing on this host.
    for net in state.networks.values().filter(|n| n.usable_on(&me.node)) {
        let endpoints = state.endpoint_map(&net.name);
        let m = match memo.networks.get_mut(&net.name).filter(|m| m.net == *net) {
            Some(m) => match (&m.endpoints, endpoints) {
                (None, None) => m,
                (Some(old), Some(new)) if Arc::ptr_eq(old, new) => m,
                (Some(old), Some(new)) if m.tally.exact => match changes(old, new) {
                    Some(changes) => {
                        let dp = Arc::make_mut(&mut m.datapath);
                        for ep in changes.iter().filter_map(|(old, _)| *old) {
                            remove(dp, &mut m.tally, ep, me, peers);
                        }
                        for ep in changes.iter().filter_map(|(_, new)| *new) {
                            add(dp, &mut m.tally, ep, me, peers);
                        }
                        m.endpoints = Some(new.clone());
                        memo.updated += 1;
                        m
                    }
                    None => compute(&mut memo.networks, &mut memo.computed, net, endpoints, me, peers),
                },
                _ => compute(&mut memo.networks, &mut memo.computed, net, endpoints, me, peers),
            },
            None => compute(&mut memo.networks, &mut memo.computed, net, endpoints, me, peers),
        };
        networks.insert(m.datapath.bridge.name.clone(), m.datapath.clone());
    }
    Desired { networks, guard: me.control_plane.guard(state), cut: cut_off(state, me, peers) }
}

/// Computes one network from scratch into the memo.
fn compute<'a>(
    memoised: &'a mut BTreeMap<String, Memoised>,
    computed: &mut usize,
    net: &NetworkRecord,
    endpoints: Option<&Arc<EndpointMap>>,
    me: &HostContext,
    peers: &BTreeMap<String, Ipv4Addr>,
) -> &'a mut Memoised {
    *computed += 1;
    let mut dp = empty_datapath(net, me);
    let mut tally = Tally { exact: true, ..Tally::default() };
    for ep in endpoints.into_iter().flat_map(|m| m.values()) {
        add(&mut dp, &mut tally, ep, me, peers);
    }
    let m = Memoised { net: net.clone(), endpoints: endpoints.cloned(), datapath: Arc::new(dp), tally };
    match memoised.entry(net.name.clone()) {
        std::collections::btree_map::Entry::Occupied(mut e) => {
            e.insert(m);
            e.into_mut()
        }
        std::collections::btree_map::Entry::Vacant(e) => e.insert(m),
    }
}

/// The endpoints that differ between two maps of a network: (old, new)
/// records by address, `None` where there is none; `None` when there are
/// too many for an update to pay.
fn changes<'a>(
    old: &'a EndpointMap,
    new: &'a EndpointMap,
) -> Option<Vec<(Option<&'a EndpointRecord>, Option<&'a EndpointRecord>)>> {
    let limit = new.len().max(old.len()) / UPDATE_SHARE + 1;
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let change = match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return Some(out),
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                let change = (!Arc::ptr_eq(va, vb)).then(|| (Some(va.as_ref()), Some(vb.as_ref())));
                a.next();
                b.next();
                change
            }
            (Some((ka, va)), Some((kb, _))) if ka < kb => {
                let change = Some((Some(va.as_ref()), None));
                a.next();
                change
            }
            (Some((_, va)), None) => {
                let change = Some((Some(va.as_ref()), None));
                a.next();
                change
            }
            (_, Some((_, vb))) => {
                let change = Some((None, Some(vb.as_ref())));
                b.next();
                change
            }
        };
        if let Some(change) = change {
            out.push(change);
            if out.len() > limit {
                return None;
            }
        }
    }
}

/// What one endpoint puts in its network's datapath on this host.
enum Part<'a> {
    /// A local endpoint: its veth is a port of the bridge.
    Port(&'a str),
    /// An endpoint on a live peer: its MAC behind the peer's VTEP, its address.
    Remote(FdbEntry, NeighEntry),
    /// An endpoint on a host that is not alive (or claims our VTEP).
    Nothing,
}

fn part<'a>(ep: &'a EndpointRecord, me: &HostContext, peers: &BTreeMap<String, Ipv4Addr>) -> Part<'a> {
    if ep.host == me.node {
        return Part::Port(&ep.host_ifname);
    }
    match peers.get(ep.host.as_str()) {
        Some(&dst) if dst != me.vtep => {
            Part::Remote(FdbEntry { mac: ep.mac, dst }, NeighEntry { ip: ep.ip, mac: ep.mac })
        }
        _ => Part::Nothing,
    }
}

fn add(
    dp: &mut NetworkDatapath,
    tally: &mut Tally,
    ep: &EndpointRecord,
    me: &HostContext,
    peers: &BTreeMap<String, Ipv4Addr>,
) {
    match part(ep, me, peers) {
        Part::Port(port) => {
            tally.exact &= dp.ports.insert(port.to_string());
            for p in published(ep, me) {
                tally.exact &= dp.published.insert(p);
            }
        }
        Part::Remote(fdb, neigh) => {
            // A bridge network has no way to another host's endpoints.
            let Some(dp) = dp.overlay_mut() else { return };
            let count = tally.remote.entry(fdb.dst).or_default();
            *count += 1;
            if *count == 1 {
                dp.fdb.insert(FdbEntry { mac: Mac::ZERO, dst: fdb.dst });
            }
            // An all-zeros MAC is the flood entry just made sure of: not new.
            tally.exact &= dp.fdb.insert(fdb);
            tally.exact &= dp.neigh.insert(neigh);
        }
        Part::Nothing => {}
    }
}

/// Takes out what `ep` added; only right while `tally.exact`.
fn remove(
    dp: &mut NetworkDatapath,
    tally: &mut Tally,
    ep: &EndpointRecord,
    me: &HostContext,
    peers: &BTreeMap<String, Ipv4Addr>,
) {
    match part(ep, me, peers) {
        Part::Port(port) => {
            dp.ports.remove(port);
            for p in published(ep, me) {
                dp.published.remove(&p);
            }
        }
        Part::Remote(fdb, neigh) => {
            let Some(dp) = dp.overlay_mut() else { return };
            dp.fdb.remove(&fdb);
            dp.neigh.remove(&neigh);
            if let Some(count) = tally.remote.get_mut(&fdb.dst) {
                *count -= 1;
                if *count == 0 {
                    tally.remote.remove(&fdb.dst);
                    dp.fdb.remove(&FdbEntry { mac: Mac::ZERO, dst: fdb.dst });
                }
            }
        }
        Part::Nothing => {}
    }
}

/// The ports of this host published to local endpoint `ep` (a host port
/// of 0 was never written; such a mapping is skipped).
pub fn published<'a>(ep: &'a EndpointRecord, me: &HostContext) -> impl Iterator<Item = Published> + use<'a> {
    let (ip, vtep) = (ep.ip, me.vtep);
    ep.ports.iter().filter(|p| p.host_port != 0 && p.port != 0).map(move |p| Published {
        proto: p.proto,
        host_ip: p.host_ip.unwrap_or(vtep),
        host_port: p.host_port,
        ip,
        port: p.port,
    })
}

/// A network's bridge (and an overlay network's VXLAN device), without
/// entries or ports yet.
fn empty_datapath(net: &NetworkRecord, me: &HostContext) -> NetworkDatapath {
    let mtu = me.mtu_for(net);
    let bridge = bridge_name(net.vni);
    let driver = match net.driver {
        Driver::Overlay => DriverDatapath::Overlay(OverlayDatapath {
            vxlan: VxlanSpec {
                name: vxlan_name(net.vni),
                vni: net.vni,
                local: me.vtep,
                port: VXLAN_PORT,
                mtu,
                master: bridge.clone(),
            },
            fdb: BTreeSet::new(),
            neigh: BTreeSet::new(),
        }),
        Driver::Bridge => DriverDatapath::Bridge,
    };
    NetworkDatapath {
        network: net.name.clone(),
        bridge: BridgeSpec {
            name: bridge,
            mac: Mac::gateway(net.gateway),
            addr: Ipv4Net::new(net.gateway, net.subnet.prefix_len()).unwrap_or(net.subnet),
            mtu,
        },
        driver,
        ports: BTreeSet::new(),
        internal: net.internal,
        published: BTreeSet::new(),
    }
}

#[cfg(test)]
#[path = "desired_nat_tests.rs"]
mod nat_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint as ep, me, network as net};
    use ovnet_ipam_store::AliveRecord;

    fn alive(name: &str, vtep: [u8; 4]) -> AliveRecord {
        AliveRecord { v: 1, name: name.into(), vtep: vtep.into(), started_at: 0 }
    }

    fn ov(n: &NetworkDatapath) -> &OverlayDatapath {
        n.overlay().expect("an overlay network")
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.networks.insert("blue".into(), net("blue", 4096, "10.128.0.0/16"));
        for (n, v) in [("h1", [192, 0, 2, 1]), ("h2", [192, 0, 2, 2]), ("h3", [192, 0, 2, 3])] {
            s.alive.insert(n.into(), alive(n, v));
        }
        for e in [
            ep("blue", "h1", [10, 128, 0, 2]),
            ep("blue", "h2", [10, 128, 1, 0]),
            ep("blue", "h2", [10, 128, 1, 1]),
            ep("blue", "h4", [10, 128, 3, 1]), // h4 is not alive
        ] {
            s.insert_endpoint(e);
        }
        s
    }

    #[test]
    fn builds_bridge_with_anycast_gateway_and_vxlan() {
        let d = desired(&state(), &me());
        let n = &d.networks["ovbr4096"];
        assert_eq!(n.bridge.addr.to_string(), "10.128.0.1/16");
        assert_eq!(n.bridge.mac.to_string(), "02:00:0a:80:00:01");
        assert_eq!(ov(n).vxlan.name, "ovvx4096");
        assert_eq!(ov(n).vxlan.local, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ov(n).vxlan.port, 4789);
        assert_eq!(ov(n).vxlan.mtu, 1450);
        assert_eq!(n.ports, BTreeSet::from(["ovve2".to_string()]));
    }

    #[test]
    fn remote_endpoints_of_live_hosts_get_fdb_neigh_and_one_flood_entry_per_host() {
        let d = desired(&state(), &me());
        let n = &d.networks["ovbr4096"];
        let h2: Ipv4Addr = [192, 0, 2, 2].into();
        let floods: Vec<_> = ov(n).fdb.iter().filter(|e| e.mac.is_zero()).collect();
        assert_eq!(floods, vec![&FdbEntry { mac: Mac::ZERO, dst: h2 }]);
        assert_eq!(ov(n).fdb.len(), 3, "two unicast + one flood: {:?}", ov(n).fdb);
        assert_eq!(ov(n).neigh.len(), 2);
        assert!(ov(n).neigh.iter().all(|e| e.ip.octets()[2] == 1), "only h2's: {:?}", ov(n).neigh);
    }

    #[test]
    fn host_without_endpoints_gets_no_flood_entry_and_dead_host_nothing() {
        let mut s = state();
        s.alive.remove("h2");
        let d = desired(&s, &me());
        let n = &d.networks["ovbr4096"];
        assert!(ov(n).fdb.is_empty(), "{:?}", ov(n).fdb);
        assert!(ov(n).neigh.is_empty());
    }

    #[test]
    fn mtu_is_capped_by_underlay() {
        let mut ctx = me();
        ctx.underlay_mtu = 1400;
        let d = desired(&state(), &ctx);
        assert_eq!(d.networks["ovbr4096"].bridge.mtu, 1350);
        ctx.underlay_mtu = 9000;
        let d = desired(&state(), &ctx);
        assert_eq!(ov(&d.networks["ovbr4096"]).vxlan.mtu, 1450, "the network's own MTU wins when smaller");
    }

    fn peers(s: &ClusterState, ctx: &HostContext) -> BTreeMap<String, Ipv4Addr> {
        s.alive.values().filter(|a| a.name != ctx.node).map(|a| (a.name.clone(), a.vtep)).collect()
    }

    /// `desired_memo` on `s`, checked against a fresh computation and for
    /// how many networks it computed and updated.
    fn check(
        s: &ClusterState,
        ctx: &HostContext,
        memo: &mut Memo,
        computed: usize,
        updated: usize,
    ) -> Desired {
        let d = desired_memo(s, ctx, &peers(s, ctx), memo);
        assert_eq!(d, desired(s, ctx), "as from scratch");
        assert_eq!((memo.computed(), memo.updated()), (computed, updated), "computed, updated");
        d
    }

    #[test]
    fn memo_recomputes_only_what_changed_and_equals_a_fresh_computation() {
        let mut s = state();
        s.networks.insert("red".into(), net("red", 4097, "10.129.0.0/16"));
        s.networks.insert("green".into(), net("green", 4098, "10.130.0.0/16"));
        s.insert_endpoint(ep("red", "h3", [10, 129, 0, 2]));
        let ctx = me();
        let mut memo = Memo::default();
        let first = check(&s, &ctx, &mut memo, 3, 0);
        let same = check(&s, &ctx, &mut memo, 0, 0);
        assert!(first.networks.iter().all(|(k, n)| Arc::ptr_eq(n, &same.networks[k])), "all reused");
        drop(same);

        // One more endpoint in red, on a copy (as the watch makes one while
        // the last snapshot is held): red alone is updated.
        let mut s2 = s.clone();
        s2.insert_endpoint(ep("red", "h2", [10, 129, 1, 7]));
        let d = check(&s2, &ctx, &mut memo, 0, 1);
        assert!(Arc::ptr_eq(&d.networks["ovbr4096"], &first.networks["ovbr4096"]), "blue reused");
        assert!(Arc::ptr_eq(&d.networks["ovbr4098"], &first.networks["ovbr4098"]), "green reused");
        assert_eq!(ov(&d.networks["ovbr4097"]).neigh.len(), 2);
        assert_eq!(ov(&first.networks["ovbr4097"]).neigh.len(), 1, "an earlier result is never changed");

        // Green's first endpoint, red's last gone, blue's record changed.
        let mut s3 = s2.clone();
        s3.insert_endpoint(ep("green", "h3", [10, 130, 0, 9]));
        s3.endpoints.remove("red");
        s3.networks.get_mut("blue").expect("blue").mtu = 1300;
        check(&s3, &ctx, &mut memo, 3, 0);
        check(&s3, &ctx, &mut memo, 0, 0);

        // A network goes, then comes back; a peer goes; the host context changes.
        let mut s4 = s3.clone();
        s4.networks.remove("green");
        check(&s4, &ctx, &mut memo, 0, 0);
        check(&s3, &ctx, &mut memo, 1, 0);
        s4 = s3.clone();
        s4.alive.remove("h3");
        check(&s4, &ctx, &mut memo, 3, 0);
        check(&s4, &HostContext { underlay_mtu: 1400, ..me() }, &mut memo, 3, 0);
    }

    #[test]
    fn memo_follows_a_stream_of_random_changes() {
        let ctx = me();
        let mut s = state();
        s.networks.insert("red".into(), net("red", 4097, "10.129.0.0/16"));
        let mut memo = Memo::default();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n) as u8
        };
        let (mut computed, mut updated) = (0, 0);
        for _ in 0..2000 {
            let before = s.clone();
            let network = ["blue", "red"][usize::from(next(2))];
            let ip = [10, 128 + u8::from(network == "red"), 0, next(40)];
            let mut e = ep(network, ["h1", "h2", "h3", "h4"][usize::from(next(4))], ip);
            match next(20) {
                0 => e.mac = Mac::ZERO,
                1 => e.mac = Mac::endpoint([10, 128, 0, 1].into()),
                2 => e.host_ifname = "ovveshared".into(),
                _ => {}
            }
            if next(3) == 0 {
                let k = ovnet_ipam_store::Keys::new("/t");
                s.apply(&k, &k.endpoint(network, ip.into()), None).expect("a delete");
            } else {
                s.insert_endpoint(e);
            }
            if next(50) == 0 {
                s.networks.get_mut(network).expect("network").mtu = 1400 + u32::from(next(2));
            }
            let d = desired_memo(&s, &ctx, &peers(&s, &ctx), &mut memo);
            assert_eq!(d, desired(&s, &ctx));
            (computed, updated) = (computed + memo.computed(), updated + memo.updated());
            drop(before);
        }
        assert!(updated > 500, "many changes are updates: {updated} updated, {computed} computed");
        assert!(computed > 20, "odd records are computed afresh: {computed}");
    }

    #[test]
    fn networks_do_not_share_entries() {
        let mut s = state();
        s.networks.insert("red".into(), net("red", 4097, "10.129.0.0/16"));
        s.insert_endpoint(ep("red", "h3", [10, 129, 0, 2]));
        let d = desired(&s, &me());
        let red = &d.networks["ovbr4097"];
        assert_eq!(ov(red).neigh.len(), 1);
        assert!(ov(red).fdb.iter().all(|e| e.dst == Ipv4Addr::new(192, 0, 2, 3)));
        let blue = &d.networks["ovbr4096"];
        assert!(ov(blue).fdb.iter().all(|e| e.dst == Ipv4Addr::new(192, 0, 2, 2)));
    }
}
