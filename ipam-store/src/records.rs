//! The JSON records stored as etcd values, and their strict decoding.
//!
//! Every record carries `v` (currently [`RECORD_VERSION`]). [`decode`] first
//! reads only `v`, so a record written by a future, incompatible ovnet is
//! reported as "unsupported record version" rather than as a confusing field
//! error; unknown extra fields are accepted, which lets a newer v1 writer add
//! optional fields. Decoding never panics: garbage becomes `Error::BadRecord`
//! naming the key.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::mac::Mac;

/// The record format version written by this code and the only one it reads.
pub const RECORD_VERSION: u32 = 1;

/// A record with a format version and a human name for error messages.
pub trait Versioned {
    /// What the record describes, e.g. "network".
    const KIND: &'static str;
    fn version(&self) -> u32;
    /// What a decoded record must satisfy beyond its JSON shape (why not).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `<p>/hosts/<name>`: a host's persistent registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    pub v: u32,
    pub name: String,
    pub vtep: Ipv4Addr,
    /// Unix seconds.
    pub registered_at: u64,
    /// The host agent's own TCP API and metrics listeners, as other hosts
    /// reach them (a listener on every address at the VTEP): every agent
    /// keeps its containers from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control: Vec<SocketAddrV4>,
}

/// `<p>/alive/<name>`: present while the host's etcd lease lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AliveRecord {
    pub v: u32,
    pub name: String,
    pub vtep: Ipv4Addr,
    /// Unix seconds at which this agent process started.
    pub started_at: u64,
}

/// How a network reaches its containers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A bridge on every host, joined by VXLAN.
    #[default]
    Overlay,
    /// A bridge on one host (the network's `host`), nothing elsewhere.
    Bridge,
}

