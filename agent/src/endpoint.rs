//! Connecting and disconnecting endpoints: the one service that the gRPC API
//! and the runtime plugins (Docker, CNI) call.
//!
//! The design decision: an endpoint's address lives in etcd and its veth in
//! the kernel, and neither half is ever left behind by a failed call. A
//! connect writes the endpoint while the veth is made, then gives the veth its
//! address; whichever half fails, the other is undone. A disconnect deletes
//! the veth before it frees the address, so an address is never handed out
//! again while a container still holds it. With the watch cache given
//! (`with_cache`, see `cache`), the pre-checks read it instead of etcd, so a
//! call costs etcd one transaction whatever the network's size.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{
    ContainerRef, EndpointOffer, EndpointRecord, EtcdStore, Mac, NetworkRecord, NewEndpoint, PortMapping,
    validate,
};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::dataplane::{AttachSpec, Dataplane, DataplaneError};
use crate::desired::HostContext;
use crate::error::AgentError;
use crate::leaks::Busy;
use crate::model::{bridge_name, veth_host_name, veth_temp_name};
use crate::netns::{is_own_netns, netns_path};
use crate::reconcile::ReadyRx;
use crate::watch::StateRx;

mod cache;
use cache::Cache;

mod ports;
mod staged;

/// How long a connect waits for this host to build a just-created network.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What to connect: a namespace to a network.
#[derive(Clone, Debug, Default)]
pub struct Attach {
    pub network: String,
    /// An `ip netns` name or an absolute path such as `/proc/PID/ns/net`.
    pub netns: String,
    /// A fixed address; `None` picks the next free one of this host's block.
    pub ip: Option<Ipv4Addr>,
    /// The interface name inside the namespace; `None` picks `eth0` or the
    /// lowest free `ethN`.
    pub ifname: Option<String>,
    /// The runtime's container the endpoint belongs to, recorded with it.
    pub container: Option<ContainerRef>,
    /// DNS name (unique on the network; empty for none) and aliases.
    pub name: String,
    pub aliases: Vec<String>,
    /// Ports of this host to publish to it (host port 0: pick one).
    pub ports: Vec<PortMapping>,
}

/// Which endpoint of a network on this host to disconnect.
#[derive(Clone, Debug)]
pub enum Detach {
    /// The one of this namespace.
    Netns(String),
    /// The one of this runtime container id and interface name (the
    /// namespace may be gone already).
    Container { id: String, ifname: String },
}

impl std::fmt::Display for Detach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detach::Netns(netns) => write!(f, "namespace {netns:?}"),
            Detach::Container { id, ifname } => write!(f, "container {id:?} (interface {ifname:?})"),
        }
    }
}

pub struct Endpoints<D: Dataplane> {
    store: EtcdStore,
    dp: D,
    me: HostContext,
    ready: ReadyRx,
    /// Serialises connect/disconnect on this host (interface names in a namespace).
    plumbing: Mutex<()>,
    /// Veths being plumbed, which the reconcile loop must not take for leaks.
    busy: Busy,
    /// True once this host is registered (its records then go on its reservation).
    registered: watch::Receiver<bool>,
    /// The watch cache, when given: pre-checks read it instead of etcd.
    cache: Option<Cache>,
}

impl<D: Dataplane> Endpoints<D> {
    pub fn new(store: EtcdStore, dp: D, me: HostContext, ready: ReadyRx) -> Self {
        let registered = watch::channel(true).1;
        Endpoints {
            store,
            dp,
            me,
            ready,
            plumbing: Mutex::new(()),
            busy: Busy::default(),
            registered,
            cache: None,
        }
    }

    /// Serves the pre-checks of connect and disconnect from the watch cache
    /// (`state`), so each costs etcd the same few requests whatever the
    /// network's size.
    pub fn with_cache(mut self, state: StateRx) -> Self {
        self.cache = Some(Cache::new(state));
        self
    }

