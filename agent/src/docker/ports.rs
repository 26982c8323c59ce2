//! Docker's `-p`: `NetworkDriver.ProgramExternalConnectivity` carries the
//! container's port map once it has joined, `RevokeExternalConnectivity`
//! takes it back. The ports are recorded with the ovnet endpoint, so the
//! agent's table forwards them as it does `ovctl --publish`.
//!
//! The design decision: Docker's port map is turned into the same
//! [`PortMapping`]s `--publish` makes and checked the same way; IPv6 host
//! addresses are skipped (ovnet carries IPv4 only), a protocol other than
//! TCP or UDP is refused.

use std::net::IpAddr;

use ovnet_ipam_store::{PortMapping, Proto};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{Plugin, docker_id};
use crate::dataplane::Dataplane;
use crate::error::AgentError;

/// The option holding the port map.
const PORTMAP: &str = "com.docker.network.portmap";

/// `{Program,Revoke}ExternalConnectivity`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExternalConnectivity {
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: Option<String>,
    #[serde(rename = "Options")]
    pub options: Option<serde_json::Map<String, Value>>,
}

/// One binding of Docker's port map (`types.PortBinding`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Binding {
    #[serde(rename = "Proto")]
    proto: u8,
    #[serde(rename = "Port")]
    port: u32,
    #[serde(rename = "HostIP")]
    host_ip: String,
    #[serde(rename = "HostPort")]
    host_port: u32,
}

/// The mappings of a port map; IPv6 bindings are left out.
pub fn mappings(options: Option<&serde_json::Map<String, Value>>) -> Result<Vec<PortMapping>, AgentError> {
    let invalid = |why: String| AgentError::InvalidArgument(why);
    let Some(map) = options.and_then(|o| o.get(PORTMAP)).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let bindings: Vec<Binding> = serde_json::from_value(map.clone())
        .map_err(|e| invalid(format!("a port map ovnet cannot read: {e}")))?;
    let mut out = Vec::new();
    for b in bindings {
        let host_ip = match b.host_ip.parse::<IpAddr>() {
            _ if b.host_ip.is_empty() => None,
            Ok(IpAddr::V4(ip)) if ip.is_unspecified() => None,
            Ok(IpAddr::V4(ip)) => Some(ip),
            Ok(IpAddr::V6(_)) => continue,
            Err(_) => {
                return Err(invalid(format!("host address {:?} of -p is not an IP address", b.host_ip)));
            }
        };
        let proto = match b.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            other => return Err(invalid(format!("ovnet publishes tcp and udp ports, not protocol {other}"))),
        };
        let (Ok(port), Ok(host_port)) = (u16::try_from(b.port), u16::try_from(b.host_port)) else {
            return Err(invalid(format!("-p {}:{}: ports are at most 65535", b.host_port, b.port)));
        };
        let m = PortMapping { host_ip, host_port, port, proto };
        m.check().map_err(invalid)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

impl<D: Dataplane> Plugin<D> {
    pub(super) async fn program_external(&self, r: ExternalConnectivity) -> Result<Value, AgentError> {
        let ep_id = docker_id(&r.endpoint_id, "EndpointID")?;
        let wanted = mappings(r.options.as_ref())?;
        let Some(m) = self.endpoint_of(ep_id).await? else {
            return Err(AgentError::NotFound(format!("docker endpoint {ep_id} is not known to ovnet")));
        };
        let (ep, _) = self.record(&m.network, m.ip).await?.ok_or_else(|| {
            AgentError::NotFound(format!("the ovnet endpoint {} of network {} is gone", m.ip, m.network))
        })?;
        if wanted.is_empty() && ep.ports.is_empty() {
            return Ok(json!({}));
        }
        let ports = self.endpoints.publish(&ep, &wanted).await?;
        let shown: Vec<String> = ports.iter().map(ToString::to_string).collect();
        info!(network = %ep.network, ip = %ep.ip, ports = ?shown, "docker ports published");
        Ok(json!({}))
    }

    pub(super) async fn revoke_external(&self, r: ExternalConnectivity) -> Result<Value, AgentError> {
        let ep_id = docker_id(&r.endpoint_id, "EndpointID")?;
        let Some(m) = self.endpoint_of(ep_id).await? else { return Ok(json!({})) };
        if let Some((ep, _)) = self.record(&m.network, m.ip).await? {
            self.endpoints.unpublish(&ep).await?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_maps_become_mappings() {
        let opts = |map: Value| json!({ PORTMAP: map }).as_object().cloned();
        let map = opts(json!([
            {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
            {"Proto":6,"IP":"","Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080},
            {"Proto":17,"IP":"","Port":53,"HostIP":"172.30.0.11","HostPort":0,"HostPortEnd":0}
        ]));
        let got: Vec<String> = mappings(map.as_ref()).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(got, ["8080:80/tcp", "172.30.0.11:0:53/udp"]);
        assert!(mappings(None).unwrap().is_empty());
        for (bad, want) in [
            (json!([{"Proto":132,"Port":80,"HostPort":80}]), "not protocol 132"),
            (json!([{"Proto":6,"Port":0,"HostPort":80}]), "container port must be 1-65535"),
            (json!([{"Proto":6,"Port":80,"HostIP":"nope","HostPort":80}]), "not an IP address"),
            (json!({"x":1}), "cannot read"),
        ] {
            let err = mappings(opts(bad).as_ref()).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
