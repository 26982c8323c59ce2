//! The etcd key layout of an ovnet cluster, built and parsed in one place.
//!
//! All keys live under one configurable prefix `<p>` (default `/ovnet`):
//!
//! | key                                   | value           | lease      |
//! |---------------------------------------|-----------------|------------|
//! | `<p>/hosts/<host>`                    | `HostRecord`    | reservation|
//! | `<p>/alive/<host>`                    | `AliveRecord`   | host lease |
//! | `<p>/networks/<network>`              | `NetworkRecord` | none       |
//! | `<p>/vnis/<vni>`                      | `VniRecord`     | none       |
//! | `<p>/blocks/<network>/<a.b.c.d>_<len>`| `BlockRecord`   | reservation|
//! | `<p>/endpoints/<network>/<a.b.c.d>`   | `EndpointRecord`| reservation|
//!
//! The host lease is short (liveness); the reservation is the owner's long
//! lease (the block grace period), see `store::hosts`.
//!
//! The design decision: every per-network collection sits under a prefix that
//! ends in `/` (`<p>/blocks/blue/`), so a prefix read or a range compare on
//! network `blue` never sees network `blue2`. Names never contain `/` (see
//! `validate`), which keeps [`Keys::parse`] unambiguous.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Builds and parses the keys of one cluster prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A parsed ovnet key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Host(String),
    Alive(String),
    Network(String),
    Vni(u32),
    Block { network: String, cidr: Ipv4Net },
    Endpoint { network: String, ip: Ipv4Addr },
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("/ovnet")
    }
}

impl Keys {
    /// `prefix` is normalised: trailing `/` removed, a leading `/` added if missing.
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') || trimmed.is_empty() {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Keys { prefix }
    }

    /// The normalised prefix, without trailing `/` (empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>/`: every key of the cluster.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn host(&self, name: &str) -> String {
        format!("{}/hosts/{name}", self.prefix)
    }
    pub fn hosts_prefix(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }
    pub fn alive(&self, name: &str) -> String {
        format!("{}/alive/{name}", self.prefix)
    }
    pub fn alive_prefix(&self) -> String {
        format!("{}/alive/", self.prefix)
    }
    pub fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }
    pub fn networks_prefix(&self) -> String {
        format!("{}/networks/", self.prefix)
    }
    pub fn vni(&self, vni: u32) -> String {
        format!("{}/vnis/{vni}", self.prefix)
    }
    pub fn vnis_prefix(&self) -> String {
        format!("{}/vnis/", self.prefix)
    }
    pub fn block(&self, network: &str, cidr: &Ipv4Net) -> String {
        format!("{}/blocks/{network}/{}_{}", self.prefix, cidr.network(), cidr.prefix_len())
    }
    /// `<p>/blocks/<network>/`
    pub fn blocks_prefix(&self, network: &str) -> String {
        format!("{}/blocks/{network}/", self.prefix)
    }
    /// `<p>/blocks/`: the blocks of every network.
    pub fn all_blocks_prefix(&self) -> String {
        format!("{}/blocks/", self.prefix)
    }
    pub fn endpoint(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}/endpoints/{network}/{ip}", self.prefix)
    }
    /// `<p>/endpoints/<network>/`
    pub fn endpoints_prefix(&self, network: &str) -> String {
        format!("{}/endpoints/{network}/", self.prefix)
    }
    /// `<p>/endpoints/`: the endpoints of every network.
    pub fn all_endpoints_prefix(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }

    /// Parses a key of this prefix; `None` for anything else (other prefixes,
    /// unknown kinds, malformed names or addresses).
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match parts.as_slice() {
            ["hosts", n] => name(n).map(Key::Host),
            ["alive", n] => name(n).map(Key::Alive),
            ["networks", n] => name(n).map(Key::Network),
            ["vnis", v] => parse_u32(v).map(Key::Vni),
            ["blocks", n, c] => Some(Key::Block { network: name(n)?, cidr: parse_block(c)? }),
            ["endpoints", n, ip] => Some(Key::Endpoint { network: name(n)?, ip: ip.parse().ok()? }),
            _ => None,
        }
    }
}