    /// Makes `connect` wait until this host is registered.
    pub fn with_registered(mut self, registered: watch::Receiver<bool>) -> Self {
        self.registered = registered;
        self
    }

    /// Shares the set of veths being plumbed with the reconcile loop.
    pub fn with_busy(mut self, busy: Busy) -> Self {
        self.busy = busy;
        self
    }

    /// This host.
    pub fn host(&self) -> &HostContext {
        &self.me
    }

    /// A connect is one visit to the container's namespace (its links) beside
    /// the address offer, made from the watch cache when there is one (else
    /// one etcd read; refused when the namespace is already connected here),
    /// then the veth is made and raised while
    /// etcd writes the endpoint, then given its address. No extra read of the
    /// network when this host has built it already. Answers once the veth
    /// forwards. The container end has no address until etcd holds the
    /// endpoint; whichever half fails, the other is undone (an agent killed
    /// in between leaves a veth without an endpoint, which `ovctl doctor`
    /// reports, as it reported an endpoint without a veth before).
    pub async fn connect(&self, a: Attach) -> Result<(EndpointRecord, NetworkRecord), AgentError> {
        validate::network_name(&a.network)?;
        container_netns(&a.netns)?;
        if let Some(ifname) = &a.ifname {
            interface_name(ifname)?;
        }
        if let Some(c) = &a.container {
            container_ref(c)?;
        }
        if !self.ready.borrow().contains(&a.network) {
            // Not built here (yet): a clear "not found", or "a bridge network
            // of another host", before waiting for it.
            self.store.get_network(&a.network).await?.check_usable_on(&self.me.node)?;
        }
        self.wait_registered().await?;
        let _plumbing = self.plumbing.lock().await;
        let same = netns_matcher(&a.netns);
        let id = new_id();
        let _busy = self.busy.hold(&[veth_host_name(&id), veth_temp_name(&id)]);
        let ports = self.ports_for(&a.network, &a.ports).await?;
        let (ns, mut req, offer) = self.prepare(&a, id, &same).await?;
        req.ports = ports;
        self.wait_ready(&a.network).await?;
        let planned = self.attach_spec(&req.host_ifname, &req.ifname, &offer.network, offer.ip);
        let (made, claimed) =
            tokio::join!(self.dp.create_veth(&ns, &planned), self.store.claim_endpoint(offer, req, &same));
        let (ep, net) = match (made, claimed) {
            (Ok(()), Ok(claimed)) => claimed,
            (Ok(()), Err(e)) => {
                return Err(self.undo_connect(Some(&planned.host_ifname), None, e.into()).await);
            }
            (Err(e), Ok((ep, net))) => {
                return Err(self.undo_connect(None, Some((&net, ep.ip)), e.into()).await);
            }
            (Err(made), Err(e)) => {
                warn!(error = %made, "making the veth of a failed connect failed too");
                return Err(e.into());
            }
        };
        let spec = self.attach_spec(&ep.host_ifname, &ep.ifname, &net, ep.ip);
        if let Err(e) = self.finish_veth(&ns, &planned, &spec).await {
            return Err(self.undo_connect(Some(&spec.host_ifname), Some((&net, ep.ip)), e.into()).await);
        }
        self.wrote(&net.name, ep.ip, true);
        self.wait_forwarded(&ep).await;
        info!(network = %net.name, netns = %a.netns, ip = %ep.ip, ifname = %ep.ifname, "endpoint connected");
        Ok((ep, net))
    }

