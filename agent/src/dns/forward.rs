//! Forwarding of the names that are not ovnet's to the host's resolvers.
//!
//! The resolvers are the `nameserver` lines of the agent's resolv.conf, read
//! again when the file changes (checked at most once a second), minus the
//! addresses the agent itself answers on (no loop). The query's bytes go out
//! as they came and the first answer with the same id comes back as it is
//! (its rcode included), over UDP or TCP as the client asked. Each resolver
//! gets `PER_SERVER`, the whole forward at most `TOTAL`; when none answers
//! the caller sends SERVFAIL.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one resolver may take to answer.
pub const PER_SERVER: Duration = Duration::from_millis(1500);
/// How long a forward may take in all.
pub const TOTAL: Duration = Duration::from_secs(3);

/// The host's resolvers, from a resolv.conf.
pub struct Upstreams {
    path: PathBuf,
    /// Addresses never forwarded to (the agent's own).
    own: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
    cache: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    servers: Vec<SocketAddr>,
}

impl Upstreams {
    pub fn new(path: PathBuf, own: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        Upstreams { path, own: Box::new(own), cache: Mutex::new(Cached::default()) }
    }

    /// The resolvers to ask, in resolv.conf's order.
    pub fn servers(&self) -> Vec<SocketAddr> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return c.servers.clone();
        }
        c.checked = Some(Instant::now());
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != c.modified || modified.is_none() {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            c.servers = nameservers(&text)
                .into_iter()
                .filter(|ip| !(self.own)(*ip))
                .map(|ip| (ip, 53).into())
                .collect();
            c.modified = modified;
        }
        c.servers.clone()
    }

    /// The first answer of a resolver to `query` (wire bytes), or `None`.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let id = query.get(..2)?.to_vec();
        let started = Instant::now();
        for server in self.servers() {
            let left = TOTAL.checked_sub(started.elapsed())?;
            let wait = left.min(PER_SERVER);
            let asked: Asking<'_> =
                if tcp { ask_tcp(server, query) } else { Box::pin(ask_udp(server, query, &id)) };
            if let Ok(Ok(answer)) = timeout(wait, asked).await {
                return Some(answer);
            }
        }
        None
    }
}

type Asking<'a> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<u8>>> + Send + 'a>>;

async fn ask_udp(server: SocketAddr, query: &[u8], id: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 12 && buf[..2] == *id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

fn ask_tcp(server: SocketAddr, query: &[u8]) -> Asking<'_> {
    Box::pin(async move {
        let mut s = TcpStream::connect(server).await?;
        let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(query).await?;
        let n = s.read_u16().await?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    })
}

/// The `nameserver` addresses of a resolv.conf text.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().collect::<Vec<_>>().get(..2).map(|w| (w[0], w[1])))
        .filter(|(k, _)| *k == "nameserver")
        .filter_map(|(_, v)| v.split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers() {
        let text =
            "# c\nsearch x\nnameserver 10.0.0.1\nnameserver  ::1\nnameserver bad\nnameserver\noptions a\n";
        let want: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(nameservers(text), want);
    }
}
