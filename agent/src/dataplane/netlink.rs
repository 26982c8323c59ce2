//! The real dataplane: `Dataplane` over rtnetlink, the one place that talks
//! to the kernel.
//!
//! It makes no decisions: `observe` dumps, `apply` executes the planner's ops
//! in order: links one by one over rtnetlink, runs of FDB and neighbour
//! entries in bulk over a second, raw socket ([`entries`], [`raw`]), each
//! device's index looked up once per pass, and the firewall table in one
//! nf_tables transaction over a third ([`nft`]), whatever its size (the
//! socket's buffers are fitted to the transaction, as `nft` does). Links
//! not ours (no `ov` prefix) are never changed, and `detach` deletes only
//! one of our veths. The design decision to know:
//! every op is idempotent at this level (EEXIST on create, ENOENT/ENODEV on
//! delete count as done; updates use replace semantics), so a replayed or
//! half-applied plan is harmless and the reconcile loop can retry blindly.
//! A `NetlinkDataplane` is bound to one network namespace through its
//! sockets; container namespaces are reached with sockets opened inside them
//! (see [`crate::netns`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use nix::errno::Errno;

use super::{AttachSpec, Changes, Dataplane, DataplaneError, HostFacts, Underlay};
use crate::model::{Firewall, FirewallState, Observed};
use crate::netns;
use crate::op::Op;

mod cache;
mod changes;
mod endpoint;
mod entries;
mod facts;
mod features;
mod nft;
mod observe;
mod ops;
mod raw;
mod underlay;
mod wire;

pub use changes::COALESCE;

/// Dataplane over netlink sockets in one network namespace. Clones share the sockets.
#[derive(Clone)]
pub struct NetlinkDataplane {
    handle: rtnetlink::Handle,
    /// Bulk FDB/neighbour requests and dumps, in the same namespace.
    raw: raw::Raw,
    /// NETLINK_NETFILTER, for the table `inet ovnet`, in the same namespace.
    nfnl: raw::Raw,
    /// NETLINK_GENERIC, for ethtool's features of the devices it creates.
    genl: genetlink::GenetlinkHandle,
    /// The netlink subscriptions, told what `apply` changes so that the
    /// agent's own changes do not wake it.
    subs: changes::Subscriptions,
    /// The namespace of `handle` when it is not the process's own; further
    /// sockets (subscriptions, ethtool) are opened there too.
    netns: Option<PathBuf>,
    /// The firewall table as last written or read, while it is known to be
    /// exactly that; cached observations use it instead of dumping it.
    firewall: Arc<Mutex<Option<Firewall>>>,
}

impl NetlinkDataplane {
    /// Opens a netlink socket in the current namespace; its connection task
    /// runs on the current tokio runtime (which must exist).
    pub fn new() -> Result<Self, DataplaneError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| DataplaneError::Other(format!("no tokio runtime: {e}")))?;
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| DataplaneError::Other(format!("opening a netlink socket: {e}")))?;
        runtime.spawn(connection);
        let socket_error = |e| DataplaneError::Other(format!("opening a netlink socket: {e}"));
        let raw = raw::Raw::open().map_err(socket_error)?;
        let nfnl = raw::Raw::open_netfilter().map_err(socket_error)?;
        let (connection, genl, _) = genetlink::new_connection().map_err(socket_error)?;
        runtime.spawn(connection);
        Ok(Self::with_sockets(handle, raw, nfnl, genl, None))
    }

    /// A dataplane for the namespace at `path` (a "host" in tests and labs).
    pub async fn in_netns(path: &Path) -> Result<Self, DataplaneError> {
        let handle = netns::handle_in_netns(path).await?;
        let raw = netns::open_in_netns(path, raw::Raw::open).await?;
        let nfnl = netns::open_in_netns(path, raw::Raw::open_netfilter).await?;
        let (connection, genl, _) = netns::open_in_netns(path, genetlink::new_connection).await?;
        tokio::spawn(connection);
        Ok(Self::with_sockets(handle, raw, nfnl, genl, Some(path.to_path_buf())))
    }

    fn with_sockets(
        handle: rtnetlink::Handle,
        raw: raw::Raw,
        nfnl: raw::Raw,
        genl: genetlink::GenetlinkHandle,
        netns: Option<PathBuf>,
    ) -> Self {
        Self { handle, raw, nfnl, genl, subs: Default::default(), netns, firewall: Default::default() }
    }

    /// The table `inet ovnet`: the known one unless `fresh`, else dumped.
    async fn firewall_state(&self, fresh: bool) -> FirewallState {
        if !fresh && let Some(fw) = self.known_firewall().clone() {
            return FirewallState::Rules(fw);
        }
        let state = nft::read(&self.nfnl).await;
        *self.known_firewall() = match &state {
            FirewallState::Rules(fw) => Some(fw.clone()),
            _ => None,
        };
        state
    }

    fn known_firewall(&self) -> std::sync::MutexGuard<'_, Option<Firewall>> {
        // Only ever replaced whole, so a poisoned lock still holds a valid value.
        self.firewall.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transaction that replaces the table, remembering the outcome.
    async fn write_firewall(&self, fw: &Firewall) -> Result<(), DataplaneError> {
        let written = nft::write(&self.nfnl, fw).await;
        *self.known_firewall() = written.is_ok().then(|| fw.clone());
        written
    }

    /// Sends an nf_tables transaction for a table other than `inet ovnet`
    /// (the DNS server's `inet ovnet_dns`); the first refusal, in words.
    pub async fn nft_transaction(
        &self,
        msgs: Vec<netlink_packet_core::NetlinkMessage<netlink_packet_netfilter::NetfilterMessage>>,
    ) -> Result<(), String> {
        match self.nfnl.batch(msgs).await.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(e) => Err(format!("{e:?}")),
        }
    }

    /// The raw rtnetlink handle, for callers that need more than the trait.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