/// Strict decimal: no sign, no leading zeros, so a key maps to one number only.
fn parse_u32(s: &str) -> Option<u32> {
    let canonical = !s.is_empty() && (s == "0" || !s.starts_with('0'));
    let digits = s.bytes().all(|b| b.is_ascii_digit());
    if canonical && digits { s.parse().ok() } else { None }
}

/// `a.b.c.d_len`, which must be a network address (no host bits).
fn parse_block(s: &str) -> Option<Ipv4Net> {
    let (ip, len) = s.split_once('_')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len = parse_u32(len)?;
    let net = Ipv4Net::new(ip, u8::try_from(len).ok()?).ok()?;
    (net.network() == ip).then_some(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_prefix() {
        assert_eq!(Keys::new("/ovnet/").prefix(), "/ovnet");
        assert_eq!(Keys::new("ovnet").prefix(), "/ovnet");
        assert_eq!(Keys::new("/a/b//").prefix(), "/a/b");
        assert_eq!(Keys::new("/").all(), "/");
        assert_eq!(Keys::default().all(), "/ovnet/");
    }

    #[test]
    fn builds_documented_layout() {
        let k = Keys::new("/ovnet");
        let net: Ipv4Net = "10.128.1.0/24".parse().unwrap();
        assert_eq!(k.host("h1"), "/ovnet/hosts/h1");
        assert_eq!(k.alive("h1"), "/ovnet/alive/h1");
        assert_eq!(k.network("blue"), "/ovnet/networks/blue");
        assert_eq!(k.vni(4096), "/ovnet/vnis/4096");
        assert_eq!(k.block("blue", &net), "/ovnet/blocks/blue/10.128.1.0_24");
        assert_eq!(k.blocks_prefix("blue"), "/ovnet/blocks/blue/");
        let ip = Ipv4Addr::new(10, 128, 1, 7);
        assert_eq!(k.endpoint("blue", ip), "/ovnet/endpoints/blue/10.128.1.7");
        assert_eq!(k.endpoints_prefix("blue"), "/ovnet/endpoints/blue/");
        assert!(!k.network("blue2").starts_with(&k.blocks_prefix("blue")));
    }

    #[test]
    fn round_trips() {
        let k = Keys::new("/x/y");
        let net: Ipv4Net = "10.0.4.0/22".parse().unwrap();
        let ip = Ipv4Addr::new(10, 0, 4, 9);
        let cases = [
            (k.host("h-1.a"), Key::Host("h-1.a".into())),
            (k.alive("h"), Key::Alive("h".into())),
            (k.network("n_1"), Key::Network("n_1".into())),
            (k.vni(16_777_215), Key::Vni(16_777_215)),
            (k.block("n", &net), Key::Block { network: "n".into(), cidr: net }),
            (k.endpoint("n", ip), Key::Endpoint { network: "n".into(), ip }),
        ];
        for (key, want) in cases {
            assert_eq!(k.parse(&key), Some(want), "{key}");
        }
    }

    #[test]
    fn rejects_foreign_and_malformed_keys() {
        let k = Keys::new("/ovnet");
        for bad in [
            "/ovnet2/hosts/h",
            "/other/hosts/h",
            "/ovnet",
            "/ovnet/",
            "/ovnet/hosts/",
            "/ovnet/hosts/a/b",
            "/ovnet/unknown/x",
            "/ovnet/vnis/abc",
            "/ovnet/vnis/-1",
            "/ovnet/vnis/007",
            "/ovnet/vnis/99999999999",
            "/ovnet/blocks/n/10.0.0.0",
            "/ovnet/blocks/n/10.0.0.1_24",
            "/ovnet/blocks/n/10.0.0.0_33",
            "/ovnet/blocks//10.0.0.0_24",
            "/ovnet/endpoints/n/10.0.0.300",
            "/ovnet/endpoints/n",
        ] {
            assert_eq!(k.parse(bad), None, "{bad}");
        }
    }
}