    /// Enters the namespace (its links give the interface name) while etcd
    /// offers an address; nothing is written yet.
    async fn prepare(
        &self,
        a: &Attach,
        id: String,
        same_netns: &(impl Fn(&str) -> bool + Sync),
    ) -> Result<(D::Netns, NewEndpoint, EndpointOffer), AgentError> {
        let mut req = NewEndpoint {
            id: id.clone(),
            network: a.network.clone(),
            host: self.me.node.clone(),
            netns: a.netns.clone(),
            ifname: String::new(),
            host_ifname: veth_host_name(&id),
            ip: a.ip,
            container: a.container.clone(),
            name: a.name.clone(),
            aliases: a.aliases.clone(),
            ports: Vec::new(),
        };
        let visit = async {
            let ns = self.dp.open_netns(netns_path(&a.netns)).await?;
            let links = self.dp.netns_links(&ns).await?;
            Ok::<_, DataplaneError>((ns, links))
        };
        let offer = async {
            if let Some(snap) = self.cached().await
                && let Some(offer) = self.store.offer_endpoint_cached(&snap.state, &req, same_netns)?
            {
                return Ok(offer);
            }
            self.store.offer_endpoint(&req, same_netns).await
        };
        let (visit, offer) = tokio::join!(visit, offer);
        let (ns, links) = visit?;
        let offer = offer?;
        req.ifname = match &a.ifname {
            Some(name) if links.iter().any(|l| l == name) => {
                return Err(AgentError::AlreadyExists(format!(
                    "namespace {:?} already has an interface named {name:?}",
                    a.netns
                )));
            }
            Some(name) => name.clone(),
            None => next_ifname(&links),
        };
        Ok((ns, req, offer))
    }

    /// Gives the pair made as `planned` its address. When the claim ended
    /// with another address (it lost a race and picked again), the pair is
    /// made again first, since its MAC follows the address.
    async fn finish_veth(
        &self,
        ns: &D::Netns,
        planned: &AttachSpec,
        spec: &AttachSpec,
    ) -> Result<(), DataplaneError> {
        if planned != spec {
            self.dp.detach(planned.host_ifname.clone()).await?;
            self.dp.create_veth(ns, spec).await?;
        }
        self.dp.configure_veth(ns, spec).await
    }

    /// How to plumb an endpoint with address `ip` of `net`.
    pub fn attach_spec(
        &self,
        host_ifname: &str,
        ifname: &str,
        net: &NetworkRecord,
        ip: Ipv4Addr,
    ) -> AttachSpec {
        AttachSpec {
            host_ifname: host_ifname.to_string(),
            ifname: ifname.to_string(),
            bridge: bridge_name(net.vni),
            mac: Mac::endpoint(ip),
            addr: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
            gateway: net.gateway,
            mtu: self.me.mtu_for(net),
        }
    }

    /// Undoes the half of a failed connect that succeeded (the veth, the
    /// address) and returns `err`; what cannot be undone is logged.
    async fn undo_connect(
        &self,
        veth: Option<&str>,
        address: Option<(&NetworkRecord, Ipv4Addr)>,
        err: AgentError,
    ) -> AgentError {
        if let Some(host_ifname) = veth
            && let Err(undo) = self.dp.detach(host_ifname.to_string()).await
        {
            warn!(error = %undo, "could not remove veth {host_ifname} of a failed connect");
        }
        if let Some((net, ip)) = address {
            match self.store.release_endpoint(&net.name, ip).await {
                Ok(_) => self.wrote(&net.name, ip, false),
                Err(undo) => warn!(error = %undo, %ip, "could not release the address of a failed connect"),
            }
        }
        err
    }

