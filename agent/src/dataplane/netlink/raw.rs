//! `raw`: a plain netlink socket for bulk work: NETLINK_ROUTE beside
//! rtnetlink's, and NETLINK_NETFILTER for the firewall table.
//!
//! rtnetlink's connection sends one request per wake-up and decodes every
//! answer into owned messages; at 20,000 FDB and neighbour entries that is
//! most of a cold start. Here requests go many per `sendmsg` (the kernel
//! handles them in order, one ACK each, like `ip -batch` without the waits),
//! and dumps are read straight off the socket: the caller sees each message's
//! bytes and keeps only what it needs, so no vector of decoded messages is
//! ever built. The design decision: ACKs are matched to requests by sequence
//! number, and before each batch is sent the socket's buffers are sized from
//! it, as `nft` does (the send buffer to the datagram, the receive buffer to
//! its ACKs), so a large nf_tables transaction is neither refused (EMSGSIZE)
//! nor reported failed for ACKs the receive buffer dropped. Route batches
//! stay at [`BATCH`] requests; the firewall's is one transaction, any size.

use std::io;
use std::sync::Arc;

use futures::future::poll_fn;
use netlink_packet_core::{
    ErrorBuffer, ErrorMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkMessage, NetlinkSerializable, Parseable,
};
use netlink_sys::{
    AsyncSocket, SocketAddr, TokioSocket, protocols::NETLINK_NETFILTER, protocols::NETLINK_ROUTE,
};

/// Requests per `sendmsg` of route (FDB, neighbour) work. Each ACK takes
/// well under 1 KiB of the receive buffer (see [`RCVBUF`]).
pub(super) const BATCH: usize = 128;
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RCVBUF: usize = 1 << 20;
/// Large enough for any netlink datagram (32 KiB since Linux 4.9).
const RX_LEN: usize = 64 * 1024;
/// Room in the receive buffer per answer asked for (nft's
/// `NFT_NLMSG_MAXSIZE`-based estimate: an ACK echoes the request's header).
const ACK_MAX: usize = 1024;
/// What the kernel takes of a send buffer beyond the datagram itself.
const SLACK: usize = 4096;

/// The socket, shared by clones; one batch or dump at a time.
#[derive(Clone)]
pub(super) struct Raw {
    inner: Arc<tokio::sync::Mutex<Inner>>,
}

struct Inner {
    sock: TokioSocket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

/// Why a bulk request got no answer of its own.
#[derive(Debug)]
pub(super) enum RawError {
    /// The kernel's answer: an error code (EEXIST, ENOENT, ...).
    Netlink(rtnetlink::Error),
    /// The socket failed, or an ACK was lost (ENOBUFS): the outcome is unknown.
    Io(String),
}

impl Raw {
    /// Opens a NETLINK_ROUTE socket in the current namespace; must run
    /// inside a tokio runtime.
    pub(super) fn open() -> io::Result<Raw> {
        Self::open_protocol(NETLINK_ROUTE)
    }

    /// Opens a NETLINK_NETFILTER socket (nf_tables) in the current namespace.
    pub(super) fn open_netfilter() -> io::Result<Raw> {
        Self::open_protocol(NETLINK_NETFILTER)
    }

    fn open_protocol(protocol: isize) -> io::Result<Raw> {
        let mut sock = TokioSocket::new(protocol)?;
        sock.socket_mut().bind_auto()?;
        sock.socket_ref().connect(&SocketAddr::new(0, 0))?;
        // Best effort: the default buffer holds a batch's ACKs as well.
        let _ = sock.socket_ref().set_rx_buf_sz(RCVBUF);
        let inner = Inner { sock, seq: 0, tx: Vec::new(), rx: Vec::with_capacity(RX_LEN) };
        Ok(Raw { inner: Arc::new(tokio::sync::Mutex::new(inner)) })
    }

