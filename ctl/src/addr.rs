//! Where the agent listens: parsing `-H`/`OVNET_HOST` into a dialable address.
//!
//! Parsing is a pure function so every accepted and refused form is unit
//! tested; `client.rs` does the dialing. The original text is kept so error
//! messages name the address exactly as the user wrote it.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::CtlError;

/// What the forms we accept look like, for error messages.
const EXPECTED: &str = "expected unix:///path/to/socket, tcp://IP:PORT, http://IP:PORT or https://IP:PORT";

/// How to reach the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A Unix stream socket at this absolute path.
    Unix(PathBuf),
    /// HTTP/2 over TCP to `host:port` (host may be `[v6]`); plain text
    /// unless TLS is asked for (`https://` or `--tls-ca`).
    Tcp(String),
}

/// A parsed agent address together with the text it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddr {
    transport: Transport,
    text: String,
    scheme: Scheme,
}

/// The scheme as written: it decides which TLS flags make sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Unix,
    /// `tcp://`: TLS when `--tls-ca` is given.
    Tcp,
    /// `http://`: always plain text.
    Http,
    /// `https://`: always TLS.
    Https,
}

impl AgentAddr {
    /// How to dial it.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The scheme it was written with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

impl fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for AgentAddr {
    type Err = CtlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let invalid =
            |reason: &str| CtlError::InvalidAddress { addr: text.to_string(), reason: reason.to_string() };
        let (transport, scheme) = if let Some(path) = text.strip_prefix("unix://") {
            (unix(path).map_err(invalid)?, Scheme::Unix)
        } else if text.starts_with('/') {
            (unix(text).map_err(invalid)?, Scheme::Unix)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            (Transport::Tcp(authority(rest).map_err(invalid)?), Scheme::Tcp)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (Transport::Tcp(authority(rest).map_err(invalid)?), Scheme::Http)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Transport::Tcp(authority(rest).map_err(invalid)?), Scheme::Https)
        } else {
            return Err(invalid(EXPECTED));
        };
        Ok(AgentAddr { transport, text: text.to_string(), scheme })
    }
}

/// `/run/ovnet/ovagent.sock` (after `unix://`): must be absolute.
fn unix(path: &str) -> Result<Transport, &'static str> {
    if path.is_empty() {
        return Err("missing socket path, as in unix:///run/ovnet/ovagent.sock");
    }
    if !path.starts_with('/') {
        return Err("socket path must be absolute, as in unix:///run/ovnet/ovagent.sock");
    }
    Ok(Transport::Unix(Path::new(path).to_path_buf()))
}

/// `HOST:PORT` (after `tcp://` or `http://`), an optional trailing `/` allowed.
fn authority(rest: &str) -> Result<String, &'static str> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("missing HOST:PORT");
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err("expected only HOST:PORT after the scheme");
    }
    let (host, port) = rest.rsplit_once(':').ok_or("missing :PORT")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("port must be a number from 1 to 65535"),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().map_err(|_| "invalid IPv6 address in brackets")?;
    } else if !is_hostname(host) {
        return Err("invalid host; IPv6 addresses go in brackets, as in tcp://[::1]:50051");
    }
    Ok(rest.to_string())
}

/// An IPv4 literal or a DNS name: letters, digits, `-` and `.`.
fn is_hostname(host: &str) -> bool {
    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<AgentAddr, String> {
        s.parse::<AgentAddr>().map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_unix_sockets() {
        let a = parse("unix:///run/ovnet/ovagent.sock").unwrap();
        assert_eq!(a.transport(), &Transport::Unix("/run/ovnet/ovagent.sock".into()));
        assert_eq!(a.to_string(), "unix:///run/ovnet/ovagent.sock");
        let bare = parse("/tmp/x.sock").unwrap();
        assert_eq!(bare.transport(), &Transport::Unix("/tmp/x.sock".into()));
    }

    #[test]
    fn accepts_tcp_and_http() {
        let t = parse("tcp://1.2.3.4:5").unwrap();
        assert_eq!(t.transport(), &Transport::Tcp("1.2.3.4:5".into()));
        assert_eq!(t.to_string(), "tcp://1.2.3.4:5");
        let h = parse("http://10.0.0.1:50051/").unwrap();
        assert_eq!(h.transport(), &Transport::Tcp("10.0.0.1:50051".into()));
        let v6 = parse("tcp://[::1]:50051").unwrap();
        assert_eq!(v6.transport(), &Transport::Tcp("[::1]:50051".into()));
        let name = parse(" http://node-a.example:7000 ").unwrap();
        assert_eq!(name.transport(), &Transport::Tcp("node-a.example:7000".into()));
        let tls = parse("https://10.0.0.1:50051").unwrap();
        assert_eq!(
            (tls.transport(), tls.scheme()),
            (&Transport::Tcp("10.0.0.1:50051".into()), Scheme::Https)
        );
        assert_eq!(t.scheme(), Scheme::Tcp);
        assert_eq!(h.scheme(), Scheme::Http);
    }

    #[test]
    fn refuses_garbage_with_a_clear_message() {
        let cases = [
            ("garbage", EXPECTED),
            ("", EXPECTED),
            ("1.2.3.4:5", EXPECTED),
            ("unix://", "missing socket path"),
            ("unix://relative.sock", "must be absolute"),
            ("tcp://1.2.3.4", "missing :PORT"),
            ("tcp://1.2.3.4:0", "port must be"),
            ("tcp://1.2.3.4:99999", "port must be"),
            ("tcp://:5", "invalid host"),
            ("tcp://::1:5", "invalid host"),
            ("tcp://[zz]:5", "invalid IPv6"),
            ("http://1.2.3.4:5/v1", "only HOST:PORT"),
            ("https://1.2.3.4", "missing :PORT"),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(err.starts_with("invalid agent address"), "{input:?}: {err}");
        }
    }
}