    /// Deletes the veth before it frees the address, on purpose: the
    /// deletion is most of a disconnect (about 20 ms of RCU grace periods in
    /// the kernel), but answering first would hand the address out again
    /// while the old container still holds it, leave `ethN` inside the
    /// namespace after `disconnect` returned (a reconnect would get `eth1`),
    /// and leave a veth behind if the agent stopped in between.
    pub async fn disconnect(
        &self,
        network: &str,
        which: &Detach,
    ) -> Result<(EndpointRecord, NetworkRecord), AgentError> {
        validate::network_name(network)?;
        let _plumbing = self.plumbing.lock().await;
        let (net, endpoints) = self.endpoints_of(network).await?;
        let matching: Box<dyn Fn(&EndpointRecord) -> bool + Send + Sync> = match which {
            Detach::Netns(netns) => {
                let same = netns_matcher(netns);
                Box::new(move |e| same(&e.netns))
            }
            Detach::Container { id, ifname } => {
                let (id, ifname) = (id.clone(), ifname.clone());
                Box::new(move |e| e.ifname == ifname && e.container.as_ref().is_some_and(|c| c.id == id))
            }
        };
        let mine = endpoints.iter().filter(|e| e.host == self.me.node).find(|e| matching(e));
        let Some(ep) = mine else {
            if let Some(other) = endpoints.iter().find(|e| matching(e)) {
                return Err(AgentError::FailedPrecondition(format!(
                    "{which} is connected to network {:?} on host {:?}; disconnect it there",
                    net.name, other.host
                )));
            }
            return Err(AgentError::NotFound(format!(
                "{which} is not connected to network {:?} on host {:?}",
                net.name, self.me.node
            )));
        };
        let _busy = self.busy.hold(std::slice::from_ref(&ep.host_ifname));
        self.dp.detach(ep.host_ifname.clone()).await?;
        // Guarded by the endpoint's id, so a delete sent again after a lost
        // answer can neither fail on its own success nor remove an endpoint
        // that got the address since (chaos finding: a disconnect reported
        // "not connected" after its first delete had been applied). Gone
        // already (a dead-endpoint release raced it) counts as done.
        let ep = ep.clone();
        if !self.store.release_endpoint_if(&net.name, ep.ip, &ep.id).await? {
            info!(network = %net.name, ip = %ep.ip, "the endpoint was released meanwhile");
        }
        self.wrote(&net.name, ep.ip, false);
        info!(network = %net.name, netns = %ep.netns, ip = %ep.ip, "endpoint disconnected");
        Ok((ep, net))
    }

    async fn wait_registered(&self) -> Result<(), AgentError> {
        let mut rx = self.registered.clone();
        match tokio::time::timeout(READY_TIMEOUT, rx.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AgentError::Unavailable(format!(
                "host {:?} is not registered in etcd yet (is etcd reachable?)",
                self.me.node
            ))),
        }
    }

    /// Waits until this host has built and isolated `network`.
    pub async fn wait_ready(&self, network: &str) -> Result<(), AgentError> {
        let mut rx = self.ready.clone();
        if let Ok(Ok(_)) = tokio::time::timeout(READY_TIMEOUT, rx.wait_for(|s| s.contains(network))).await {
            return Ok(());
        }
        let node = &self.me.node;
        Err(AgentError::Unavailable(match &self.ready.borrow().isolation_error {
            Some(why) => format!(
                "network {network:?} is not isolated on host {node:?}, so nothing is connected to it: {why}"
            ),
            None => {
                format!(
                    "the datapath of network {network:?} is not ready on host {node:?} (is etcd reachable?)"
                )
            }
        }))
    }
}

/// Refuses what cannot name a container's namespace before anything is
/// entered: nothing, a relative path (the agent's working directory is not
/// the caller's), or the host's own namespace (`/proc/self/ns/net` is the
/// agent's), whose links a connect would change.
pub fn container_netns(netns: &str) -> Result<(), AgentError> {
    let invalid = |why: String| Err(AgentError::InvalidArgument(why));
    if netns.is_empty() {
        return invalid(
            "the namespace is empty: give an `ip netns` name or a path such as /proc/PID/ns/net".into(),
        );
    }
    let path = netns_path(netns);
    if !path.is_absolute() {
        return invalid(format!("namespace path {netns:?} must be an absolute path (or an `ip netns` name)"));
    }
    if is_own_netns(&path) {
        return invalid(format!(
            "namespace {netns:?} is the host's own network namespace, not a container's"
        ));
    }
    Ok(())
}

