//! The UDP and TCP listeners of one address, and what they do with a packet.
//!
//! The design decision: a query answered from the zone is answered inline by
//! the receive loop (no task, no await but the send), so a flood costs only
//! what parsing costs; only forwards get a task, and only while one of
//! `MAX_FORWARDS` permits is free (else SERVFAIL at once), as TCP
//! connections take one of `MAX_TCP` permits (else the connection is closed).
//! Nothing a client sends can make the agent allocate more than that, wait
//! for it longer than `TCP_IDLE`, or panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tracing::debug;

use super::DnsMetrics;
use super::forward::Upstreams;
use super::zone::{Outcome, Zone, answer, reply};

/// Forwards in flight at once, over all listeners.
pub const MAX_FORWARDS: usize = 256;
/// TCP connections open at once, over all listeners.
pub const MAX_TCP: usize = 64;
/// How long a TCP client may stay silent.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// The UDP answer size without EDNS (RFC 1035).
const UDP_PLAIN: usize = 512;

/// What every listener shares.
pub struct Shared {
    pub zone: watch::Receiver<Arc<Zone>>,
    pub upstreams: Upstreams,
    pub metrics: DnsMetrics,
    pub turn: AtomicUsize,
    pub forwards: Arc<Semaphore>,
    pub tcp: Arc<Semaphore>,
}

/// What to do with one received message.
enum Step {
    Reply(Vec<u8>),
    Forward(Message),
    Drop,
}

impl Shared {
    pub fn new(zone: watch::Receiver<Arc<Zone>>, upstreams: Upstreams, metrics: DnsMetrics) -> Self {
        Shared {
            zone,
            upstreams,
            metrics,
            turn: AtomicUsize::new(0),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp: Arc::new(Semaphore::new(MAX_TCP)),
        }
    }

    /// Answers from the zone, or says to forward; never waits.
    fn step(&self, data: &[u8], src: SocketAddr, tcp: bool) -> Step {
        let query = match Message::from_vec(data) {
            Ok(m) => m,
            Err(_) => {
                self.metrics.failure("malformed");
                return match data.get(..2) {
                    Some(id) => {
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), tcp, None)
                    }
                    None => Step::Drop,
                };
            }
        };
        if query.metadata.message_type != MessageType::Query {
            return Step::Drop;
        }
        self.metrics.query();
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            self.metrics.failure("unsupported");
            return encode(&reply(&query, ResponseCode::NotImp), tcp, None);
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let zone = self.zone.borrow().clone();
        match answer(&zone, &query, src.ip(), turn) {
            Outcome::Answer(msg) => {
                self.metrics.answer(&msg);
                let limit = query.edns.as_ref().map(|e| usize::from(e.max_payload()).max(UDP_PLAIN));
                encode(&msg, tcp, limit)
            }
            Outcome::Forward => Step::Forward(query),
        }
    }

    /// The upstream answer to `query` (wire bytes `data`), or SERVFAIL.
    async fn forward(&self, query: &Message, data: &[u8], tcp: bool) -> Vec<u8> {
        self.metrics.forwarded();
        match self.upstreams.forward(data, tcp).await {
            Some(bytes) => bytes,
            None => {
                self.metrics.failure("upstream");
                servfail(query)
            }
        }
    }
}

fn servfail(query: &Message) -> Vec<u8> {
    reply(query, ResponseCode::ServFail).to_vec().unwrap_or_default()
}

/// The wire form of `msg`; over UDP cut to the header and question with TC
/// set when it is longer than the client takes.
fn encode(msg: &Message, tcp: bool, limit: Option<usize>) -> Step {
    let Ok(bytes) = msg.to_vec() else {
        return Step::Drop;
    };
    if tcp || bytes.len() <= limit.unwrap_or(UDP_PLAIN) {
        return Step::Reply(bytes);
    }
    match msg.truncate().to_vec() {
        Ok(cut) => Step::Reply(cut),
        Err(_) => Step::Drop,
    }
}

/// A UDP socket bound to `addr` even before the address is on an interface
/// (`IP_FREEBIND`: the gateway appears when the bridge is built).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_freebind_v4(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A TCP listener on `addr`, bound as `bind_udp`.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_freebind_v4(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

