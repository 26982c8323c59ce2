//! `entries`: FDB and neighbour ops in bulk, and the device indexes they need.
//!
//! The planner emits a network's entries as one run after its links. A run
//! resolves each device's index once (not per op), then goes to the kernel
//! over the [`raw`](super::raw) socket, [`BATCH`] requests per `sendmsg`. The
//! design decision: the kernel handles the requests of a socket strictly in
//! the order they were written, so the planner's order (additions before
//! removals) holds exactly as if each op waited for the previous one's ACK;
//! only the waiting is gone. Each op still gets its own outcome: EEXIST and
//! ENOENT are judged per op as before, and one failure does not stop the rest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use ovnet_ipam_store::Mac;

use super::changes::Window;
use super::raw::{BATCH, Raw, RawError};
use super::{OpError, index_of, ok_if_missing};
use crate::dataplane::DataplaneError;
use crate::op::Op;

/// Link indexes by name, looked up once per `apply` and forgotten when an op
/// creates or deletes the link.
#[derive(Default)]
pub(super) struct Indexes(HashMap<String, Option<u32>>);

impl Indexes {
    /// The index of link `name` (`None`: no such link).
    pub(super) async fn get(
        &mut self,
        h: &rtnetlink::Handle,
        name: &str,
    ) -> Result<Option<u32>, rtnetlink::Error> {
        if let Some(known) = self.0.get(name) {
            return Ok(*known);
        }
        let index = index_of(h, name).await?;
        self.0.insert(name.to_string(), index);
        Ok(index)
    }

    /// The index of link `name`; its absence is an error naming it.
    pub(super) async fn require(&mut self, h: &rtnetlink::Handle, name: &str) -> Result<u32, OpError> {
        self.get(h, name).await?.ok_or_else(|| OpError::NoDevice(name.to_string()))
    }

    pub(super) fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// Whether `op` is an FDB or neighbour entry op (handled in bulk here).
pub(super) fn is_entry(op: &Op) -> bool {
    matches!(op, Op::AddFdb { .. } | Op::DelFdb { .. } | Op::AddNeigh { .. } | Op::DelNeigh { .. })
}

/// The device an entry op acts on.
fn dev_of(op: &Op) -> &str {
    match op {
        Op::AddFdb { dev, .. }
        | Op::DelFdb { dev, .. }
        | Op::AddNeigh { dev, .. }
        | Op::DelNeigh { dev, .. } => dev,
        _ => "",
    }
}

/// Applies a run of entry ops in order; failures go to `errors`, in order.
pub(super) async fn apply_run(
    h: &rtnetlink::Handle,
    raw: &Raw,
    indexes: &mut Indexes,
    window: &mut Window,
    run: &[Op],
    errors: &mut Vec<DataplaneError>,
) {
    for chunk in run.chunks(BATCH) {
        // Failures by position in the chunk, so they are reported in op order.
        let mut failed: Vec<(usize, DataplaneError)> = Vec::new();
        let mut requests = Vec::with_capacity(chunk.len());
        let mut sent = Vec::with_capacity(chunk.len());
        for (i, op) in chunk.iter().enumerate() {
            let index = match indexes.get(h, dev_of(op)).await {
                Ok(index) => index,
                Err(e) => {
                    failed.push((i, OpError::Netlink(e).into_dataplane(op)));
                    continue;
                }
            };
            match (index, request(op, index.unwrap_or(0))) {
                (Some(index), Some(req)) => {
                    window.expect(index, op);
                    requests.push(req);
                    sent.push(i);
                }
                // A removal from a device that is gone is done.
                (None, _) if !adds(op) => {}
                _ => failed.push((i, OpError::NoDevice(dev_of(op).to_string()).into_dataplane(op))),
            }
        }
        if !requests.is_empty() {
            for (i, outcome) in sent.into_iter().zip(raw.batch(requests).await) {
                if let Err(e) = judge(&chunk[i], outcome) {
                    failed.push((i, e.into_dataplane(&chunk[i])));
                }
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        errors.extend(failed.into_iter().map(|(_, e)| e));
    }
}

fn adds(op: &Op) -> bool {
    matches!(op, Op::AddFdb { .. } | Op::AddNeigh { .. })
}

/// An op's outcome with the idempotence rules: a missing entry counts as removed.
fn judge(op: &Op, outcome: Result<(), RawError>) -> Result<(), OpError> {
    match outcome {
        Ok(()) => Ok(()),
        Err(RawError::Io(e)) => Err(OpError::Io(e)),
        Err(RawError::Netlink(e)) if adds(op) => Err(OpError::Netlink(e)),
        Err(RawError::Netlink(e)) => Ok(ok_if_missing(Err(e))?),
    }
}

/// The request for an entry op on the device with `index`.
fn request(op: &Op, index: u32) -> Option<NetlinkMessage<RouteNetlinkMessage>> {
    let (msg, flags) = match op {
        Op::AddFdb { mac, dst, .. } => {
            let mode = if *mac == Mac::ZERO { NLM_F_APPEND } else { NLM_F_REPLACE };
            (RouteNetlinkMessage::NewNeighbour(fdb_message(index, *mac, *dst)), NLM_F_CREATE | mode)
        }
        Op::DelFdb { mac, dst, .. } => (RouteNetlinkMessage::DelNeighbour(fdb_message(index, *mac, *dst)), 0),
        Op::AddNeigh { ip, mac, .. } => {
            let mut msg = neigh_message(index, *ip);
            msg.header.state = NeighbourState::Permanent;
            msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
            (RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE)
        }
        Op::DelNeigh { ip, .. } => (RouteNetlinkMessage::DelNeighbour(neigh_message(index, *ip)), 0),
        _ => return None,
    };
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    Some(req)
}

/// An AF_BRIDGE `self` FDB entry of a VXLAN device: MAC behind remote VTEP
/// `dst` (`bridge fdb append MAC dev DEV dst DST self permanent`; a flood
/// entry, all-zeros MAC, is appended with `NLM_F_APPEND`, the only way to hold
/// one per peer; a unicast one replaces, one destination per MAC).
fn fdb_message(index: u32, mac: Mac, dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
    ];
    msg
}

/// An IPv4 neighbour entry (`ip neigh replace IP lladdr MAC dev DEV nud
/// permanent` once state and MAC are added; `ip neigh del IP dev DEV` as is).
fn neigh_message(index: u32, ip: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::from(IpAddr::V4(ip)))];
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_requests_carry_the_flags_of_their_iproute2_command() {
        let dev = "ovvx1".to_string();
        let (mac, dst, ip) =
            (Mac([2, 0x42, 10, 0, 0, 9]), Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(10, 0, 0, 9));
        let flags = |op: Op| request(&op, 7).expect("an entry op").header.flags;
        let (base, create) = (NLM_F_REQUEST | NLM_F_ACK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(flags(Op::AddFdb { dev: dev.clone(), mac: Mac::ZERO, dst }), create | NLM_F_APPEND);
        assert_eq!(flags(Op::AddFdb { dev: dev.clone(), mac, dst }), create | NLM_F_REPLACE);
        assert_eq!(flags(Op::AddNeigh { dev: dev.clone(), ip, mac }), create | NLM_F_REPLACE);
        assert_eq!(flags(Op::DelFdb { dev: dev.clone(), mac, dst }), base);
        assert_eq!(flags(Op::DelNeigh { dev: dev.clone(), ip }), base);
        assert!(request(&Op::SetUp { name: dev }, 7).is_none());
    }
}
