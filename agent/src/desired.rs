//! What this host's kernel should hold, computed from a cluster snapshot.
//!
//! Pure: liveness is read from the snapshot's `alive/` keys, and a host that
//! is not alive simply gets no entries (its records stay in etcd, so when it
//! returns it is programmed again without anyone reconnecting anything).
//!
//! At scale one etcd change touches one network, so the reconcile loop keeps
//! a [`Memo`] and [`desired_memo`] recomputes only the networks whose inputs
//! changed; the result is always what [`desired_with`] computes from scratch.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{ClusterState, EndpointRecord, Mac, NetworkRecord};

use crate::model::{
    BridgeSpec, Desired, FdbEntry, NeighEntry, NetworkDatapath, VXLAN_OVERHEAD, VXLAN_PORT, VxlanSpec,
    bridge_name, vxlan_name,
};

/// Who this host is, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContext {
    pub node: String,
    pub vtep: Ipv4Addr,
    pub underlay_mtu: u32,
}

impl HostContext {
    /// The MTU a network gets here: its own, capped by what the underlay carries.
    pub fn mtu_for(&self, net: &NetworkRecord) -> u32 {
        net.mtu.min(self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD))
    }
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
    /// How many datapaths the last call computed (the rest were reused).
    computed: usize,
}

#[derive(Debug)]
struct Memoised {
    net: NetworkRecord,
    /// The network's endpoint map the datapath was computed from; a map
    /// that is the same allocation is unchanged (the state copies a
    /// network's map on its first change).
    endpoints: Option<Arc<BTreeMap<Ipv4Addr, EndpointRecord>>>,
    datapath: Arc<NetworkDatapath>,
}

impl Memo {
    /// How many networks the last [`desired_memo`] computed afresh.
    pub fn computed(&self) -> usize {
        self.computed
    }
}

/// `desired_with`, reusing from `memo` the datapath of every network whose
/// record and endpoint map are those it was computed from, as long as the
/// host context and the peers are too; `memo` then holds this call's inputs.
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
    memo.computed = 0;
    let mut networks = BTreeMap::new();
    for net in state.networks.values() {
        let endpoints = state.endpoint_map(&net.name);
        let unchanged = |m: &Memoised| {
            m.net == *net
                && match (&m.endpoints, endpoints) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        let datapath = match memo.networks.get(&net.name).filter(|m| unchanged(m)) {
            Some(m) => m.datapath.clone(),
            None => {
                memo.computed += 1;
                let datapath = Arc::new(network_datapath(net, state, me, peers));
                let m =
                    Memoised { net: net.clone(), endpoints: endpoints.cloned(), datapath: datapath.clone() };
                memo.networks.insert(net.name.clone(), m);
                datapath
            }
        };
        networks.insert(datapath.bridge.name.clone(), datapath);
    }
    Desired { networks }
}

