//! The JSON bodies of Docker's legacy remote plugin protocol (libnetwork's
//! `remote` network driver and `remote` IPAM driver), as dockerd 20.10
//! sends them.
//!
//! The design decision: every field is optional and unknown fields are
//! ignored, since dockerd sends `null` for empty maps and lists; the
//! handlers say what is missing.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `IpamDriver.RequestPool`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: Option<String>,
    /// `--subnet`, when given.
    pub pool: Option<String>,
    /// `--ip-range`, when given.
    pub sub_pool: Option<String>,
    /// `--ipam-opt` pairs.
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    pub v6: Option<bool>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    #[serde(rename = "PoolID")]
    pub pool_id: Option<String>,
}

/// `IpamDriver.RequestAddress` and `IpamDriver.ReleaseAddress`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: Option<String>,
    /// `--ip` (or the gateway Docker asks for), when given.
    #[serde(rename = "Address")]
    pub address: Option<String>,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
}

/// One pool of a network, as `CreateNetwork` carries it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: Option<String>,
    pub pool: Option<String>,
    pub gateway: Option<String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    /// `com.docker.network.generic` holds the `-o` pairs.
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
}

/// The interface Docker's IPAM gave an endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: Option<String>,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: Option<String>,
    pub mac_address: Option<String>,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: Option<String>,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
}

/// `NetworkDriver.Join`, and (without a sandbox) `Leave`,
/// `DeleteEndpoint`, `EndpointOperInfo`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointCall {
    #[serde(rename = "NetworkID")]
    pub network_id: Option<String>,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: Option<String>,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: Option<String>,
}

/// Parses a request body; an empty body is `{}` (Plugin.Activate has none).
pub fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_dockerd_sends() {
        let pool: RequestPool = parse(
            br#"{"AddressSpace":"ovnet","Pool":"10.55.0.0/16","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert_eq!(pool.pool.as_deref(), Some("10.55.0.0/16"));
        assert!(pool.options.is_none());
        let net: CreateNetwork = parse(
            br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"network":"demo"}},"IPv4Data":[{"AddressSpace":"ovnet","Gateway":"10.55.0.1/16","Pool":"10.55.0.0/16"}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(net.ipv4_data.unwrap()[0].gateway.as_deref(), Some("10.55.0.1/16"));
        let ep: CreateEndpoint = parse(
            br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.55.0.11/16","AddressIPv6":"","MacAddress":""},"Options":{}}"#,
        )
        .unwrap();
        assert_eq!(ep.interface.unwrap().address.as_deref(), Some("10.55.0.11/16"));
        let none: EndpointCall = parse(b"").unwrap();
        assert!(none.endpoint_id.is_none());
        assert!(parse::<EndpointCall>(b"{nope").unwrap_err().contains("invalid request body"));
    }
}
