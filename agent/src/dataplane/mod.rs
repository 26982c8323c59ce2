//! The only module that talks to the kernel.
//!
//! `Dataplane` observes our devices and applies planned `Op`s; it makes no
//! decisions. Every operation is idempotent (EEXIST on create and ENOENT on
//! delete count as done), so a replayed plan is harmless. `NetlinkDataplane`
//! is the real one; `FakeDataplane` records operations for tests of the loop.
//! `changes()` only says "look again", never what changed: the loop stays
//! level-triggered.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use ovnet_ipam_store::Mac;

use crate::model::Observed;
use crate::op::Op;

pub mod fake;
pub mod firewall;
pub mod netlink;
pub mod nftexpr;
pub mod rules;

pub use fake::FakeDataplane;
pub use netlink::NetlinkDataplane;

/// A failed kernel operation, with what was being done. Typed so that a
/// caller can tell "try again later" (a device not there yet, a busy
/// kernel, an answer lost) from a refusal or a bug: the agent maps each to a
/// gRPC code in one place (`error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel refused an op; its errno is in `source` (see [`Self::errno`]).
    #[error("{op}: {source}")]
    Op { op: String, source: rtnetlink::Error },
    /// The kernel refused a request other than an op (a dump, a lookup).
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    /// A device the request needs does not exist (yet, or any more): a
    /// network being built or removed at the same time.
    #[error("{what}: device {device} does not exist")]
    MissingDevice { what: String, device: String },
    /// The request may or may not have taken effect (the socket failed or
    /// the answer was lost); asking again is safe, every op is idempotent.
    #[error("{what}: outcome unknown: {reason}")]
    OutcomeUnknown { what: String, reason: String },
    #[error("network namespace {path:?}: {reason}")]
    Netns { path: PathBuf, reason: String },
    /// A link the request names is not one ovnet may change or delete
    /// (not our prefix, or not the kind we made).
    #[error("{name} is not ovnet's to change: {why}")]
    NotOurs { name: String, why: String },
    /// The nftables table `inet ovnet` could not be written.
    #[error("firewall table inet ovnet: {0}")]
    Firewall(String),
    #[error("{0}")]
    Other(String),
}

impl DataplaneError {
    /// The errno of a kernel refusal, if this is one.
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            DataplaneError::Op { source, .. } | DataplaneError::Netlink { source, .. } => match source {
                rtnetlink::Error::NetlinkError(msg) => {
                    msg.code.map(|c| nix::errno::Errno::from_raw(-c.get()))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The underlay this host's VTEP lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub addr: Ipv4Addr,
    pub ifname: String,
    pub mtu: u32,
}

/// How to plumb one local endpoint into a container namespace (the
/// namespace itself is the `Dataplane::Netns` passed beside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachSpec {
    /// Host end of the veth, left in this namespace as a port of `bridge`.
    pub host_ifname: String,
    /// Name of the container end inside the namespace (eth0, eth1, ...).
    pub ifname: String,
    pub bridge: String,
    pub mac: Mac,
    /// Endpoint address with the subnet's prefix length.
    pub addr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// Wake-ups from the kernel: one `()` per burst of changes to our devices or
/// their FDB and neighbour entries (bursts are coalesced, so the agent's own
/// changes cause one extra pass, not a storm). Ends when the source is gone.
pub struct Changes {
    rx: tokio::sync::mpsc::Receiver<()>,
}

impl Changes {
    pub fn new(rx: tokio::sync::mpsc::Receiver<()>) -> Self {
        Changes { rx }
    }

    /// The next wake-up; `None` when no more will come.
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

/// What the doctor checks beyond the planner's view. Each part carries its
/// own error, since one unreadable fact must not hide the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel: Result<String, String>,
    /// Local ports of the UDP sockets in the namespace (`ss -uln`).
    pub udp_ports: Result<BTreeSet<u16>, String>,
    /// Per device asked about.
    pub devices: BTreeMap<String, DeviceFacts>,
}

/// Offload settings of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Names of the active features (`ethtool -k DEV` lines that say `on`).
    pub features: Result<BTreeSet<String>, String>,
    /// For a VXLAN device: whether outer UDP checksums are computed (`udpcsum`).
    pub udp_csum: Option<bool>,
}

/// Reads and changes the kernel of the agent's own network namespace and of
/// container namespaces. Implementations are cheap to clone and shareable.
pub trait Dataplane: Clone + Send + Sync + 'static {
    /// Dumps our links (prefix `ov`), their addresses, the FDB and
    /// neighbour entries of our VXLAN devices, and the table `inet ovnet`.
    fn observe(&self) -> impl Future<Output = Result<Observed, DataplaneError>> + Send;

