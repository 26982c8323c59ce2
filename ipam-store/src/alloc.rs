//! Pure choice of subnets, VNIs, blocks and addresses from what is taken.
//!
//! Nothing here talks to etcd: the store reads the taken set, asks these
//! functions for a candidate and then claims it in a guarded transaction. The
//! design decision: every picker is deterministic and prefers the lowest free
//! value, so allocations are reproducible and tests can name exact results;
//! spreading racing writers over several candidates is done by the store
//! (with [`free_blocks`] / [`free_ips`]), not here.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Where subnets of networks created without one come from.
pub const DEFAULT_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 128, 0, 0), 9);
/// Prefix length of automatically chosen subnets.
pub const DEFAULT_SUBNET_PREFIX: u8 = 16;
/// Block size when the network does not say.
pub const DEFAULT_BLOCK_PREFIX: u8 = 24;
/// The lowest VNI handed out automatically (explicit VNIs may be lower).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// The highest VXLAN network identifier.
pub const MAX_VNI: u32 = 16_777_215;

/// The gateway of a subnet: its first host address (`.1` of the network).
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

/// The block prefix used when a network does not specify one: /24, or the
/// subnet's own prefix when the subnet is smaller than a /24.
///
/// /24 for a /20 or larger subnet; smaller subnets get blocks 4 bits longer
/// (at most /28), so a /24 network still spreads over 16 hosts.
pub fn default_block_prefix(subnet: &Ipv4Net) -> u8 {
    let p = subnet.prefix_len();
    DEFAULT_BLOCK_PREFIX.max((p + 4).min(28)).max(p)
}

/// The first network in `existing` that shares an address with `subnet`.
pub fn overlapping(subnet: Ipv4Net, existing: &[Ipv4Net]) -> Option<Ipv4Net> {
    existing.iter().copied().find(|e| e.contains(&subnet.network()) || subnet.contains(&e.network()))
}

/// The lowest `/prefix` inside `pool` that overlaps none of `existing`.
pub fn pick_subnet(pool: Ipv4Net, prefix: u8, existing: &[Ipv4Net]) -> Option<Ipv4Net> {
    if prefix < pool.prefix_len() || prefix > 32 {
        return None;
    }
    let size = 1u64 << (32 - prefix);
    let end = u64::from(u32::from(pool.broadcast())) + 1;
    let mut start = u64::from(u32::from(pool.network()));
    while start + size <= end {
        let cand = Ipv4Net::new(Ipv4Addr::from(start as u32), prefix).ok()?;
        match overlapping(cand, existing) {
            None => return Some(cand),
            Some(o) => {
                // Jump past whichever of the two ends later, aligned to `size`.
                let past = u64::from(u32::from(o.broadcast())).max(start + size - 1) + 1;
                start = past.div_ceil(size) * size;
            }
        }
    }
    None
}

/// The lowest free VNI from [`FIRST_AUTO_VNI`] up.
pub fn pick_vni(used: &BTreeSet<u32>) -> Option<u32> {
    let mut cand = FIRST_AUTO_VNI;
    for &u in used.range(FIRST_AUTO_VNI..) {
        if u != cand {
            break;
        }
        cand = cand.checked_add(1)?;
    }
    (cand <= MAX_VNI).then_some(cand)
}

/// Up to `limit` free `/block_prefix` blocks of `subnet`, lowest first.
pub fn free_blocks(
    subnet: Ipv4Net,
    block_prefix: u8,
    taken: &BTreeSet<Ipv4Net>,
    limit: usize,
) -> Vec<Ipv4Net> {
    let Ok(blocks) = subnet.subnets(block_prefix.max(subnet.prefix_len())) else {
        return Vec::new();
    };
    blocks.filter(|b| !taken.contains(b)).take(limit).collect()
}

/// The lowest free block of `subnet`.
pub fn pick_block(subnet: Ipv4Net, block_prefix: u8, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    free_blocks(subnet, block_prefix, taken, 1).into_iter().next()
}

/// The block of `subnet` that contains `ip`.
pub fn block_of(ip: Ipv4Addr, subnet: Ipv4Net, block_prefix: u8) -> Ipv4Net {
    let len = block_prefix.clamp(subnet.prefix_len(), 32);
    Ipv4Net::new(ip, len).map(|n| n.trunc()).unwrap_or(subnet)
}

