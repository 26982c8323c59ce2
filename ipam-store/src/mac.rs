//! Ethernet MAC addresses as ovnet derives and stores them.
//!
//! MACs are derived from IPv4 addresses, never random: the anycast gateway is
//! `02:00:<ip>` on every host and an endpoint is `02:42:<ip>`, so a restarted
//! agent or another host computes the same value without asking anyone.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address, shown as `02:42:0a:80:00:02`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The all-zeros address: a VXLAN FDB entry with it is a flood (BUM) destination.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The gateway MAC of a network, the same on every host: `02:00:<gateway ip>`.
    pub fn gateway(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x00, o[0], o[1], o[2], o[3]])
    }

    /// The MAC of an endpoint: `02:42:<ip>`, unique because IPs are.
    pub fn endpoint(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// The text was not six hex octets separated by colons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 02:42:0a:00:00:02")]
pub struct ParseMacError(pub String);

impl FromStr for Mac {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_gateway_and_endpoint_macs_from_ips() {
        let ip = Ipv4Addr::new(10, 77, 0, 1);
        assert_eq!(Mac::gateway(ip).to_string(), "02:00:0a:4d:00:01");
        assert_eq!(Mac::endpoint(ip).to_string(), "02:42:0a:4d:00:01");
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("02:42:0a:4d:00:01".parse::<Mac>(), Ok(Mac::endpoint(Ipv4Addr::new(10, 77, 0, 1))));
        for bad in ["", "02:42", "02:42:0a:4d:00:01:ff", "zz:42:0a:4d:00:01", "2:42:0a:4d:00:01"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_as_string() {
        let m = Mac([2, 0x42, 1, 2, 3, 4]);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"02:42:01:02:03:04\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
    }
}