    /// Like `observe`, but the FDB and neighbour entries may come from a view
    /// kept up to date from the `changes()` notifications, which costs far
    /// less than a dump at scale, and the firewall table may be the one last
    /// written or read (no notification covers it: the resync's `observe`
    /// reads it). Falls back to `observe` when it cannot vouch for them.
    fn observe_cached(&self) -> impl Future<Output = Result<Observed, DataplaneError>> + Send {
        self.observe()
    }

    /// Applies the ops in order. Keeps going past a failed op and returns every
    /// failure, so one bad entry does not block the rest.
    fn apply(&self, ops: &[Op]) -> impl Future<Output = Vec<DataplaneError>> + Send;

    /// The underlay: the interface holding `addr`, or, without one, the source
    /// address of the default route and its interface.
    fn underlay(
        &self,
        addr: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<Underlay, DataplaneError>> + Send;

    /// A container namespace, entered once by `open_netns`, through which a
    /// connect lists its links and plumbs the endpoint.
    type Netns: Send + Sync + 'static;

    /// Enters the container namespace at `path` (the file `ip netns add`
    /// made, or /proc/PID/ns/net); fails when there is no network namespace there.
    fn open_netns(&self, path: PathBuf) -> impl Future<Output = Result<Self::Netns, DataplaneError>> + Send;

    /// Names of the links inside a container namespace (to pick the next ethN).
    fn netns_links(
        &self,
        netns: &Self::Netns,
    ) -> impl Future<Output = Result<Vec<String>, DataplaneError>> + Send;

    /// Creates the veth pair with the container end born inside `netns`
    /// (name, MAC, MTU; up, without an address; `lo` up too) and the host
    /// end a port of the bridge, up. A stale host end of the same name (an
    /// interrupted attach of the same endpoint) is replaced. On failure
    /// nothing is left. Uses all of `spec` but `addr` and `gateway`.
    fn create_veth(
        &self,
        netns: &Self::Netns,
        spec: &AttachSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// Creates the veth pair with BOTH ends in this namespace, for a
    /// runtime that moves the container end into its sandbox itself
    /// (Docker): the container end named `spec.ifname` with the endpoint's
    /// MAC and MTU, down; the host end a port of the bridge, up. A stale
    /// pair of the same host name is replaced. Uses all of `spec` but
    /// `addr` and `gateway`.
    fn create_veth_here(&self, spec: &AttachSpec) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// Configures the container end of a pair made by `create_veth` with the
    /// same `spec` (address, default route via the gateway when the
    /// namespace has none) and returns once the host end forwards, so the
    /// container's first packet is not lost. Leaves the pair on failure.
    fn configure_veth(
        &self,
        netns: &Self::Netns,
        spec: &AttachSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// `create_veth` then `configure_veth`; on failure, removes the pair.
    fn attach(
        &self,
        netns: &Self::Netns,
        spec: AttachSpec,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        async move {
            self.create_veth(netns, &spec).await?;
            let Err(e) = self.configure_veth(netns, &spec).await else {
                return Ok(());
            };
            // Deleting the host end takes the peer with it.
            if let Err(undo) = self.detach(spec.host_ifname.clone()).await {
                tracing::warn!(error = %undo, "cleaning up veth {} after a failed attach", spec.host_ifname);
            }
            Err(e)
        }
    }

    /// Removes the veth pair by its host end (the peer goes with it).
    /// A link that is already gone counts as done.
    fn detach(&self, host_ifname: String) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// Subscribes to changes of our links and of the FDB and neighbour
    /// entries of our VXLAN devices (`ip monitor link neigh`).
    fn changes(&self) -> impl Future<Output = Result<Changes, DataplaneError>> + Send;

    /// Offload features of `devices`, the bound UDP ports and the kernel
    /// release, for the doctor.
    fn facts(&self, devices: Vec<String>) -> impl Future<Output = HostFacts> + Send;
}
