//! `changes`: `ip monitor link neigh` for the reconcile loop.
//!
//! A socket subscribed to RTNLGRP_LINK and RTNLGRP_NEIGH wakes the loop when
//! one of our links changes or an FDB/neighbour entry of one of our VXLAN
//! devices does. Everything else (the underlay's ARP entries ageing, MACs the
//! bridges learn) is ignored, so nothing here happens per packet. Messages
//! are read in place in the receive buffer ([`wire`](super::wire)); those
//! about our entries also keep the [`Cache`] that `observe_cached` answers
//! from. A lost notification (socket overrun) wakes the loop too, and makes
//! the next observe dump again. Bursts are coalesced: after the first
//! relevant event, events are drained for [`COALESCE`] before one wake-up is
//! sent.
//!
//! The design decision: the agent's own changes do not wake it. While
//! `apply` runs it holds a [`Window`] naming what it changes (device index,
//! notification type, family; or "links", which covers everything). The
//! kernel queues a change's notification before it acknowledges the request,
//! so when `apply` has its last ACK every notification it caused is in this
//! socket: the window drains the socket as it closes, and only what it did
//! not name counts as someone else's change.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use futures::future::poll_fn;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::NeighbourHeader;
use netlink_sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TrySendError;

use super::cache::{Cache, DeviceEntries};
use super::raw::messages;
use super::wire::{Entry, Link};
use super::{dump_links, link_name};
use crate::dataplane::{Changes, DataplaneError};
use crate::model::DEVICE_PREFIX;
use crate::op::Op;

/// How long a burst of notifications is drained before one wake-up.
pub const COALESCE: Duration = Duration::from_millis(30);

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
/// Receive buffer asked for: a cold start's notifications arrive faster than
/// a busy agent reads them (the kernel caps it at `net.core.rmem_max`).
const RCVBUF: usize = 4 << 20;
const RX_LEN: usize = 64 * 1024;

/// Opens the subscribed socket in the current namespace (inside a runtime).
pub(super) fn open() -> io::Result<TokioSocket> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    let s = sock.socket_mut();
    s.bind_auto()?;
    s.add_membership(RTNLGRP_LINK)?;
    s.add_membership(RTNLGRP_NEIGH)?;
    let _ = s.set_rx_buf_sz(RCVBUF);
    Ok(sock)
}

/// The subscriptions of one dataplane, which its `apply` windows inform.
#[derive(Clone, Default)]
pub(super) struct Subscriptions(Arc<Mutex<Vec<Weak<Subscription>>>>);

impl Subscriptions {
    fn live(&self) -> Vec<Arc<Subscription>> {
        let mut subs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| s.strong_count() > 0);
        subs.iter().filter_map(Weak::upgrade).collect()
    }

    /// Opens a window on every live subscription (until it is dropped).
    pub(super) fn window(&self) -> Window {
        let subs = self.live();
        for s in &subs {
            s.begin();
        }
        Window { subs, seen: HashSet::new() }
    }

    /// The cached entries of the VXLAN devices with these indexes, once
    /// every notification so far is taken in; `None` when some are not
    /// known for sure (or nothing is subscribed).
    pub(super) fn cached(&self, indexes: impl Iterator<Item = u32>) -> Option<HashMap<u32, DeviceEntries>> {
        let sub = self.live().into_iter().next()?;
        let mut st = sub.state();
        sub.drain_locked(&mut st).ok()?;
        if !st.cache.is_valid() {
            return None;
        }
        indexes.map(|i| Some((i, st.cache.get(i)?.clone()))).collect()
    }

    /// A full dump of the entries starts.
    pub(super) fn start_fill(&self) {
        for s in self.live() {
            let mut st = s.state();
            let _ = s.drain_locked(&mut st);
            st.cache.start_fill();
        }
    }

    /// The full dump failed: the caches wait for the next one.
    pub(super) fn fill_failed(&self) {
        for s in self.live() {
            s.state().cache.lost();
        }
    }

    /// The full dump's entries, by device index, refill the caches.
    pub(super) fn fill(&self, dumped: &HashMap<u32, DeviceEntries>) {
        for s in self.live() {
            let mut st = s.state();
            let _ = s.drain_locked(&mut st);
            st.cache.fill(dumped.clone());
        }
    }
}