fn network_datapath(
    net: &NetworkRecord,
    state: &ClusterState,
    me: &HostContext,
    peers: &BTreeMap<String, Ipv4Addr>,
) -> NetworkDatapath {
    let mtu = me.mtu_for(net);
    let bridge = bridge_name(net.vni);
    let mut fdb = BTreeSet::new();
    let mut neigh = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut flood = BTreeSet::new();
    for ep in state.endpoints_of(&net.name) {
        if ep.host == me.node {
            ports.insert(ep.host_ifname.clone());
            continue;
        }
        let Some(&dst) = peers.get(ep.host.as_str()) else {
            continue;
        };
        if dst == me.vtep {
            continue;
        }
        fdb.insert(FdbEntry { mac: ep.mac, dst });
        neigh.insert(NeighEntry { ip: ep.ip, mac: ep.mac });
        flood.insert(dst);
    }
    fdb.extend(flood.into_iter().map(|dst| FdbEntry { mac: Mac::ZERO, dst }));
    NetworkDatapath {
        network: net.name.clone(),
        bridge: BridgeSpec {
            name: bridge.clone(),
            mac: Mac::gateway(net.gateway),
            addr: Ipv4Net::new(net.gateway, net.subnet.prefix_len()).unwrap_or(net.subnet),
            mtu,
        },
        vxlan: VxlanSpec {
            name: vxlan_name(net.vni),
            vni: net.vni,
            local: me.vtep,
            port: VXLAN_PORT,
            mtu,
            master: bridge,
        },
        fdb,
        neigh,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint as ep, network as net};
    use ovnet_ipam_store::AliveRecord;

    fn alive(name: &str, vtep: [u8; 4]) -> AliveRecord {
        AliveRecord { v: 1, name: name.into(), vtep: vtep.into(), started_at: 0 }
    }

    fn me() -> HostContext {
        HostContext { node: "h1".into(), vtep: [192, 0, 2, 1].into(), underlay_mtu: 1500 }
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
        assert_eq!(n.vxlan.name, "ovvx4096");
        assert_eq!(n.vxlan.local, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(n.vxlan.port, 4789);
        assert_eq!(n.vxlan.mtu, 1450);
        assert_eq!(n.ports, BTreeSet::from(["ovve2".to_string()]));
    }

    #[test]
    fn remote_endpoints_of_live_hosts_get_fdb_neigh_and_one_flood_entry_per_host() {
        let d = desired(&state(), &me());
        let n = &d.networks["ovbr4096"];
        let h2: Ipv4Addr = [192, 0, 2, 2].into();
        let floods: Vec<_> = n.fdb.iter().filter(|e| e.mac.is_zero()).collect();
        assert_eq!(floods, vec![&FdbEntry { mac: Mac::ZERO, dst: h2 }]);
        assert_eq!(n.fdb.len(), 3, "two unicast + one flood: {:?}", n.fdb);
        assert_eq!(n.neigh.len(), 2);
        assert!(n.neigh.iter().all(|e| e.ip.octets()[2] == 1), "only h2's: {:?}", n.neigh);
    }

    #[test]
    fn host_without_endpoints_gets_no_flood_entry_and_dead_host_nothing() {
        let mut s = state();
        s.alive.remove("h2");
        let d = desired(&s, &me());
        let n = &d.networks["ovbr4096"];
        assert!(n.fdb.is_empty(), "{:?}", n.fdb);
        assert!(n.neigh.is_empty());
    }

    #[test]
    fn mtu_is_capped_by_underlay() {
        let mut ctx = me();
        ctx.underlay_mtu = 1400;
        let d = desired(&state(), &ctx);
        assert_eq!(d.networks["ovbr4096"].bridge.mtu, 1350);
        ctx.underlay_mtu = 9000;
        let d = desired(&state(), &ctx);
        assert_eq!(d.networks["ovbr4096"].vxlan.mtu, 1450, "the network's own MTU wins when smaller");
    }

    #[test]
    fn memo_recomputes_only_what_changed_and_equals_a_fresh_computation() {
        let mut s = state();
        s.networks.insert("red".into(), net("red", 4097, "10.129.0.0/16"));
        s.networks.insert("green".into(), net("green", 4098, "10.130.0.0/16"));
        s.insert_endpoint(ep("red", "h3", [10, 129, 0, 2]));
        let ctx = me();
        let peers = |s: &ClusterState| {
            let d = s.alive.values().filter(|a| a.name != ctx.node);
            d.map(|a| (a.name.clone(), a.vtep)).collect::<BTreeMap<_, _>>()
        };
        let mut memo = Memo::default();
        let check = |s: &ClusterState, memo: &mut Memo, computed: usize| {
            let d = desired_memo(s, &ctx, &peers(s), memo);
            assert_eq!(d, desired(s, &ctx), "as from scratch");
            assert_eq!(memo.computed(), computed);
            d
        };
        let first = check(&s, &mut memo, 3);
        let same = check(&s, &mut memo, 0);
        assert!(first.networks.iter().all(|(k, n)| Arc::ptr_eq(n, &same.networks[k])), "all reused");

        // One more endpoint in red, on a copy (as the watch makes one while
        // the last snapshot is held): red alone is computed again.
        let mut s2 = s.clone();
        s2.insert_endpoint(ep("red", "h2", [10, 129, 1, 7]));
        let d = check(&s2, &mut memo, 1);
        assert!(Arc::ptr_eq(&d.networks["ovbr4096"], &first.networks["ovbr4096"]), "blue reused");
        assert!(Arc::ptr_eq(&d.networks["ovbr4098"], &first.networks["ovbr4098"]), "green reused");
        assert_eq!(d.networks["ovbr4097"].neigh.len(), 2);

        // Green's first endpoint, red's last gone, blue's record changed.
        let mut s3 = s2.clone();
        s3.insert_endpoint(ep("green", "h3", [10, 130, 0, 9]));
        s3.endpoints.remove("red");
        s3.networks.get_mut("blue").expect("blue").mtu = 1300;
        check(&s3, &mut memo, 3);
        check(&s3, &mut memo, 0);

        // A network goes, then comes back; a peer goes; the host context changes.
        let mut s4 = s3.clone();
        s4.networks.remove("green");
        check(&s4, &mut memo, 0);
        check(&s3, &mut memo, 1);
        s4 = s3.clone();
        s4.alive.remove("h3");
        check(&s4, &mut memo, 3);
        let d = desired_memo(&s4, &HostContext { underlay_mtu: 1400, ..me() }, &peers(&s4), &mut memo);
        assert_eq!(d, desired(&s4, &HostContext { underlay_mtu: 1400, ..me() }));
        assert_eq!(memo.computed(), 3);
    }

    #[test]
    fn networks_do_not_share_entries() {
        let mut s = state();
        s.networks.insert("red".into(), net("red", 4097, "10.129.0.0/16"));
        s.insert_endpoint(ep("red", "h3", [10, 129, 0, 2]));
        let d = desired(&s, &me());
        let red = &d.networks["ovbr4097"];
        assert_eq!(red.neigh.len(), 1);
        assert!(red.fdb.iter().all(|e| e.dst == Ipv4Addr::new(192, 0, 2, 3)));
        let blue = &d.networks["ovbr4096"];
        assert!(blue.fdb.iter().all(|e| e.dst == Ipv4Addr::new(192, 0, 2, 2)));
    }
}
