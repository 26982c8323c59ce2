//! Kernel changes as they happen: rtnetlink multicast sockets opened inside
//! a host namespace, and dumps of the FDB and neighbour tables.
//!
//! A [`Monitor`] joins rtnetlink groups (RTNLGRP_NEIGH for FDB and neighbour
//! entries, RTNLGRP_LINK for devices) on a socket created inside the
//! namespace; a reader thread stamps each message with the moment it arrived
//! and queues it. The design decision: waiting means blocking on that queue
//! with a deadline, never sleeping and looking again. A receive buffer
//! overrun (ENOBUFS: the kernel dropped notifications) is itself an event, so
//! a caller that counts entries re-reads the table with [`dump`] instead of
//! trusting a count with a hole in it.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};

use super::nsthread::in_netns;

/// rtnetlink multicast group of link changes.
pub const RTNLGRP_LINK: u32 = 1;
/// rtnetlink multicast group of neighbour and FDB changes.
pub const RTNLGRP_NEIGH: u32 = 3;
/// Receive buffer of a monitor (SO_RCVBUFFORCE): room for tens of thousands
/// of notifications, so a burst of programming is not dropped.
const RCVBUF: usize = 256 << 20;
/// How often a blocked reader looks at its stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// One kernel object we look for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A VXLAN FDB entry, `bridge fdb ... dev DEV dst DST` (AF_BRIDGE with a destination).
    Fdb { ifindex: u32, mac: [u8; 6], dst: Ipv4Addr },
    /// An IPv4 neighbour entry, `ip neigh ... nud permanent` (only permanent ones are new).
    Neigh { ifindex: u32, ip: Ipv4Addr },
    /// A link, by name.
    Link { name: String },
}

/// What a notification said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    New(Entry),
    Del(Entry),
    /// Notifications were lost (ENOBUFS).
    Overrun,
}

/// An event and when it arrived.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub at: Instant,
    pub event: Event,
}

/// A netlink multicast listener inside one namespace.
pub struct Monitor {
    ns: PathBuf,
    rx: Receiver<Stamped>,
    log: Vec<Stamped>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// A netlink socket opened inside the namespace at `ns`, bound, in `groups`.
fn open_socket(ns: &Path, groups: &[u32]) -> anyhow::Result<Socket> {
    let groups = groups.to_vec();
    in_netns(ns, move || {
        let mut s = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
        s.bind_auto().context("binding a netlink socket")?;
        for g in groups {
            s.add_membership(g).with_context(|| format!("joining rtnetlink group {g}"))?;
        }
        setsockopt(&s, sockopt::RcvBufForce, &RCVBUF).context("SO_RCVBUFFORCE")?;
        socket2::SockRef::from(&s).set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(s)
    })
}

impl Monitor {
    /// Starts listening to `groups` inside the namespace at `ns`.
    pub fn open(ns: &Path, groups: &[u32]) -> anyhow::Result<Monitor> {
        let sock = open_socket(ns, groups)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let reader = std::thread::Builder::new()
            .name("ovbench-netlink".into())
            .spawn(move || read_loop(&sock, &tx, &flag))
            .context("spawning a netlink reader")?;
        Ok(Monitor { ns: ns.to_path_buf(), rx, log: Vec::new(), stop, reader: Some(reader) })
    }

    /// Forgets every event received so far.
    pub fn clear(&mut self) {
        while self.rx.try_recv().is_ok() {}
        self.log.clear();
    }

