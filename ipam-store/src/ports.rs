//! Published ports: what `--publish [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`
//! asks for, stored with the endpoint (`EndpointRecord::ports`).
//!
//! The design decision: one parser for every way in (`ovctl --publish`,
//! Docker's port map, CNI's `portMappings` all become a [`PortMapping`]
//! checked by [`PortMapping::check`]), and the spec's own text form is how a
//! mapping is shown, so what a user typed is what inspect prints back.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The transport protocol of a published port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number (6, 17).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!("protocol {other:?} is not tcp or udp")),
        }
    }
}

/// One published port: traffic to `host_ip` (the host's address when
/// absent) port `host_port` goes to the endpoint's `port`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// 0 only in a request: the agent picks a free port.
    pub host_port: u16,
    pub port: u16,
    #[serde(default)]
    pub proto: Proto,
}

impl PortMapping {
    /// Why the mapping cannot be published (a container port of 0).
    pub fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err(format!("{self}: the container port must be 1-65535, not 0"));
        }
        if self.host_ip.is_some_and(|ip| ip.is_multicast() || ip.is_broadcast()) {
            return Err(format!("{self}: the host address must be a unicast address"));
        }
        Ok(())
    }

    /// Whether two mappings want the same port of the host: same protocol
    /// and port, and an address in common (absent means the host's own).
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// `[HOSTIP:]HOSTPORT:CONTAINERPORT/PROTO`, as `--publish` takes it.
impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}:{}/{}", self.host_port, self.port, self.proto)
    }
}

impl FromStr for PortMapping {
    type Err = String;
    /// Parses `[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]`.
    fn from_str(spec: &str) -> Result<PortMapping, String> {
        let bad = |why: String| {
            format!("bad port spec {spec:?}: {why} (want [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp])")
        };
        let (ports, proto) = match spec.split_once('/') {
            Some((ports, proto)) => (ports, proto.parse().map_err(bad)?),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, port) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| bad(format!("{ip:?} is not an IPv4 address")))?;
                (Some(ip), *h, *c)
            }
            _ => return Err(bad("it needs a host port and a container port".into())),
        };
        let number = |what: &str, s: &str| -> Result<u16, String> {
            match s.parse::<u32>() {
                Ok(n) if n <= 65535 && !s.starts_with('+') => Ok(n as u16),
                Ok(n) => Err(bad(format!("{what} {n} is over 65535"))),
                Err(_) => Err(bad(format!("{what} {s:?} is not a number"))),
            }
        };
        let m = PortMapping {
            host_ip,
            host_port: number("host port", host_port)?,
            port: number("container port", port)?,
            proto,
        };
        m.check().map_err(bad)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for (spec, shown) in [
            ("8080:80", "8080:80/tcp"),
            ("8080:80/udp", "8080:80/udp"),
            ("172.30.0.11:0:53/udp", "172.30.0.11:0:53/udp"),
            ("65535:1/tcp", "65535:1/tcp"),
        ] {
            let m: PortMapping = spec.parse().unwrap();
            assert_eq!(m.to_string(), shown);
            assert_eq!(shown.parse::<PortMapping>().unwrap(), m);
        }
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (spec, want) in [
            ("8080:0", "container port must be 1-65535"),
            ("8080:65536", "container port 65536 is over 65535"),
            ("70000:80", "host port 70000 is over 65535"),
            ("8080:80/sctp", "\"sctp\" is not tcp or udp"),
            ("8080", "needs a host port and a container port"),
            ("a:b", "host port \"a\" is not a number"),
            ("1.2.3:8080:80", "not an IPv4 address"),
            ("1:2:3:4", "needs a host port"),
            ("", "needs a host port"),
            ("8080:-1", "not a number"),
            ("224.0.0.1:80:80", "unicast"),
        ] {
            let err = spec.parse::<PortMapping>().unwrap_err();
            assert!(err.contains(want) && err.contains("bad port spec"), "{spec}: {err}");
        }
    }

    #[test]
    fn clashes_need_protocol_port_and_address_in_common() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert!(p("8080:80").clashes(&p("8080:81")));
        assert!(!p("8080:80").clashes(&p("8080:80/udp")));
        assert!(p("1.2.3.4:8080:80").clashes(&p("8080:80")));
        assert!(!p("1.2.3.4:8080:80").clashes(&p("1.2.3.5:8080:80")));
    }
}
