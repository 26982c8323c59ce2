//! A recording dataplane for tests of the reconcile loop: it keeps an
//! `Observed` in memory and applies ops to it the way the kernel would.
//! Tampering with it (drift) wakes its `changes()` subscribers, as a netlink
//! notification would.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{AttachSpec, Changes, Dataplane, DataplaneError, DeviceFacts, HostFacts, Underlay};
use crate::model::{FdbEntry, FirewallState, LinkKind, NeighEntry, Observed, ObservedLink};
use crate::op::Op;
use tokio::sync::mpsc::error::TrySendError;

/// An in-memory kernel. Clones share state.
#[derive(Clone, Default)]
pub struct FakeDataplane {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    observed: Observed,
    /// Calls of `observe` (a read of the whole kernel) and of `observe_cached`.
    observes: (usize, usize),
    applied: Vec<Op>,
    next_index: u32,
    subscribers: Vec<tokio::sync::mpsc::Sender<()>>,
    /// Active features by device, for `facts`; unknown devices have none.
    features: BTreeMap<String, DeviceFacts>,
    kernel: Option<String>,
}

impl FakeDataplane {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panic while holding the lock only happens inside a failing test.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every op applied so far, in order.
    pub fn applied(&self) -> Vec<Op> {
        self.state().applied.clone()
    }

    /// Forgets the applied ops (the kernel state stays).
    pub fn clear_applied(&self) {
        self.state().applied.clear();
    }

    /// Changes the fake kernel behind the agent's back (drift) and wakes
    /// the `changes()` subscribers.
    pub fn tamper(&self, f: impl FnOnce(&mut Observed)) {
        let mut st = self.state();
        f(&mut st.observed);
        st.subscribers.retain(|tx| !matches!(tx.try_send(()), Err(TrySendError::Closed(_))));
    }

    /// Changes the fake kernel without any notification (a missed event).
    pub fn tamper_silently(&self, f: impl FnOnce(&mut Observed)) {
        f(&mut self.state().observed);
    }

    /// What `facts` reports for `device`.
    pub fn set_device_facts(&self, device: &str, facts: DeviceFacts) {
        self.state().features.insert(device.to_string(), facts);
    }

    /// The kernel release `facts` reports (default `6.1.0-fake`).
    pub fn set_kernel(&self, release: &str) {
        self.state().kernel = Some(release.to_string());
    }

    /// How often the kernel was read in full (`observe`) and from the
    /// notification view (`observe_cached`).
    pub fn observes(&self) -> (usize, usize) {
        self.state().observes
    }

    pub fn snapshot(&self) -> Observed {
        self.state().observed.clone()
    }
}

fn new_link(st: &mut FakeState, name: &str, kind: LinkKind, mtu: u32) -> ObservedLink {
    st.next_index += 1;
    ObservedLink {
        name: name.to_string(),
        index: st.next_index,
        kind,
        mtu,
        mac: None,
        up: true,
        master: None,
        addrs: Default::default(),
    }
}

fn apply_one(st: &mut FakeState, op: &Op) {
    let obs = &mut st.observed;
    match op {
        Op::CreateBridge { name, mac, mtu } => {
            if !obs.links.contains_key(name) {
                let mut l = new_link(st, name, LinkKind::Bridge, *mtu);
                l.mac = Some(*mac);
                st.observed.links.insert(name.clone(), l);
            }
        }
        Op::CreateVxlan { name, vni, local, port, mtu, master } => {
            if !obs.links.contains_key(name) {
                let kind = LinkKind::Vxlan {
                    vni: *vni,
                    local: Some(*local),
                    port: *port,
                    learning: false,
                    proxy: true,
                };
                let mut l = new_link(st, name, kind, *mtu);
                l.master = Some(master.clone());
                st.observed.links.insert(name.clone(), l);
            }
        }
        Op::DeleteLink { name } => {
            obs.links.remove(name);
            obs.fdb.remove(name);
            obs.neigh.remove(name);
        }
        Op::SetMac { name, mac } => link(obs, name, |l| l.mac = Some(*mac)),
        Op::SetMtu { name, mtu } => link(obs, name, |l| l.mtu = *mtu),
        Op::SetMaster { name, master } => link(obs, name, |l| l.master = Some(master.clone())),
        Op::SetUp { name } => link(obs, name, |l| l.up = true),
        Op::AddAddr { dev, addr } => link(obs, dev, |l| {
            l.addrs.insert(*addr);
        }),
        Op::DelAddr { dev, addr } => link(obs, dev, |l| {
            l.addrs.remove(addr);
        }),
        Op::AddFdb { dev, mac, dst } => {
            let entries = obs.fdb.entry(dev.clone()).or_default();
            if !mac.is_zero() {
                entries.retain(|e| e.mac != *mac);
            }
            entries.insert(FdbEntry { mac: *mac, dst: *dst });
        }
        Op::DelFdb { dev, mac, dst } => {
            if let Some(entries) = obs.fdb.get_mut(dev) {
                entries.remove(&FdbEntry { mac: *mac, dst: *dst });
            }
        }
        Op::AddNeigh { dev, ip, mac } => {
            let entries = obs.neigh.entry(dev.clone()).or_default();
            entries.retain(|e| e.ip != *ip);
            entries.insert(NeighEntry { ip: *ip, mac: *mac });
        }
        Op::DelNeigh { dev, ip } => {
            if let Some(entries) = obs.neigh.get_mut(dev) {
                entries.retain(|e| e.ip != *ip);
            }
        }
        Op::SyncFirewall { firewall } => obs.firewall = FirewallState::Rules(firewall.clone()),
    }
}