/// A Linux interface name: 1 to 15 bytes, none of `/`, `:`, white space or
/// control characters, not `.` or `..`.
pub fn interface_name(name: &str) -> Result<(), AgentError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(AgentError::InvalidArgument(format!(
            "invalid interface name {name:?}: 1 to 15 characters, no '/', ':' or spaces"
        )));
    }
    Ok(())
}

/// A runtime's container reference: a known runtime and an id of printable
/// characters.
fn container_ref(c: &ContainerRef) -> Result<(), AgentError> {
    let printable = |s: &str| s.chars().all(|ch| ch.is_ascii_graphic());
    if !matches!(c.runtime.as_str(), "docker" | "cni") {
        return Err(AgentError::InvalidArgument(format!("unknown runtime {:?}: docker or cni", c.runtime)));
    }
    if c.id.is_empty() || c.id.len() > 256 || !printable(&c.id) {
        return Err(AgentError::InvalidArgument(format!(
            "invalid container id {:?}: 1 to 256 printable characters",
            c.id
        )));
    }
    if c.name.len() > 256 || !printable(&c.name) {
        return Err(AgentError::InvalidArgument(format!(
            "invalid container name {:?}: at most 256 printable characters",
            c.name
        )));
    }
    Ok(())
}

/// True when two netns references name the same namespace: the same path,
/// or the same namespace inode (a name and /proc/PID/ns/net of one process).
pub fn same_netns(a: &str, b: &str) -> bool {
    netns_matcher(a)(b)
}

/// `same_netns(netns, _)` with `netns` looked up once, for checking many.
pub fn netns_matcher(netns: &str) -> impl Fn(&str) -> bool + Send + Sync + use<> {
    let path = netns_path(netns);
    let id = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
    move |other: &str| {
        let other = netns_path(other);
        if other == path {
            return true;
        }
        let other_id = || std::fs::metadata(&other).ok().map(|m| (m.dev(), m.ino()));
        id.is_some() && id == other_id()
    }
}

/// `eth0`, or the lowest `ethN` not yet present.
pub fn next_ifname(existing: &[String]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|name| !existing.iter().any(|e| e == name))
        .unwrap_or_else(|| "eth0".to_string())
}

/// A new endpoint id: 16 random hex digits.
pub fn new_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_lowest_free_ethn() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(next_ifname(&s(&["lo"])), "eth0");
        assert_eq!(next_ifname(&s(&["lo", "eth0"])), "eth1");
        assert_eq!(next_ifname(&s(&["lo", "eth1"])), "eth0");
        assert_eq!(next_ifname(&s(&["eth0", "eth1", "eth2"])), "eth3");
    }

    #[test]
    fn same_netns_by_name_and_path() {
        assert!(same_netns("c1", "c1"));
        assert!(same_netns("c1", "/run/netns/c1"));
        assert!(!same_netns("c1", "c2"));
        assert!(same_netns("/proc/self/ns/net", "/proc/self/ns/net"));
    }

    #[test]
    fn interface_names() {
        for good in ["eth0", "net1", "a", "abcdefghijklmno"] {
            assert!(interface_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop", "a\nb"] {
            let e = interface_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid interface name"), "{bad}: {e}");
        }
    }

    #[test]
    fn container_refs() {
        let c = |runtime: &str, id: &str, name: &str| ContainerRef {
            runtime: runtime.into(),
            id: id.into(),
            name: name.into(),
        };
        assert!(container_ref(&c("cni", "abc", "web")).is_ok());
        assert!(container_ref(&c("docker", "abc", "")).is_ok());
        assert!(container_ref(&c("rkt", "abc", "")).unwrap_err().to_string().contains("unknown runtime"));
        assert!(container_ref(&c("cni", "", "")).unwrap_err().to_string().contains("container id"));
        assert!(container_ref(&c("cni", "a b", "")).unwrap_err().to_string().contains("container id"));
        assert!(container_ref(&c("cni", "a", "x\ny")).unwrap_err().to_string().contains("container name"));
    }
}