/// Takes a socket from [`open`], reads our current links through `handle`,
/// and spawns the task that feeds `Changes`.
pub(super) async fn subscribe(
    handle: &rtnetlink::Handle,
    sock: TokioSocket,
    subs: &Subscriptions,
) -> Result<Changes, DataplaneError> {
    // Subscribed first, dumped second: a link created in between shows up in both.
    let links = dump_links(handle)
        .await
        .map_err(|source| DataplaneError::Netlink { what: "ip link show".into(), source })?;
    let mut ours = Ours::default();
    let mut cache = Cache::default();
    for link in &links {
        if let Some(name) = link_name(link) {
            ours.update(link.header.index, Some(name), true, &mut cache);
        }
    }
    let state = State { ours, window: None, foreign: false, cache, rx: Vec::with_capacity(RX_LEN) };
    let sub = Arc::new(Subscription { sock, state: Mutex::new(state), woken: Notify::new() });
    subs.0.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&sub));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(feed(sub, tx));
    Ok(Changes::new(rx))
}

/// One subscribed socket and what its reader knows.
pub(super) struct Subscription {
    sock: TokioSocket,
    state: Mutex<State>,
    /// Signalled when a closing window found someone else's change.
    woken: Notify,
}

struct State {
    ours: Ours,
    /// What the agent is changing right now, if it is.
    window: Option<Expect>,
    /// A relevant change that is not the agent's own was read.
    foreign: bool,
    /// The entries of our VXLAN devices, as the notifications tell.
    cache: Cache,
    rx: Vec<u8>,
}

impl State {
    /// Classifies the datagram in `rx` (or notes the loss, ENOBUFS).
    fn take(&mut self, got: io::Result<()>) -> io::Result<()> {
        match got {
            Ok(()) => {
                for msg in messages(&self.rx) {
                    if self.ours.relevant(msg.kind, msg.payload, &mut self.cache) {
                        self.foreign |= !covered(&self.window, msg.kind, msg.payload);
                    }
                }
                Ok(())
            }
            // Notifications were lost; they may have been anyone's.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                tracing::debug!("netlink notifications lost (ENOBUFS)");
                self.foreign = true;
                self.cache.lost();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// What an open window covers.
#[derive(Default)]
struct Expect {
    /// Link ops ran: every notification is taken as ours.
    links: bool,
    /// (device index, message type, address family) of entry ops.
    entries: HashSet<(u32, u16, u8)>,
}

impl Subscription {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a datagram, then reads everything queued, classifying each
    /// message under the lock (so a window cannot open in between).
    async fn read(&self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut st = self.state();
            let st = &mut *st;
            st.rx.clear();
            match self.sock.poll_recv(cx, &mut st.rx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(got) => Poll::Ready(st.take(got).and_then(|()| self.drain_locked(st))),
            }
        })
        .await
    }

    /// Reads everything queued, without waiting.
    fn drain(&self) -> io::Result<()> {
        self.drain_locked(&mut self.state())
    }

    fn drain_locked(&self, st: &mut State) -> io::Result<()> {
        loop {
            st.rx.clear();
            let got = self.sock.socket_ref().recv(&mut st.rx, 0).map(drop);
            match got {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                got => st.take(got)?,
            }
        }
    }

    fn begin(&self) {
        let _ = self.drain();
        self.state().window = Some(Expect::default());
    }

    fn end(&self) {
        let _ = self.drain();
        let mut st = self.state();
        st.window = None;
        if st.foreign {
            self.woken.notify_one();
        }
    }

    fn take_foreign(&self) -> bool {
        std::mem::take(&mut self.state().foreign)
    }
}

/// Whether the open window (if any) names this notification.
fn covered(window: &Option<Expect>, kind: u16, payload: &[u8]) -> bool {
    let Some(w) = window else { return false };
    if w.links {
        return true;
    }
    match NeighbourHeader::parse(payload) {
        Ok(h) if kind == RTM_NEWNEIGH || kind == RTM_DELNEIGH => {
            w.entries.contains(&(h.ifindex, kind, u8::from(h.family)))
        }
        _ => false,
    }
}

/// An open window of the agent's own changes; closes (draining what they
/// caused) when dropped.
pub(super) struct Window {
    subs: Vec<Arc<Subscription>>,
    /// Keys already announced, so the lock is taken once per key.
    seen: HashSet<(u32, u16, u8)>,
}

impl Window {
    /// A link op is about to run: from now on, everything is ours.
    pub(super) fn links(&mut self) {
        for s in &self.subs {
            if let Some(w) = s.state().window.as_mut() {
                w.links = true;
            }
        }
    }