fn link(obs: &mut Observed, name: &str, f: impl FnOnce(&mut ObservedLink)) {
    if let Some(l) = obs.links.get_mut(name) {
        f(l);
    }
}

impl Dataplane for FakeDataplane {
    async fn observe(&self) -> Result<Observed, DataplaneError> {
        let mut st = self.state();
        st.observes.0 += 1;
        Ok(st.observed.clone())
    }

    /// The fake kernel is its own exact view.
    async fn observe_cached(&self) -> Result<Observed, DataplaneError> {
        let mut st = self.state();
        st.observes.1 += 1;
        Ok(st.observed.clone())
    }

    async fn apply(&self, ops: &[Op]) -> Vec<DataplaneError> {
        let mut st = self.state();
        for op in ops {
            apply_one(&mut st, op);
            st.applied.push(op.clone());
        }
        Vec::new()
    }

    async fn underlay(&self, addr: Option<Ipv4Addr>) -> Result<Underlay, DataplaneError> {
        Ok(Underlay { addr: addr.unwrap_or(Ipv4Addr::new(192, 0, 2, 1)), ifname: "eth0".into(), mtu: 1500 })
    }

    /// Any path is a namespace; it holds only `lo`.
    type Netns = PathBuf;

    async fn open_netns(&self, path: PathBuf) -> Result<PathBuf, DataplaneError> {
        Ok(path)
    }

    async fn netns_links(&self, _netns: &PathBuf) -> Result<Vec<String>, DataplaneError> {
        Ok(vec!["lo".into()])
    }

    async fn create_veth(&self, _netns: &PathBuf, spec: &AttachSpec) -> Result<(), DataplaneError> {
        let mut st = self.state();
        let mut l = new_link(&mut st, &spec.host_ifname, LinkKind::Veth, spec.mtu);
        l.master = Some(spec.bridge.clone());
        st.observed.links.insert(spec.host_ifname.clone(), l);
        Ok(())
    }

    async fn create_veth_here(&self, spec: &AttachSpec) -> Result<(), DataplaneError> {
        let mut st = self.state();
        let mut l = new_link(&mut st, &spec.host_ifname, LinkKind::Veth, spec.mtu);
        l.master = Some(spec.bridge.clone());
        st.observed.links.insert(spec.host_ifname.clone(), l);
        let peer = new_link(&mut st, &spec.ifname, LinkKind::Veth, spec.mtu);
        st.observed.links.insert(spec.ifname.clone(), peer);
        Ok(())
    }

    async fn configure_veth(&self, _netns: &PathBuf, _spec: &AttachSpec) -> Result<(), DataplaneError> {
        Ok(())
    }

    async fn detach(&self, host_ifname: String) -> Result<(), DataplaneError> {
        self.state().observed.links.remove(&host_ifname);
        Ok(())
    }

    async fn changes(&self) -> Result<Changes, DataplaneError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.state().subscribers.push(tx);
        Ok(Changes::new(rx))
    }

    /// Like the kernel: the ports of VXLAN devices that are up are bound.
    async fn facts(&self, devices: Vec<String>) -> HostFacts {
        let st = self.state();
        let ports = st.observed.links.values().filter(|l| l.up).filter_map(|l| match l.kind {
            LinkKind::Vxlan { port, .. } => Some(port),
            _ => None,
        });
        let unknown = DeviceFacts { features: Ok(Default::default()), udp_csum: None };
        HostFacts {
            kernel: Ok(st.kernel.clone().unwrap_or_else(|| "6.1.0-fake".into())),
            udp_ports: Ok(ports.collect()),
            devices: devices
                .into_iter()
                .map(|d| {
                    let f = st.features.get(&d).cloned().unwrap_or_else(|| unknown.clone());
                    (d, f)
                })
                .collect(),
        }
    }
}