    /// Sends `requests` (route work: at most [`BATCH`]; an nf_tables
    /// transaction: any size, the buffers are fitted to it) in one
    /// `sendmsg` and returns each one's outcome, in order. A request with `NLM_F_ACK` among its
    /// flags is answered either way; one without it (an nf_tables batch
    /// begin or end) only when it fails, and that answer ends the wait: what
    /// is still unanswered then was not carried out.
    pub(super) async fn batch<M: NetlinkSerializable>(
        &self,
        requests: Vec<NetlinkMessage<M>>,
    ) -> Vec<Result<(), RawError>> {
        let mut inner = self.inner.lock().await;
        let n = requests.len();
        let acked: Vec<bool> = requests.iter().map(|r| r.header.flags & NLM_F_ACK != 0).collect();
        let first = inner.seq.wrapping_add(1);
        inner.seq = inner.seq.wrapping_add(n as u32);
        inner.tx.clear();
        for (i, mut req) in requests.into_iter().enumerate() {
            req.header.sequence_number = first.wrapping_add(i as u32);
            req.finalize();
            let at = inner.tx.len();
            inner.tx.resize(at + req.buffer_len(), 0);
            req.serialize(&mut inner.tx[at..]);
        }
        let mut out: Vec<Option<Result<(), RawError>>> = (0..n).map(|_| None).collect();
        inner.fit(acked.iter().filter(|a| **a).count());
        if let Err(e) = inner.send().await {
            return fail_rest(out, &format!("sending to the kernel: {e}"));
        }
        let mut waiting = acked.iter().filter(|a| **a).count();
        while waiting > 0 {
            let got = inner.recv().await;
            if let Err(e) = got {
                return fail_rest(out, &format!("reading the kernel's answers: {e}"));
            }
            for msg in messages(&inner.rx) {
                let Some(slot) = msg.seq.wrapping_sub(first).try_into().ok().filter(|i: &usize| *i < n)
                else {
                    continue; // an answer to an earlier, abandoned batch
                };
                if msg.kind == NLMSG_ERROR && out[slot].is_none() {
                    out[slot] = Some(ack(msg.payload));
                    waiting = if acked[slot] { waiting.saturating_sub(1) } else { 0 };
                }
            }
        }
        let never = "not carried out: the batch ended at an earlier error";
        out.into_iter()
            .zip(acked)
            .map(|(r, acked)| {
                r.unwrap_or_else(|| if acked { Err(RawError::Io(never.into())) } else { Ok(()) })
            })
            .collect()
    }

    /// Dumps with `request` (`NLM_F_DUMP` is added) and calls `each` with the
    /// type and payload of every message of the answer.
    pub(super) async fn dump<M: NetlinkSerializable>(
        &self,
        mut request: NetlinkMessage<M>,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), RawError> {
        let mut inner = self.inner.lock().await;
        inner.seq = inner.seq.wrapping_add(1);
        let seq = inner.seq;
        request.header.sequence_number = seq;
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        request.finalize();
        inner.tx.clear();
        inner.tx.resize(request.buffer_len(), 0);
        request.serialize(&mut inner.tx);
        inner.send().await.map_err(|e| RawError::Io(format!("sending a dump request: {e}")))?;
        loop {
            inner.recv().await.map_err(|e| RawError::Io(format!("reading a dump: {e}")))?;
            for msg in messages(&inner.rx) {
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return ack(msg.payload),
                    kind => each(kind, msg.payload),
                }
            }
        }
    }
}

impl Inner {
    /// Sizes the socket's buffers for the datagram in `tx` and `acks`
    /// answers, as `nft` does: the kernel refuses a datagram larger than
    /// the send buffer (EMSGSIZE) and drops answers that overflow the
    /// receive buffer (ENOBUFS: a committed batch would look failed). The
    /// FORCE options (CAP_NET_ADMIN) pass `net.core.{w,r}mem_max`; without
    /// the capability the plain ones are tried. Only ever grows them.
    fn fit(&mut self, acks: usize) {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        let sock = self.sock.socket_ref();
        let send = self.tx.len() + SLACK;
        if getsockopt(sock, sockopt::SndBuf).is_ok_and(|have| have < send)
            && setsockopt(sock, sockopt::SndBufForce, &send).is_err()
        {
            let _ = setsockopt(sock, sockopt::SndBuf, &send);
        }
        let recv = acks.saturating_mul(ACK_MAX).max(RCVBUF);
        if getsockopt(sock, sockopt::RcvBuf).is_ok_and(|have| have < recv)
            && setsockopt(sock, sockopt::RcvBufForce, &recv).is_err()
        {
            let _ = setsockopt(sock, sockopt::RcvBuf, &recv);
        }
    }