impl Dataplane for NetlinkDataplane {
    async fn observe(&self) -> Result<Observed, DataplaneError> {
        let mut observed = observe::observe(&self.handle, &self.raw, &self.subs, false).await?;
        observed.firewall = self.firewall_state(true).await;
        Ok(observed)
    }

    async fn observe_cached(&self) -> Result<Observed, DataplaneError> {
        let mut observed = observe::observe(&self.handle, &self.raw, &self.subs, true).await?;
        observed.firewall = self.firewall_state(false).await;
        Ok(observed)
    }

    /// While it runs, the subscriptions take the notifications it causes as
    /// its own (see [`changes`]).
    async fn apply(&self, ops: &[Op]) -> Vec<DataplaneError> {
        let mut errors = Vec::new();
        let mut indexes = entries::Indexes::default();
        let mut window = self.subs.window();
        let mut rest = ops;
        while let Some(op) = rest.first() {
            let run = rest.iter().take_while(|op| entries::is_entry(op)).count();
            if run > 0 {
                let (run, tail) = rest.split_at(run);
                entries::apply_run(&self.handle, &self.raw, &mut indexes, &mut window, run, &mut errors)
                    .await;
                rest = tail;
                continue;
            }
            if let Op::SyncFirewall { firewall } = op {
                if let Err(e) = self.write_firewall(firewall).await {
                    errors.push(e);
                }
                rest = &rest[1..];
                continue;
            }
            window.links();
            if let Err(e) = ops::apply_op(&self.handle, &self.genl, &mut indexes, op).await {
                errors.push(e.into_dataplane(op));
            }
            rest = &rest[1..];
        }
        errors
    }

    async fn underlay(&self, addr: Option<Ipv4Addr>) -> Result<Underlay, DataplaneError> {
        underlay::underlay(&self.handle, addr).await
    }

    type Netns = netns::NetnsHandle;

    async fn open_netns(&self, path: PathBuf) -> Result<netns::NetnsHandle, DataplaneError> {
        netns::NetnsHandle::open(&path).await
    }

    async fn netns_links(&self, netns: &netns::NetnsHandle) -> Result<Vec<String>, DataplaneError> {
        endpoint::links(netns).await
    }

    async fn create_veth(&self, netns: &netns::NetnsHandle, spec: &AttachSpec) -> Result<(), DataplaneError> {
        endpoint::create_veth(&self.handle, netns, spec).await
    }

    async fn create_veth_here(&self, spec: &AttachSpec) -> Result<(), DataplaneError> {
        endpoint::create_veth_here(&self.handle, spec).await
    }