    /// An entry op on the device with `index` is about to be sent.
    pub(super) fn expect(&mut self, index: u32, op: &Op) {
        if self.subs.is_empty() {
            return;
        }
        for &(kind, family) in notified(op) {
            let key = (index, kind, u8::from(family));
            if self.seen.insert(key) {
                for s in &self.subs {
                    if let Some(w) = s.state().window.as_mut() {
                        w.entries.insert(key);
                    }
                }
            }
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        for s in &self.subs {
            s.end();
        }
    }
}

/// The notifications an entry op causes (`ip neigh del` first marks the
/// entry FAILED, then deletes it; a replace that changes nothing sends none).
fn notified(op: &Op) -> &'static [(u16, AddressFamily)] {
    match op {
        Op::AddFdb { .. } => &[(RTM_NEWNEIGH, AddressFamily::Bridge)],
        Op::DelFdb { .. } => &[(RTM_DELNEIGH, AddressFamily::Bridge)],
        Op::AddNeigh { .. } => &[(RTM_NEWNEIGH, AddressFamily::Inet)],
        Op::DelNeigh { .. } => &[(RTM_NEWNEIGH, AddressFamily::Inet), (RTM_DELNEIGH, AddressFamily::Inet)],
        _ => &[],
    }
}

/// Our links by index (true for VXLAN devices), to tell which neighbour
/// events concern us.
#[derive(Default)]
struct Ours {
    links: HashMap<u32, bool>,
}

impl Ours {
    /// Records a link's appearance or removal; true when it concerns us.
    fn update(&mut self, index: u32, name: Option<&str>, present: bool, cache: &mut Cache) -> bool {
        let Some(name) = name.filter(|n| n.starts_with(DEVICE_PREFIX)) else {
            // A link renamed away from our prefix is no longer ours.
            cache.device(index, false);
            return self.links.remove(&index).is_some();
        };
        let vxlan = name.starts_with(&format!("{DEVICE_PREFIX}vx"));
        if present {
            self.links.insert(index, vxlan);
        } else {
            self.links.remove(&index);
        }
        if vxlan {
            cache.device(index, present);
        }
        true
    }

    /// Whether a message concerns our devices; keeps the index and `cache` up to date.
    fn relevant(&mut self, kind: u16, payload: &[u8], cache: &mut Cache) -> bool {
        match kind {
            RTM_NEWLINK | RTM_DELLINK => {
                let Some(link) = Link::parse(payload) else { return false };
                self.update(link.index, link.name, kind == RTM_NEWLINK, cache)
            }
            RTM_NEWNEIGH | RTM_DELNEIGH => {
                let Some(e) = Entry::parse(payload) else { return false };
                if !self.links.get(&e.header.ifindex).copied().unwrap_or(false) {
                    return false;
                }
                cache.notified(kind, e);
                true
            }
            _ => false,
        }
    }
}

/// Sends one wake-up per burst of others' changes until the receiver goes away.
async fn feed(sub: Arc<Subscription>, tx: tokio::sync::mpsc::Sender<()>) {
    loop {
        // Wait for the first relevant change that is not ours ...
        while !sub.take_foreign() {
            tokio::select! {
                read = sub.read() => if read.is_err() { return },
                () = sub.woken.notified() => {}
                () = tx.closed() => return,
            }
        }
        // ... then drain the burst.
        let deadline = tokio::time::Instant::now() + COALESCE;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                read = sub.read() => if read.is_err() { return },
            }
        }
        sub.take_foreign();
        if let Err(TrySendError::Closed(_)) = tx.try_send(()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkMessage;
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::neighbour::NeighbourMessage;

    use super::*;

    fn neigh(kind: u16, family: AddressFamily, ifindex: u32) -> Vec<u8> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        msg.header.ifindex = ifindex;
        let payload = match kind {
            RTM_NEWNEIGH => RouteNetlinkMessage::NewNeighbour(msg),
            _ => RouteNetlinkMessage::DelNeighbour(msg),
        };
        bytes(payload)
    }