    /// Writes `tx` as one datagram.
    async fn send(&mut self) -> io::Result<()> {
        let sent = poll_fn(|cx| self.sock.poll_send(cx, &self.tx)).await?;
        if sent != self.tx.len() {
            return Err(io::Error::other("short write to the netlink socket"));
        }
        Ok(())
    }

    /// Reads one datagram into `rx`.
    async fn recv(&mut self) -> io::Result<()> {
        self.rx.clear();
        let Inner { sock, rx, .. } = self;
        poll_fn(|cx| sock.poll_recv(cx, rx)).await
    }
}

/// One netlink message inside a datagram.
pub(super) struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of one datagram; stops at the first malformed one.
pub(super) fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let buf = NetlinkBuffer::new_checked(rest).ok()?;
        let len = buf.length() as usize;
        let msg = Message { kind: buf.message_type(), seq: buf.sequence_number(), payload: buf.payload() };
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some(msg)
    })
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The outcome carried by an `NLMSG_ERROR` payload (code 0 is an ACK).
fn ack(payload: &[u8]) -> Result<(), RawError> {
    let parsed = ErrorBuffer::new_checked(&payload).and_then(|b| ErrorMessage::parse(&b));
    match parsed {
        Ok(msg) if msg.code.is_none() => Ok(()),
        Ok(msg) => Err(RawError::Netlink(rtnetlink::Error::NetlinkError(msg))),
        Err(e) => Err(RawError::Io(format!("malformed netlink answer: {e}"))),
    }
}

/// An error answer with this errno, as the kernel would send it.
#[cfg(test)]
fn nack(errno: i32) -> ErrorMessage {
    let mut msg = ErrorMessage::default();
    msg.code = std::num::NonZeroI32::new(-errno);
    msg
}

fn fail_rest(out: Vec<Option<Result<(), RawError>>>, why: &str) -> Vec<Result<(), RawError>> {
    out.into_iter().map(|r| r.unwrap_or_else(|| Err(RawError::Io(why.to_string())))).collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{Emitable, NetlinkHeader, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;

    use super::*;

    fn datagram(msgs: Vec<NetlinkMessage<RouteNetlinkMessage>>) -> Vec<u8> {
        let mut out = Vec::new();
        for mut m in msgs {
            m.finalize();
            let at = out.len();
            out.resize(at + align4(m.buffer_len()), 0);
            m.serialize(&mut out[at..]);
        }
        out
    }

    fn error(seq: u32, msg: ErrorMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::Error(msg));
        m.header.sequence_number = seq;
        m
    }

    #[test]
    fn acks_and_nacks_are_told_apart_by_sequence_number() {
        let bytes = datagram(vec![error(7, ErrorMessage::default()), error(8, nack(17))]);
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.iter().map(|m| (m.kind, m.seq)).collect::<Vec<_>>(), [(2, 7), (2, 8)]);
        assert!(ack(msgs[0].payload).is_ok());
        match ack(msgs[1].payload) {
            Err(RawError::Netlink(e)) => assert!(super::super::is_errno(&e, &[nix::errno::Errno::EEXIST])),
            other => panic!("{other:?}"),
        }
        assert_eq!(nack(17).buffer_len(), 4);
    }

    #[test]
    fn a_truncated_datagram_yields_what_is_whole() {
        let mut bytes = datagram(vec![error(1, ErrorMessage::default()), error(2, ErrorMessage::default())]);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(messages(&bytes).count(), 1);
    }
}