    async fn configure_veth(
        &self,
        netns: &netns::NetnsHandle,
        spec: &AttachSpec,
    ) -> Result<(), DataplaneError> {
        endpoint::configure_veth(&self.handle, netns, spec).await
    }

    async fn detach(&self, host_ifname: String) -> Result<(), DataplaneError> {
        let what = format!("ip link del {host_ifname}");
        // Only one of our veths: never a name from a record that is not ours.
        let not_ours = |why: String| DataplaneError::NotOurs { name: host_ifname.clone(), why };
        ovnet_ipam_store::validate::host_veth_name(&host_ifname).map_err(not_ours)?;
        let found = link_by_name(&self.handle, &host_ifname)
            .await
            .map_err(|source| DataplaneError::Netlink { what: what.clone(), source })?;
        match found.as_ref().map(link_kind) {
            None => return Ok(()),
            Some(Some(InfoKind::Veth)) => {}
            Some(other) => return Err(not_ours(format!("it is a {:?} link, not a veth", other))),
        }
        let existed = ops::delete_existing_link(&self.handle, &host_ifname)
            .await
            .map_err(|source| DataplaneError::Netlink { what: what.clone(), source })?;
        if existed {
            tracing::info!("{what}");
        }
        Ok(())
    }

    async fn changes(&self) -> Result<Changes, DataplaneError> {
        let sock = match &self.netns {
            Some(path) => netns::open_in_netns(path, changes::open).await?,
            None => changes::open()
                .map_err(|e| DataplaneError::Other(format!("subscribing to netlink events: {e}")))?,
        };
        changes::subscribe(&self.handle, sock, &self.subs).await
    }

    async fn facts(&self, devices: Vec<String>) -> HostFacts {
        facts::facts(&self.handle, self.netns.clone(), devices).await
    }
}

/// Why one op failed, before it is tied to the op's text.
#[derive(Debug)]
enum OpError {
    Netlink(rtnetlink::Error),
    /// A device the op refers to (other than the one it creates) is missing.
    NoDevice(String),
    /// The request's outcome is unknown (socket failure, lost answer).
    Io(String),
    /// The link is not ours (no `ov` prefix): refused before any request.
    NotOurs(String),
}

impl From<rtnetlink::Error> for OpError {
    fn from(e: rtnetlink::Error) -> Self {
        OpError::Netlink(e)
    }
}

impl OpError {
    fn into_dataplane(self, op: &Op) -> DataplaneError {
        match self {
            OpError::Netlink(source) => DataplaneError::Op { op: op.to_string(), source },
            OpError::NoDevice(device) => DataplaneError::MissingDevice { what: op.to_string(), device },
            OpError::Io(reason) => DataplaneError::OutcomeUnknown { what: op.to_string(), reason },
            OpError::NotOurs(name) => DataplaneError::NotOurs { name, why: format!("refused {op}") },
        }
    }
}

/// The errno of a netlink error answer, if it is one.
fn errno(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| Errno::from_raw(-code.get())),
        _ => None,
    }
}

/// Whether `err` is a netlink error answer with one of these errnos.
fn is_errno(err: &rtnetlink::Error, codes: &[Errno]) -> bool {
    errno(err).is_some_and(|e| codes.contains(&e))
}

/// Treats "already exists" as done.
fn ok_if_exists(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if is_errno(&e, &[Errno::EEXIST]) => Ok(()),
        other => other,
    }
}

/// Whether a create made something new (`false`: it already existed).
fn created(result: Result<(), rtnetlink::Error>) -> Result<bool, rtnetlink::Error> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_errno(&e, &[Errno::EEXIST]) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Treats "no such device / entry / address" as done.
fn ok_if_missing(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if is_errno(&e, &[Errno::ENOENT, Errno::ENODEV, Errno::EADDRNOTAVAIL]) => Ok(()),
        other => other,
    }
}

/// `ip link show`: every link of the namespace.
async fn dump_links(handle: &rtnetlink::Handle) -> Result<Vec<LinkMessage>, rtnetlink::Error> {
    handle.link().get().execute().try_collect().await
}

/// `ip link show NAME`, or `None` if there is no such link.
async fn link_by_name(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match handle.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, &[Errno::ENODEV, Errno::ENOENT]) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The index of link `name`, or `None` if there is no such link.
async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    Ok(link_by_name(handle, name).await?.map(|link| link.header.index))
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}
