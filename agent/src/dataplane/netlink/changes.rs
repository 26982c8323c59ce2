//! `changes`: `ip monitor link neigh` for the reconcile loop.
//!
//! A socket subscribed to RTNLGRP_LINK and RTNLGRP_NEIGH wakes the loop when
//! one of our links changes or an FDB/neighbour entry of one of our VXLAN
//! devices does. Everything else (the underlay's ARP entries ageing, MACs the
//! bridges learn) is ignored, so nothing here happens per packet. Bursts are
//! coalesced: after the first relevant event, events are drained for
//! [`COALESCE`] before one wake-up is sent, so the agent's own batch of changes
//! costs one extra (empty) pass. A lost notification (socket overrun) wakes
//! the loop too: it re-reads everything anyway.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc::error::TrySendError;

use super::{dump_links, link_name};
use crate::dataplane::{Changes, DataplaneError};
use crate::model::DEVICE_PREFIX;

/// How long a burst of notifications is drained before one wake-up.
pub const COALESCE: Duration = Duration::from_millis(30);

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>;

/// Takes a connection already subscribed to [`GROUPS`], reads our current
/// links through `handle`, and spawns the task that feeds `Changes`.
pub(super) async fn subscribe(
    handle: &rtnetlink::Handle,
    connection: rtnetlink::proto::Connection<RouteNetlinkMessage>,
    messages: Messages,
) -> Result<Changes, DataplaneError> {
    // Subscribed first, dumped second: a link created in between shows up in both.
    let links = dump_links(handle)
        .await
        .map_err(|source| DataplaneError::Netlink { what: "ip link show".into(), source })?;
    let mut ours = Ours::default();
    for link in &links {
        ours.update(link, true);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        tokio::select! {
            _ = connection => {},
            _ = feed(messages, ours, tx) => {},
        }
    });
    Ok(Changes::new(rx))
}

/// The multicast groups to join: links and neighbours (which include FDB entries).
pub(super) const GROUPS: &[MulticastGroup] = &[MulticastGroup::Link, MulticastGroup::Neigh];

/// Our links by index, to tell which neighbour events concern us.
#[derive(Default)]
struct Ours {
    links: HashMap<u32, String>,
}

impl Ours {
    fn update(&mut self, link: &LinkMessage, present: bool) -> bool {
        let Some(name) = link_name(link).filter(|n| n.starts_with(DEVICE_PREFIX)) else {
            // A link renamed away from our prefix is no longer ours.
            return self.links.remove(&link.header.index).is_some();
        };
        if present {
            self.links.insert(link.header.index, name.to_string());
        } else {
            self.links.remove(&link.header.index);
        }
        true
    }

    /// Whether the message concerns our devices (and updates the index).
    fn relevant(&mut self, msg: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        let vxlan_prefix = format!("{DEVICE_PREFIX}vx");
        match &msg.payload {
            NetlinkPayload::Overrun(_) => true,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => self.update(l, true),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => self.update(l, false),
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n),
            ) => self.links.get(&n.header.ifindex).is_some_and(|name| name.starts_with(&vxlan_prefix)),
            _ => false,
        }
    }
}

/// Sends one wake-up per burst until the receiver or the socket goes away.
async fn feed(mut messages: Messages, mut ours: Ours, tx: tokio::sync::mpsc::Sender<()>) {
    loop {
        // Wait for the first relevant event ...
        loop {
            let Some((msg, _)) = messages.next().await else { return };
            if ours.relevant(&msg) {
                break;
            }
        }
        // ... then drain the burst.
        let deadline = tokio::time::Instant::now() + COALESCE;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                msg = messages.next() => match msg {
                    Some((msg, _)) => { ours.relevant(&msg); }
                    None => return,
                },
            }
        }
        if let Err(TrySendError::Closed(_)) = tx.try_send(()) {
            return;
        }
    }
}
