//! ICMP echo from inside a container namespace, one request a millisecond.
//!
//! A raw ICMP socket created inside the namespace sends an echo request every
//! millisecond until the first matching reply arrives; that arrival is the
//! measurement. The design decision: no `ping` process per measurement (its
//! start-up alone costs milliseconds) and nothing prepared in advance (no
//! ARP entry, no route), so the first reply shows when the path really works.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::nsthread::in_netns;

/// Time between two echo requests.
const STEP: Duration = Duration::from_millis(1);

/// Sends echo requests from one namespace.
pub struct Pinger {
    sock: Socket,
    id: u16,
    seq: u16,
}

/// A distinct ICMP identifier per pinger of this process.
fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16).wrapping_mul(31).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Pinger {
    /// A pinger whose socket lives in the namespace at `ns`.
    pub fn open(ns: &Path) -> anyhow::Result<Pinger> {
        let sock = in_netns(ns, || {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).context("opening a raw ICMP socket")
        })?;
        sock.set_nonblocking(true)?;
        Ok(Pinger { sock, id: next_id(), seq: 0 })
    }

    /// When the first echo reply from `dst` arrived; requests go out every
    /// millisecond (failed sends, e.g. before a route exists, count as sent).
    pub fn first_reply(&mut self, dst: Ipv4Addr, deadline: Instant) -> anyhow::Result<Instant> {
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let mut last_error = None;
        while Instant::now() < deadline {
            self.seq = self.seq.wrapping_add(1);
            if let Err(e) = self.sock.send_to(&echo_request(self.id, self.seq), &to) {
                last_error = Some(e);
            }
            let step_end = Instant::now() + STEP;
            if let Some(at) = self.reply_before(dst, step_end)? {
                return Ok(at);
            }
        }
        let why = last_error.map_or_else(String::new, |e| format!(" (last send: {e})"));
        bail!("no echo reply from {dst}{why}")
    }

    /// Waits until `until` for a reply of ours from `dst`.
    fn reply_before(&mut self, dst: Ipv4Addr, until: Instant) -> anyhow::Result<Option<Instant>> {
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = u16::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(ms)).context("poll")? == 0 {
                continue;
            }
            loop {
                match (&self.sock).read(&mut buf) {
                    Ok(n) if is_reply(&buf[..n], self.id, dst) => return Ok(Some(Instant::now())),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("reading ICMP"),
                }
            }
        }
    }
}

/// An ICMP echo request with 16 bytes of payload.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"ovbench-ovbench!");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (IPv4 header + ICMP, as a raw socket reads it) is an echo
/// reply from `dst` to pinger `id`.
fn is_reply(packet: &[u8], id: u16, dst: Ipv4Addr) -> bool {
    let Some(&first) = packet.first() else { return false };
    let ihl = usize::from(first & 0x0f) * 4;
    if packet.len() < ihl + 8 || ihl < 20 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[ihl..];
    src == dst && icmp[0] == 0 && icmp[1] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_to_zero_and_reply_is_recognised() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0);
        let mut reply = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        reply.extend_from_slice(&req);
        reply[20] = 0;
        assert!(is_reply(&reply, 0x1234, Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!is_reply(&reply, 0x1235, Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!is_reply(&reply, 0x1234, Ipv4Addr::new(10, 0, 0, 9)));
    }
}