impl Driver {
    pub const ALL: [Driver; 2] = [Driver::Overlay, Driver::Bridge];

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Bridge => "bridge",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `<p>/networks/<name>`: a network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetworkRecord {
    pub v: u32,
    /// 16 random lowercase hex digits, stable for the network's life.
    pub id: String,
    pub name: String,
    /// `overlay` when absent (records older than the bridge driver).
    #[serde(default)]
    pub driver: Driver,
    /// The host a `bridge` network belongs to; absent for `overlay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub mtu: u32,
    pub block_prefix: u8,
    pub created_at: u64,
    /// No way out of the network and no published ports (`--internal`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

impl NetworkRecord {
    /// The host a bridge network belongs to; `None` for an overlay network.
    pub fn owner(&self) -> Option<&str> {
        match self.driver {
            Driver::Overlay => None,
            Driver::Bridge => self.host.as_deref(),
        }
    }

    /// Whether `host` builds this network and may connect to it: every host
    /// for an overlay network, only its owner for a bridge network.
    pub fn usable_on(&self, host: &str) -> bool {
        self.owner().is_none_or(|owner| owner == host)
    }

    /// `usable_on`, as the error a connect on `host` gets.
    pub fn check_usable_on(&self, host: &str) -> Result<(), Error> {
        match self.owner() {
            Some(owner) if owner != host => Err(Error::NetworkOfOtherHost {
                network: self.name.clone(),
                owner: owner.to_string(),
                host: host.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// `<p>/vnis/<vni>`: the VNI index, making a VNI unique across networks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VniRecord {
    pub v: u32,
    pub vni: u32,
    pub network: String,
}

/// `<p>/blocks/<network>/<a.b.c.d>_<len>`: a block of addresses leased to a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub v: u32,
    pub network: String,
    pub cidr: Ipv4Net,
    pub host: String,
}

/// `<p>/endpoints/<network>/<a.b.c.d>`: one container interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    pub v: u32,
    pub id: String,
    pub network: String,
    pub host: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub ifname: String,
    pub host_ifname: String,
    pub created_at: u64,
    /// The container runtime's own name for what this endpoint belongs to
    /// (Docker, CNI); absent for `ovctl network connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
    /// Ports of this host published to it (never with host port 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::PortMapping>,
    /// The DNS name the agents answer for this endpoint on its network
    /// (unique there); empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// More DNS names; several endpoints may share one (round robin).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl EndpointRecord {
    /// The DNS name it answers to: its own, else its container's name
    /// (Docker's, CNI's `K8S_POD_NAME`) in lower case when that is a DNS label.
    pub fn dns_name(&self) -> Option<String> {
        if !self.name.is_empty() {
            return Some(self.name.clone());
        }
        let name = self.container.as_ref()?.name.to_ascii_lowercase();
        crate::validate::dns_label(&name).is_ok().then_some(name)
    }
}

/// Who asked for an endpoint, in the runtime's own terms.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRef {
    /// `docker` or `cni`.
    pub runtime: String,
    /// The runtime's container id (Docker's, or CNI's `CNI_CONTAINERID`).
    pub id: String,
    /// The container's name, when the runtime gives one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

macro_rules! versioned {
    ($($t:ty => $kind:literal),* $(,)?) => {$(
        impl Versioned for $t {
            const KIND: &'static str = $kind;
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}

versioned! {
    HostRecord => "host",
    AliveRecord => "alive",
    VniRecord => "VNI",
    BlockRecord => "block",
}

/// A bridge network names the valid host it belongs to; an overlay network
/// belongs to none.
impl Versioned for NetworkRecord {
    const KIND: &'static str = "network";
    fn version(&self) -> u32 {
        self.v
    }
    fn check(&self) -> Result<(), String> {
        match (self.driver, &self.host) {
            (Driver::Overlay, None) => Ok(()),
            (Driver::Overlay, Some(host)) => {
                Err(format!("an overlay network belongs to no host, not {host:?}"))
            }
            (Driver::Bridge, None) => Err("a bridge network must name its host".to_string()),
            (Driver::Bridge, Some(host)) => crate::validate::host_name(host).map_err(|e| e.to_string()),
        }
    }
}

/// Its device names reach netlink: the host end must be one of our veths
/// (`ovve…`), the container end a plain interface name, or empty for a
/// Docker endpoint (Docker names the container's interface itself).
impl Versioned for EndpointRecord {
    const KIND: &'static str = "endpoint";
    fn version(&self) -> u32 {
        self.v
    }
    fn check(&self) -> Result<(), String> {
        crate::validate::host_veth_name(&self.host_ifname)?;
        let runtime_names_it =
            self.ifname.is_empty() && self.container.as_ref().is_some_and(|c| c.runtime == "docker");
        if runtime_names_it { Ok(()) } else { crate::validate::interface_name(&self.ifname) }
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

/// Decodes the record stored at `key`; any problem is `Error::BadRecord { key, .. }`.
pub fn decode<T: DeserializeOwned + Versioned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    let bad = |reason: String| Error::BadRecord { key: key.to_string(), reason };
    let probe: VersionProbe =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON {} record: {e}", T::KIND)))?;
    match probe.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(RECORD_VERSION)) => {}
        Some(other) => {
            return Err(bad(format!(
                "unsupported {} record version {other} (this ovnet reads version {RECORD_VERSION})",
                T::KIND
            )));
        }
        None => {
            return Err(bad(format!("{} record has no version field \"v\"", T::KIND)));
        }
    }
    let record: T =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid {} record: {e}", T::KIND)))?;
    record.check().map_err(|why| bad(format!("invalid {} record: {why}", T::KIND)))?;
    Ok(record)
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and addresses: serde_json
    // can only fail on maps with non-string keys, which they do not contain.
    serde_json::to_vec(record).expect("ovnet records always serialize to JSON")
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> BlockRecord {
        BlockRecord {
            v: RECORD_VERSION,
            network: "blue".into(),
            cidr: "10.1.2.0/24".parse().unwrap(),
            host: "h1".into(),
        }
    }

    #[test]
    fn round_trip() {
        let b = block();
        assert_eq!(decode::<BlockRecord>("k", &encode(&b)).unwrap(), b);
        let e = EndpointRecord {
            v: 1,
            id: "c1".into(),
            network: "blue".into(),
            host: "h1".into(),
            netns: "/run/netns/c1".into(),
            ip: Ipv4Addr::new(10, 1, 2, 3),
            mac: Mac::endpoint(Ipv4Addr::new(10, 1, 2, 3)),
            ifname: "eth0".into(),
            host_ifname: "ovve1".into(),
            created_at: 5,
            container: None,
            name: String::new(),
            aliases: Vec::new(),
            ports: Vec::new(),
        };
        let json = String::from_utf8(encode(&e)).unwrap();
        assert!(json.contains(r#""mac":"02:42:0a:01:02:03""#), "{json}");
        assert_eq!(decode::<EndpointRecord>("k", json.as_bytes()).unwrap(), e);
        assert!(!json.contains("container"), "{json}");
        // A record written before names existed has none, and writes none.
        assert!(!json.contains(r#""name""#) && !json.contains("aliases"), "{json}");
        assert_eq!(e.dns_name(), None);
        let c = EndpointRecord {
            container: Some(ContainerRef { runtime: "cni".into(), id: "abc".into(), name: "Web".into() }),
            ..e.clone()
        };
        assert_eq!(decode::<EndpointRecord>("k", &encode(&c)).unwrap(), c);
        assert_eq!(c.dns_name().as_deref(), Some("web"), "the container's name, lower case");
        let named = EndpointRecord { name: "db".into(), aliases: vec!["www".into()], ..c.clone() };
        assert_eq!(decode::<EndpointRecord>("k", &encode(&named)).unwrap(), named);
        assert_eq!(named.dns_name().as_deref(), Some("db"));
        let unnamed = EndpointRecord {
            container: Some(ContainerRef {
                runtime: "docker".into(),
                id: "x".into(),
                name: "happy_turing".into(),
            }),
            ..e
        };
        assert_eq!(unnamed.dns_name(), None, "not a DNS label");
        let p = EndpointRecord {
            ports: vec!["8080:80".parse().unwrap(), "1.2.3.4:53:53/udp".parse().unwrap()],
            ..c
        };
        let json = String::from_utf8(encode(&p)).unwrap();
        assert!(json.contains(r#""ports":[{"host_port":8080,"port":80,"proto":"tcp"},"#), "{json}");
        assert_eq!(decode::<EndpointRecord>("k", json.as_bytes()).unwrap(), p);
    }

    #[test]
    fn garbage_is_a_bad_record_naming_the_key() {
        let good = encode(&block());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\xff\xfe".to_vec(), "not a JSON block record"),
            (b"".to_vec(), "not a JSON block record"),
            (good[..good.len() / 2].to_vec(), "not a JSON block record"),
            (b"[1,2]".to_vec(), "not a JSON block record"),
            (br#"{"v":2,"network":"x"}"#.to_vec(), "unsupported block record version 2"),
            (br#"{"v":"1"}"#.to_vec(), "unsupported block record version"),
            (br#"{"network":"x"}"#.to_vec(), "no version field"),
            (br#"{"v":1,"network":"x"}"#.to_vec(), "invalid block record"),
            (br#"{"v":1,"network":"x","cidr":"nope","host":"h"}"#.to_vec(), "invalid block record"),
        ];
        for (bytes, want) in cases {
            let err = decode::<BlockRecord>("/ovnet/blocks/x/y", &bytes).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("/ovnet/blocks/x/y"), "{msg}");
            assert!(msg.contains(want), "{msg} should contain {want}");
        }
    }

    #[test]
    fn endpoint_device_names_are_checked() {
        let good = br#"{"v":1,"id":"c","network":"n","host":"h","netns":"/run/netns/c","ip":"10.0.0.2","mac":"02:42:0a:00:00:02","ifname":"eth0","host_ifname":"ovve1a2b","created_at":1}"#;
        decode::<EndpointRecord>("k", good).unwrap();
        let text = String::from_utf8_lossy(good);
        for (field, value, want) in [
            ("host_ifname", "eth0", "not one of ovnet's veths"),
            ("host_ifname", "ovvx4096", "not one of ovnet's veths"),
            ("host_ifname", "ovve", "not one of ovnet's veths"),
            ("host_ifname", "ovve123456789012", "longer than 15"),
            ("host_ifname", "ovve1/2", "not one of ovnet's veths"),
            ("ifname", "", "empty"),
            ("ifname", "eth 0", "character"),
            ("ifname", "..", "not an interface name"),
        ] {
            let from = match field {
                "ifname" => r#""ifname":"eth0""#.to_string(),
                _ => r#""host_ifname":"ovve1a2b""#.to_string(),
            };
            let bytes = text.replace(&from, &format!(r#""{field}":"{value}""#));
            let err = decode::<EndpointRecord>("/k", bytes.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("/k"), "{field}={value:?}: {err}");
        }
        // Docker names the container's interface itself: its records carry none.
        let docker =
            text.replace(r#""ifname":"eth0""#, r#""ifname":"","container":{"runtime":"docker","id":"x"}"#);
        decode::<EndpointRecord>("k", docker.as_bytes()).unwrap();
    }

    #[test]
    fn network_records_carry_their_driver_and_a_bridge_network_its_host() {
        let old = br#"{"v":1,"id":"x","name":"n","subnet":"10.1.0.0/16","gateway":"10.1.0.1","vni":4096,"mtu":1450,"block_prefix":24,"created_at":0}"#;
        let r: NetworkRecord = decode("k", old).unwrap();
        assert_eq!((r.driver, r.owner()), (Driver::Overlay, None), "a record without a driver is overlay");
        assert!(r.usable_on("any"));
        let text = String::from_utf8_lossy(old);
        let with = |extra: &str| text.replace(r#""id":"x""#, &format!(r#""id":"x",{extra}"#));
        let bridge: NetworkRecord = decode("k", with(r#""driver":"bridge","host":"h1""#).as_bytes()).unwrap();
        assert_eq!(bridge.owner(), Some("h1"));
        assert_eq!(decode::<NetworkRecord>("k", &encode(&bridge)).unwrap(), bridge);
        for (extra, want) in [
            (r#""driver":"bridge""#, "must name its host"),
            (r#""driver":"bridge","host":"a/b""#, "invalid host name"),
            (r#""driver":"overlay","host":"h1""#, "belongs to no host"),
            (r#""driver":"macvlan""#, "invalid network record"),
        ] {
            let e = decode::<NetworkRecord>("/k", with(extra).as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("/k"), "{extra}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_accepted() {
        let bytes = br#"{"v":1,"vni":5,"network":"n","future":true}"#;
        let r: VniRecord = decode("k", bytes).unwrap();
        assert_eq!(r.vni, 5);
    }
}