/// Why `ip` cannot be given to an endpoint of `subnet`, if it cannot.
pub fn reserved_reason(ip: Ipv4Addr, subnet: Ipv4Net) -> Option<&'static str> {
    if ip == subnet.network() {
        Some("the network address of the subnet")
    } else if ip == subnet.broadcast() {
        Some("the broadcast address of the subnet")
    } else if ip == gateway(subnet) {
        Some("the gateway of the network")
    } else {
        None
    }
}

/// Whether an endpoint may get `ip`: inside the subnet and not its network,
/// broadcast or gateway address. Block boundaries are not skipped.
pub fn usable(ip: Ipv4Addr, subnet: Ipv4Net) -> bool {
    subnet.contains(&ip) && reserved_reason(ip, subnet).is_none()
}

/// Addresses ending in .0 or .255 are valid inside a larger subnet, but many
/// tools take them for network or broadcast addresses: automatic picks skip
/// them (an explicit `--ip` may still ask for one).
fn looks_special(ip: Ipv4Addr) -> bool {
    matches!(ip.octets()[3], 0 | 255)
}

/// Up to `limit` usable, unused addresses of `block`, lowest first, skipping
/// addresses that end in .0 or .255.
pub fn free_ips(block: Ipv4Net, subnet: Ipv4Net, used: &BTreeSet<Ipv4Addr>, limit: usize) -> Vec<Ipv4Addr> {
    let first = u32::from(block.network());
    let last = u32::from(block.broadcast());
    (first..=last)
        .map(Ipv4Addr::from)
        .filter(|ip| usable(*ip, subnet) && !looks_special(*ip) && !used.contains(ip))
        .take(limit)
        .collect()
}

