//! VXLAN packets out of a capture file, as `tcpdump -w` writes it on an
//! Ethernet link: for each frame that is IPv4/UDP to port 4789, its VNI and
//! the inner frame's IPv4 (or ARP) source and destination.
//!
//! The design decision: the test reads the bytes itself (classic pcap,
//! either byte order, micro- or nanosecond stamps) rather than scraping
//! tcpdump's text output, whose format is not an interface.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};

/// The VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// One VXLAN packet seen on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPacket {
    pub vni: u32,
    /// The inner frame's EtherType (0x0800 IPv4, 0x0806 ARP, ...).
    pub ethertype: u16,
    /// Inner IPv4 source (ARP: sender) address, for IPv4 and ARP frames.
    pub src: Option<Ipv4Addr>,
    /// Inner IPv4 destination (ARP: target) address, for IPv4 and ARP frames.
    pub dst: Option<Ipv4Addr>,
}

/// Every VXLAN packet of a pcap file, in order; other frames are skipped.
pub fn vxlan_packets(pcap: &[u8]) -> anyhow::Result<Vec<VxlanPacket>> {
    let header = pcap.get(..24).context("shorter than a pcap header")?;
    let le = match header[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {:02x?})", &header[..4]),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le { u32::from_le_bytes(w) } else { u32::from_be_bytes(w) }
    };
    let link = u32_at(header, 20);
    if link != 1 {
        bail!("link type {link}, not Ethernet");
    }
    let mut out = Vec::new();
    let mut rest = &pcap[24..];
    while !rest.is_empty() {
        let record = rest.get(..16).context("a truncated record header")?;
        let len = u32_at(record, 8) as usize;
        let frame = rest.get(16..16 + len).context("a truncated record")?;
        out.extend(vxlan(frame));
        rest = &rest[16 + len..];
    }
    Ok(out)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// The payload of an Ethernet frame (one VLAN tag skipped) and its EtherType.
fn ethernet(frame: &[u8]) -> Option<(u16, &[u8])> {
    match be16(frame, 12)? {
        0x8100 => Some((be16(frame, 16)?, frame.get(18..)?)),
        ethertype => Some((ethertype, frame.get(14..)?)),
    }
}

/// The VXLAN packet an outer Ethernet frame carries, if it carries one.
fn vxlan(frame: &[u8]) -> Option<VxlanPacket> {
    let (0x0800, ip) = ethernet(frame)? else { return None };
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.get(9)? != &17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if be16(udp, 2)? != VXLAN_PORT {
        return None;
    }
    let vx = udp.get(8..)?;
    let vni = u32::from_be_bytes([0, *vx.get(4)?, *vx.get(5)?, *vx.get(6)?]);
    let (ethertype, inner) = ethernet(vx.get(8..)?)?;
    let (src, dst) = match ethertype {
        0x0800 => (ipv4_at(inner, 12), ipv4_at(inner, 16)),
        0x0806 => (ipv4_at(inner, 14), ipv4_at(inner, 24)),
        _ => (None, None),
    };
    Some(VxlanPacket { vni, ethertype, src, dst })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outer Ethernet/IPv4/UDP to `port`, VXLAN with `vni`, inner Ethernet/IPv4 src -> dst.
    fn frame(port: u16, vni: u32, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 172, 30, 0, 11, 172, 30, 0, 12];
        ip.extend(40000u16.to_be_bytes());
        ip.extend(port.to_be_bytes());
        ip.extend([0, 0, 0, 0]);
        ip.extend([0x08, 0, 0, 0]);
        ip.extend(&vni.to_be_bytes()[1..]);
        ip.push(0);
        ip.extend([0u8; 12]);
        ip.extend([0x08, 0x00]);
        ip.extend([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0]);
        ip.extend(src);
        ip.extend(dst);
        f.extend(ip);
        f
    }

    fn pcap(frames: &[Vec<u8>], le: bool) -> Vec<u8> {
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut out = Vec::new();
        out.extend(w(0xa1b2c3d4));
        out.extend(if le { [2, 0, 4, 0] } else { [0, 2, 0, 4] });
        out.extend(w(0));
        out.extend(w(0));
        out.extend(w(262144));
        out.extend(w(1));
        for f in frames {
            out.extend(w(1));
            out.extend(w(2));
            out.extend(w(f.len() as u32));
            out.extend(w(f.len() as u32));
            out.extend(f);
        }
        out
    }

    #[test]
    fn reads_vni_and_inner_addresses_in_both_byte_orders() {
        let frames =
            [frame(4789, 4096, [10, 1, 0, 2], [10, 1, 1, 2]), frame(53, 7, [1, 1, 1, 1], [2, 2, 2, 2])];
        for le in [true, false] {
            let got = vxlan_packets(&pcap(&frames, le)).unwrap();
            let want = VxlanPacket {
                vni: 4096,
                ethertype: 0x0800,
                src: Some(Ipv4Addr::new(10, 1, 0, 2)),
                dst: Some(Ipv4Addr::new(10, 1, 1, 2)),
            };
            assert_eq!(got, vec![want]);
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(vxlan_packets(b"short").is_err());
        assert!(vxlan_packets(&[0u8; 24]).is_err());
        let mut cut = pcap(&[frame(4789, 1, [0; 4], [0; 4])], true);
        cut.truncate(cut.len() - 3);
        assert!(vxlan_packets(&cut).is_err());
        // A header alone: an empty capture.
        assert_eq!(vxlan_packets(&pcap(&[], true)).unwrap(), vec![]);
    }
}