    fn link(index: u32, name: &str) -> Vec<u8> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        bytes(RouteNetlinkMessage::NewLink(msg))
    }

    fn bytes(payload: RouteNetlinkMessage) -> Vec<u8> {
        let mut msg = NetlinkMessage::from(payload);
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        out
    }

    /// Whether `datagram` counts as someone else's change.
    fn foreign(st: &mut State, datagram: Vec<u8>) -> bool {
        st.rx = datagram;
        st.take(Ok(())).expect("classified");
        std::mem::take(&mut st.foreign)
    }

    #[test]
    fn only_what_the_window_names_is_ours() {
        let (mut ours, mut cache) = (Ours::default(), Cache::default());
        ours.update(5, Some("ovvx4096"), true, &mut cache);
        ours.update(6, Some("ovbr4096"), true, &mut cache);
        let mut st = State { ours, window: None, foreign: false, cache, rx: Vec::new() };
        let (new, del) = (RTM_NEWNEIGH, RTM_DELNEIGH);
        assert!(foreign(&mut st, neigh(new, AddressFamily::Bridge, 5)), "no window: someone else");
        assert!(!foreign(&mut st, neigh(new, AddressFamily::Bridge, 6)), "not a VXLAN device");
        assert!(!foreign(&mut st, neigh(new, AddressFamily::Inet, 9)), "not our device");

        let mut w = Expect::default();
        w.entries.insert((5, new, u8::from(AddressFamily::Bridge)));
        st.window = Some(w);
        assert!(!foreign(&mut st, neigh(new, AddressFamily::Bridge, 5)), "an FDB entry we add");
        assert!(foreign(&mut st, neigh(del, AddressFamily::Bridge, 5)), "an FDB entry someone deletes");
        assert!(foreign(&mut st, neigh(new, AddressFamily::Inet, 5)), "a neighbour someone adds");
        assert!(foreign(&mut st, link(7, "ovbr4097")), "a link someone makes");
        assert!(!foreign(&mut st, link(8, "eth1")), "not our link");
        st.window.as_mut().expect("open").links = true;
        assert!(!foreign(&mut st, link(7, "ovbr4097")), "after our link ops, everything is ours");
        assert!(!foreign(&mut st, neigh(del, AddressFamily::Bridge, 5)));
        assert_eq!(st.ours.links.get(&7), Some(&false), "learnt, not a VXLAN device");
    }

    #[test]
    fn a_lost_notification_counts_as_someone_elses() {
        let window = Some(Expect::default());
        let mut st =
            State { ours: Ours::default(), window, foreign: false, cache: Cache::default(), rx: Vec::new() };
        st.take(Err(io::Error::from_raw_os_error(nix::errno::Errno::ENOBUFS as i32))).expect("noted");
        assert!(st.foreign);
        assert!(st.take(Err(io::Error::other("closed"))).is_err());
    }

    #[test]
    fn deleting_a_neighbour_is_announced_twice() {
        let del = Op::DelNeigh { dev: "ovvx1".into(), ip: [10, 0, 0, 1].into() };
        assert_eq!(notified(&del).len(), 2);
        assert!(notified(&Op::SetUp { name: "ovbr1".into() }).is_empty());
    }
}