/// The lowest usable, unused address of `block`.
pub fn pick_ip(block: Ipv4Net, subnet: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    free_ips(block, subnet, used, 1).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn gateways_and_default_blocks() {
        assert_eq!(gateway(n("10.1.0.0/16")), ip("10.1.0.1"));
        assert_eq!(gateway(n("10.9.0.0/30")), ip("10.9.0.1"));
        assert_eq!(default_block_prefix(&n("10.1.0.0/16")), 24);
        assert_eq!(default_block_prefix(&n("10.9.0.0/30")), 30);
        assert_eq!(default_block_prefix(&n("10.1.0.0/20")), 24);
        assert_eq!(default_block_prefix(&n("10.1.0.0/22")), 26);
        assert_eq!(default_block_prefix(&n("10.1.0.0/24")), 28);
        assert_eq!(default_block_prefix(&n("10.1.0.0/29")), 29);
        assert_eq!(default_block_prefix(&n("10.0.0.0/8")), 24);
    }

    #[test]
    fn subnets_table() {
        let pool = DEFAULT_POOL;
        let cases: &[(&[&str], u8, Option<&str>)] = &[
            (&[], 16, Some("10.128.0.0/16")),
            (&["10.128.0.0/16"], 16, Some("10.129.0.0/16")),
            (&["10.128.0.0/24"], 16, Some("10.129.0.0/16")),
            (&["10.0.0.0/8"], 16, None),
            (&["10.128.0.0/10"], 16, Some("10.192.0.0/16")),
            (&["10.128.0.0/16", "10.130.0.0/16"], 16, Some("10.129.0.0/16")),
            (&["10.128.0.0/17"], 24, Some("10.128.128.0/24")),
            (&["192.168.0.0/16"], 16, Some("10.128.0.0/16")),
            (&[], 8, None),
        ];
        for (existing, prefix, want) in cases {
            let existing: Vec<Ipv4Net> = existing.iter().map(|s| n(s)).collect();
            let got = pick_subnet(pool, *prefix, &existing);
            assert_eq!(got, want.map(n), "{existing:?} /{prefix}");
        }
        let full: Vec<Ipv4Net> = pool.subnets(16).unwrap().collect();
        assert_eq!(pick_subnet(pool, 16, &full), None);
        // A /30 in a big, mostly full pool is found quickly by jumping.
        let big = [n("10.128.0.0/10"), n("10.192.0.0/11")];
        assert_eq!(pick_subnet(pool, 30, &big), Some(n("10.224.0.0/30")));
    }

    #[test]
    fn overlap_both_ways() {
        let ex = [n("10.1.0.0/24"), n("10.2.0.0/16")];
        assert_eq!(overlapping(n("10.1.0.0/16"), &ex), Some(n("10.1.0.0/24")));
        assert_eq!(overlapping(n("10.2.3.0/24"), &ex), Some(n("10.2.0.0/16")));
        assert_eq!(overlapping(n("10.3.0.0/16"), &ex), None);
    }

    #[test]
    fn vnis_table() {
        let cases: &[(&[u32], Option<u32>)] = &[
            (&[], Some(4096)),
            (&[1, 2, 100], Some(4096)),
            (&[4096], Some(4097)),
            (&[4096, 4097, 4099], Some(4098)),
            (&[4097], Some(4096)),
        ];
        for (used, want) in cases {
            let used: BTreeSet<u32> = used.iter().copied().collect();
            assert_eq!(pick_vni(&used), *want, "{used:?}");
        }
    }

    #[test]
    fn vnis_run_out() {
        let mut all: BTreeSet<u32> = (FIRST_AUTO_VNI..=MAX_VNI).collect();
        assert_eq!(pick_vni(&all), None);
        all.remove(&5_000_000);
        assert_eq!(pick_vni(&all), Some(5_000_000));
    }

    #[test]
    fn blocks_table() {
        let s = n("10.1.0.0/22");
        let taken: BTreeSet<Ipv4Net> = [n("10.1.0.0/24"), n("10.1.2.0/24")].into();
        assert_eq!(pick_block(s, 24, &BTreeSet::new()), Some(n("10.1.0.0/24")));
        assert_eq!(pick_block(s, 24, &taken), Some(n("10.1.1.0/24")));
        assert_eq!(free_blocks(s, 24, &taken, 5), vec![n("10.1.1.0/24"), n("10.1.3.0/24")]);
        let all: BTreeSet<Ipv4Net> = s.subnets(24).unwrap().collect();
        assert_eq!(pick_block(s, 24, &all), None);
        assert_eq!(block_of(ip("10.1.2.77"), s, 24), n("10.1.2.0/24"));
        assert_eq!(block_of(ip("10.1.2.77"), s, 16), s);
    }

    #[test]
    fn usable_addresses() {
        let s = n("10.1.0.0/16");
        for (a, want) in [
            ("10.1.0.0", false),
            ("10.1.0.1", false),
            ("10.1.0.2", true),
            ("10.1.0.255", true),
            ("10.1.1.0", true),
            ("10.1.255.255", false),
            ("10.2.0.5", false),
        ] {
            assert_eq!(usable(ip(a), s), want, "{a}");
        }
    }

    #[test]
    fn ips_table() {
        let s = n("10.1.0.0/16");
        let none = BTreeSet::new();
        assert_eq!(pick_ip(n("10.1.0.0/24"), s, &none), Some(ip("10.1.0.2")));
        assert_eq!(pick_ip(n("10.1.1.0/24"), s, &none), Some(ip("10.1.1.1")), ".0 is skipped");
        let full: BTreeSet<Ipv4Addr> = (1..=254).map(|d| Ipv4Addr::new(10, 1, 1, d)).collect();
        assert_eq!(pick_ip(n("10.1.1.0/24"), s, &full), None, ".255 is skipped");
        let used: BTreeSet<Ipv4Addr> = [ip("10.1.0.2"), ip("10.1.0.4")].into();
        assert_eq!(pick_ip(n("10.1.0.0/24"), s, &used), Some(ip("10.1.0.3")));
        let last = n("10.1.255.252/30");
        assert_eq!(
            free_ips(last, s, &none, 10),
            vec![ip("10.1.255.252"), ip("10.1.255.253"), ip("10.1.255.254")]
        );
        let tiny = n("10.9.0.0/30");
        assert_eq!(free_ips(tiny, tiny, &none, 10), vec![ip("10.9.0.2")]);
        assert_eq!(pick_ip(tiny, tiny, &[ip("10.9.0.2")].into()), None);
    }
}