    /// The next event, or `None` once `deadline` passed.
    pub fn recv(&mut self, deadline: Instant) -> anyhow::Result<Option<Stamped>> {
        if !self.log.is_empty() {
            return Ok(Some(self.log.remove(0)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(s) => Ok(Some(s)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the netlink reader of {} stopped", self.ns.display())
            }
        }
    }

    /// When the first event since the last [`clear`](Self::clear) for which
    /// `want` holds arrived, waiting for it until `deadline`.
    pub fn wait_for(&mut self, deadline: Instant, want: impl Fn(&Event) -> bool) -> anyhow::Result<Instant> {
        let mut seen = 0;
        loop {
            while let Ok(s) = self.rx.try_recv() {
                self.log.push(s);
            }
            if let Some(s) = self.log.iter().find(|s| want(&s.event)) {
                return Ok(s.at);
            }
            if self.log[seen..].iter().any(|s| s.event == Event::Overrun) {
                bail!("netlink notifications were lost in {} (receive buffer overrun)", self.ns.display());
            }
            seen = self.log.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out waiting for a kernel change in {}", self.ns.display());
            }
            match self.rx.recv_timeout(left) {
                Ok(s) => self.log.push(s),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the netlink reader of {} stopped", self.ns.display())
                }
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Reads notifications until `stop` is set or the queue's receiver is gone.
fn read_loop(sock: &Socket, tx: &Sender<Stamped>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                if tx.send(Stamped { at: Instant::now(), event: Event::Overrun }).is_err() {
                    return;
                }
                continue;
            }
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let at = Instant::now();
        for msg in messages(&buf[..n]) {
            if let Some(event) = event_of(msg)
                && tx.send(Stamped { at, event }).is_err()
            {
                return;
            }
        }
    }
}

/// The netlink messages in one datagram; undecodable ones are skipped.
fn messages(mut buf: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            out.push(msg);
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

fn event_of(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<Event> {
    match msg.payload {
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewNeighbour(m) => neigh_entry(&m, true).map(Event::New),
            RouteNetlinkMessage::DelNeighbour(m) => neigh_entry(&m, false).map(Event::Del),
            RouteNetlinkMessage::NewLink(m) => link_name(&m).map(|name| Event::New(Entry::Link { name })),
            RouteNetlinkMessage::DelLink(m) => link_name(&m).map(|name| Event::Del(Entry::Link { name })),
            _ => None,
        },
        _ => None,
    }
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The entry a neighbour message describes, if it is one we count:
/// a VXLAN FDB entry, or an IPv4 neighbour (permanent, when `new`).
fn neigh_entry(m: &NeighbourMessage, new: bool) -> Option<Entry> {
    let ifindex = m.header.ifindex;
    let dst = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
            Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        _ => None,
    })?;
    match m.header.family {
        AddressFamily::Bridge => {
            let mac = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => None,
            })?;
            Some(Entry::Fdb { ifindex, mac, dst })
        }
        AddressFamily::Inet if !new || m.header.state == NeighbourState::Permanent => {
            Some(Entry::Neigh { ifindex, ip: dst })
        }
        _ => None,
    }
}

/// Every VXLAN FDB entry and permanent IPv4 neighbour in the namespace at
/// `ns` (`bridge fdb show` + `ip neigh show nud permanent`).
pub fn dump(ns: &Path) -> anyhow::Result<HashSet<Entry>> {
    let sock = open_socket(ns, &[])?;
    let mut out = HashSet::new();
    for (seq, family) in [(1, AddressFamily::Bridge), (2, AddressFamily::Inet)] {
        let mut header = NeighbourMessage::default();
        header.header.family = family;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(header));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.header.sequence_number = seq;
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        sock.send_to(&bytes, &SocketAddr::new(0, 0), 0).context("sending a neighbour dump request")?;
        read_dump(&sock, &mut out).with_context(|| format!("dumping neighbours in {}", ns.display()))?;
    }
    Ok(out)
}

/// Reads one dump's answers into `out` until NLMSG_DONE.
fn read_dump(sock: &Socket, out: &mut HashSet<Entry>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        for msg in messages(&buf[..n]) {
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => bail!("netlink error {e:?}"),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                    out.extend(neigh_entry(&m, true));
                }
                _ => {}
            }
        }
    }
    bail!("no end of dump within 30 s")
}

/// How many FDB and neighbour entries a set holds.
pub fn count(entries: &HashSet<Entry>) -> (usize, usize) {
    let fdb = entries.iter().filter(|e| matches!(e, Entry::Fdb { .. })).count();
    let neigh = entries.iter().filter(|e| matches!(e, Entry::Neigh { .. })).count();
    (fdb, neigh)
}