/// Serves UDP on `sock` until aborted.
pub async fn serve_udp(shared: Arc<Shared>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        match shared.step(&buf[..n], src, false) {
            Step::Reply(bytes) => {
                let _ = sock.send_to(&bytes, src).await;
            }
            Step::Drop => {}
            Step::Forward(query) => match shared.forwards.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (shared, sock, data) = (shared.clone(), sock.clone(), buf[..n].to_vec());
                    tokio::spawn(async move {
                        let bytes = shared.forward(&query, &data, false).await;
                        let _ = sock.send_to(&bytes, src).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    shared.metrics.failure("busy");
                    let _ = sock.send_to(&servfail(&query), src).await;
                }
            },
        }
    }
}

/// Serves TCP on `listener` until aborted.
pub async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = shared.tcp.clone().try_acquire_owned() else {
            shared.metrics.failure("busy");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TCP_IDLE * 12, tcp_session(&shared, stream, src)).await;
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed queries until the client stops.
async fn tcp_session(shared: &Shared, mut stream: TcpStream, src: SocketAddr) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut data = vec![0u8; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut data)).await??;
        let bytes = match shared.step(&data, src, true) {
            Step::Reply(bytes) => bytes,
            Step::Drop => return Ok(()),
            Step::Forward(query) => shared.forward(&query, &data, true).await,
        };
        let len = u16::try_from(bytes.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::NetZone;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    use std::collections::BTreeMap;

    fn shared(n: u8) -> Shared {
        let ips = (1..=n).map(|i| std::net::Ipv4Addr::new(10, 1, 0, i)).collect();
        let net = NetZone {
            domain: "blue".into(),
            subnet: "10.1.0.0/16".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            names: BTreeMap::from([("many".to_string(), ips)]),
            reverse: BTreeMap::new(),
        };
        let (_, rx) = watch::channel(Arc::new(Zone { nets: vec![net] }));
        Shared::new(rx, Upstreams::new("/dev/null".into(), |_| false), DnsMetrics::default())
    }

    fn ask(name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn reply_of(step: Step) -> Message {
        match step {
            Step::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            Step::Forward(_) => panic!("forwarded"),
            Step::Drop => panic!("dropped"),
        }
    }

    const SRC: &str = "10.1.2.3:5353";

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let s = shared(1);
        let src = SRC.parse().unwrap();
        let m = reply_of(s.step(&[0x12, 0x34, 0xff], src, false));
        assert_eq!((m.metadata.id, m.metadata.response_code), (0x1234, ResponseCode::FormErr));
        assert!(matches!(s.step(&[7], src, false), Step::Drop));
        assert!(matches!(s.step(&[], src, true), Step::Drop));
        let mut response = Message::from_vec(&ask("many.")).unwrap();
        response.metadata.message_type = MessageType::Response;
        assert!(
            matches!(s.step(&response.to_vec().unwrap(), src, false), Step::Drop),
            "answers are not answered"
        );
    }

    #[test]
    fn a_long_answer_is_truncated_over_udp_only() {
        let s = shared(100);
        let src = SRC.parse().unwrap();
        let udp = reply_of(s.step(&ask("many."), src, false));
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = reply_of(s.step(&ask("many."), src, true));
        assert_eq!((tcp.metadata.truncation, tcp.answers.len()), (false, 100));
    }

    #[test]
    fn others_are_forwarded() {
        let s = shared(1);
        assert!(matches!(s.step(&ask("example.com."), SRC.parse().unwrap(), false), Step::Forward(_)));
        assert!(matches!(s.step(&ask("many."), "192.0.2.1:53".parse().unwrap(), false), Step::Forward(_)));
    }

    #[tokio::test]
    async fn no_resolver_is_servfail_at_once() {
        let s = shared(1);
        let q = Message::from_vec(&ask("example.com.")).unwrap();
        let bytes = s.forward(&q, &ask("example.com."), false).await;
        assert_eq!(Message::from_vec(&bytes).unwrap().metadata.response_code, ResponseCode::ServFail);
    }
}
