//! DNS helpers for the lab: queries sent from inside a container's
//! namespace (UDP or TCP, hickory-proto for the wire format), lookups as a
//! user makes them (`getent`), and a tiny "outside" resolver to forward to.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one query for `name` from inside namespace `ns` (an `ip netns`
/// name) to `server`, port 53; waits at most `wait`.
pub fn query(
    ns: &str,
    server: Ipv4Addr,
    name: &str,
    t: RecordType,
    tcp: bool,
    wait: Duration,
) -> anyhow::Result<Message> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, t));
    let bytes = m.to_vec()?;
    let answer = raw(ns, server, bytes, tcp, wait)?;
    Ok(Message::from_vec(&answer)?)
}

/// Sends `bytes` as they are and returns the answer's bytes.
pub fn raw(ns: &str, server: Ipv4Addr, bytes: Vec<u8>, tcp: bool, wait: Duration) -> anyhow::Result<Vec<u8>> {
    let path = PathBuf::from(format!("/run/netns/{ns}"));
    let to = SocketAddr::from((server, 53));
    let got = ovnet_agent::netns::block_on_in_netns(&path, move || async move {
        let ask = async {
            if tcp {
                let mut s = tokio::net::TcpStream::connect(to).await?;
                s.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
                s.write_all(&bytes).await?;
                let n = s.read_u16().await?;
                let mut buf = vec![0u8; usize::from(n)];
                s.read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(buf)
            } else {
                let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
                s.send_to(&bytes, to).await?;
                let mut buf = vec![0u8; 65535];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
        };
        tokio::time::timeout(wait, ask).await
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(got.context("no DNS answer in time")??)
}

/// The A addresses of an answer, in order; an error names the rcode.
pub fn addresses(m: &Message) -> Result<Vec<Ipv4Addr>, ResponseCode> {
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(m.metadata.response_code);
    }
    Ok(m.answers.iter().filter_map(|r| if let RData::A(A(ip)) = r.data { Some(ip) } else { None }).collect())
}

/// `ip netns exec NS getent hosts NAME`: the first address, if it resolves.
pub fn getent(ns: &str, name: &str) -> Option<String> {
    let out = Command::new("ip").args(["netns", "exec", ns, "getent", "hosts", name]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    out.status.success().then(|| text.split_whitespace().next().map(str::to_string)).flatten()
}

/// A resolver "outside" (in namespace `ns`, on `addr`:53, UDP and TCP)
/// that answers A for `names` and NXDOMAIN for anything else; stops on drop.
pub struct Outside {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outside {
    pub fn start(ns_path: &str, addr: Ipv4Addr, names: Vec<(String, Ipv4Addr)>) -> anyhow::Result<Outside> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = PathBuf::from(ns_path);
        let thread = std::thread::spawn(move || {
            let _ = ovnet_agent::netns::block_on_in_netns(&path, move || async move {
                let to = SocketAddr::from((addr, 53));
                let (udp, tcp) =
                    match (tokio::net::UdpSocket::bind(to).await, tokio::net::TcpListener::bind(to).await) {
                        (Ok(u), Ok(t)) => (u, t),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = serve_udp(udp, &names) => {}
                    _ = serve_tcp(tcp, &names) => {}
                    _ = stopped => {}
                }
            });
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Outside { stop: Some(stop), thread: Some(thread) }),
            Ok(Err(e)) => anyhow::bail!("outside resolver: {e}"),
            Err(_) => anyhow::bail!("outside resolver did not start"),
        }
    }

    /// Stops it and waits until its sockets are closed.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop();
    }
}

fn respond(data: &[u8], names: &[(String, Ipv4Addr)]) -> Option<Vec<u8>> {
    let q = Message::from_vec(data).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    let wanted = question.name().to_ascii().to_ascii_lowercase();
    match names.iter().find(|(n, _)| *n == wanted) {
        Some((_, ip)) if question.query_type() == RecordType::A => {
            m.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(*ip))));
        }
        Some(_) => {}
        None => m.metadata.response_code = ResponseCode::NXDomain,
    }
    m.to_vec().ok()
}

async fn serve_udp(s: tokio::net::UdpSocket, names: &[(String, Ipv4Addr)]) {
    let mut buf = vec![0u8; 65535];
    while let Ok((n, from)) = s.recv_from(&mut buf).await {
        if let Some(answer) = respond(&buf[..n], names) {
            let _ = s.send_to(&answer, from).await;
        }
    }
}

async fn serve_tcp(l: tokio::net::TcpListener, names: &[(String, Ipv4Addr)]) {
    while let Ok((mut s, _)) = l.accept().await {
        let Ok(n) = s.read_u16().await else { continue };
        let mut buf = vec![0u8; usize::from(n)];
        if s.read_exact(&mut buf).await.is_err() {
            continue;
        }
        if let Some(answer) = respond(&buf, names) {
            let _ = s.write_all(&(answer.len() as u16).to_be_bytes()).await;
            let _ = s.write_all(&answer).await;
        }
    }
}
