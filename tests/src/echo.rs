//! A TCP and UDP "who are you" server inside a namespace, and its client:
//! every connection or datagram is answered with the client's address as
//! the server sees it, so a test can tell whether a source was preserved
//! or masqueraded. Stopped (and its thread joined) on drop. Also the
//! "outside" namespace: a machine on the lab's underlay that is no ovnet host.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Where [`outside`] puts its namespace on the lab's underlay.
pub const OUTSIDE_IP: &str = "172.30.0.200";

/// A namespace on the lab's underlay bridge at [`OUTSIDE_IP`] that runs no
/// agent: a machine outside the cluster. Deleted on drop.
pub fn outside(lab: &crate::Lab) -> anyhow::Result<crate::Netns> {
    let ns = crate::Netns::new(&format!("ovl{}-out", lab.id))?;
    let u = &lab.underlay;
    u.ip(&["link", "add", "pout", "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
    u.ip(&["link", "set", "pout", "master", "ul", "up"])?;
    ns.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(ns)
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The server; answers until dropped.
pub struct Echo {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Listens on `0.0.0.0:port` for TCP and UDP inside the namespace at
    /// `netns` (a path), and returns once both sockets are bound.
    pub fn start(netns: &str, port: u16) -> anyhow::Result<Echo> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, is_bound) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = PathBuf::from(netns);
        let thread = std::thread::spawn(move || {
            let ran = ovnet_agent::netns::block_on_in_netns(&path, move || serve(port, bound, stopped));
            if let Err(e) = ran {
                eprintln!("echo server: {e}");
            }
        });
        match is_bound.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Echo { stop: Some(stop), thread: Some(thread) }),
            Ok(Err(e)) => bail!("echo server in {netns}: {e}"),
            Err(_) => bail!("echo server in {netns} did not start"),
        }
    }
}

async fn serve(
    port: u16,
    bound: std::sync::mpsc::Sender<Result<(), String>>,
    stopped: oneshot::Receiver<()>,
) {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let sockets = async {
        Ok::<_, std::io::Error>((
            tokio::net::TcpListener::bind(any).await?,
            tokio::net::UdpSocket::bind(any).await?,
        ))
    };
    let (tcp, udp) = match sockets.await {
        Ok(s) => s,
        Err(e) => {
            let _ = bound.send(Err(e.to_string()));
            return;
        }
    };
    let _ = bound.send(Ok(()));
    let answer = async {
        let mut buf = [0u8; 1500];
        loop {
            tokio::select! {
                Ok((mut s, peer)) = tcp.accept() => {
                    tokio::spawn(async move {
                        let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                        let _ = s.shutdown().await;
                    });
                }
                Ok((_, peer)) = udp.recv_from(&mut buf) => {
                    let _ = udp.send_to(format!("{}\n", peer.ip()).as_bytes(), peer).await;
                }
            }
        }
    };
    tokio::select! {
        _ = answer => {}
        _ = stopped => {}
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks the server at `to` from inside the namespace at `netns` (a path):
/// the address it saw, or why there was no answer within `timeout`.
pub fn ask(netns: &str, proto: Proto, to: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let path = PathBuf::from(netns);
    let answer = ovnet_agent::netns::block_on_in_netns(&path, move || async move {
        let work = async {
            let mut text = String::new();
            match proto {
                Proto::Tcp => {
                    let mut s = tokio::net::TcpStream::connect(to).await?;
                    s.read_to_string(&mut text).await?;
                }
                Proto::Udp => {
                    let s = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
                    s.send_to(b"?", to).await?;
                    let mut buf = [0u8; 64];
                    let (n, _) = s.recv_from(&mut buf).await?;
                    text = String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
            Ok::<_, std::io::Error>(text)
        };
        tokio::time::timeout(timeout, work).await
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .with_context(|| format!("no answer from {to} ({proto:?}) within {timeout:?}"))?
    .with_context(|| format!("asking {to} ({proto:?})"))?;
    let answer = answer.trim().to_string();
    if answer.is_empty() {
        bail!("{to} ({proto:?}) closed without an answer");
    }
    Ok(answer)
}
