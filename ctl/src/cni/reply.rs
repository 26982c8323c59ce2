//! What the plugin prints: ADD results, the VERSION answer and errors, each
//! in the CNI version the runtime asked for.
//!
//! The versions differ in one place for what ovnet returns: before 1.0.0
//! each IP carries `"version": "4"`, from 1.0.0 it does not. An error names
//! the version asked for when it could be read, else [`CURRENT_VERSION`].

use ovnet_proto as pb;
use serde_json::{Value, json};

use super::{CniError, code};

/// Every CNI version the plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version of conflists we write and of answers to requests without one.
pub const CURRENT_VERSION: &str = "1.0.0";

pub fn supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// CHECK (and `prevResult` on DEL) came with 0.4.0.
pub fn has_check(version: &str) -> bool {
    version != "0.3.0" && version != "0.3.1"
}

/// The answer to VERSION: in the version asked for when we speak it.
pub fn version(asked: Option<&str>) -> Value {
    let v = asked.filter(|v| supported(v)).unwrap_or(CURRENT_VERSION);
    json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS })
}

/// The error JSON of `e`, in `version` (or the current one).
pub fn error(version: Option<&str>, e: &CniError) -> Value {
    let v = version.filter(|v| supported(v)).unwrap_or(CURRENT_VERSION);
    let mut out = json!({ "cniVersion": v, "code": e.code, "msg": e.msg });
    if !e.details.is_empty() {
        out["details"] = json!(e.details);
    }
    out
}

/// The result of an ADD that made `ep` in namespace `sandbox`: the
/// container's interface, its address with the gateway, the default route
/// the agent set, and `dns` as configured.
pub fn add_result(version: &str, ep: &pb::Endpoint, sandbox: &str, dns: &Value) -> Result<Value, CniError> {
    let bad = |what: &str| {
        CniError::new(code::IO_FAILURE, format!("the agent's answer has an unusable {what}"))
            .with_details(format!("{ep:?}"))
    };
    let ip: std::net::Ipv4Addr = ep.ip.parse().map_err(|_| bad("address"))?;
    let gateway: std::net::Ipv4Addr = ep.gateway.parse().map_err(|_| bad("gateway"))?;
    if ep.prefix_len > 32 || ep.ifname.is_empty() {
        return Err(bad("prefix length or interface name"));
    }
    let mut address = json!({
        "address": format!("{ip}/{}", ep.prefix_len),
        "gateway": gateway.to_string(),
        "interface": 0,
    });
    if version != CURRENT_VERSION {
        address["version"] = json!("4");
    }
    Ok(json!({
        "cniVersion": version,
        "interfaces": [{ "name": ep.ifname, "mac": ep.mac, "sandbox": sandbox }],
        "ips": [address],
        "routes": [{ "dst": "0.0.0.0/0", "gw": gateway.to_string() }],
        "dns": dns,
    }))
}

/// The address of the container's interface in a previous result (CHECK's
/// `prevResult`), in any version we speak.
pub fn prev_address(prev: &Value) -> Option<std::net::Ipv4Addr> {
    let address = prev.get("ips")?.as_array()?.first()?.get("address")?.as_str()?;
    super::env::fixed_ip(address).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> pb::Endpoint {
        pb::Endpoint {
            ip: "10.20.1.5".into(),
            mac: "02:0a:14:01:05:00".into(),
            ifname: "eth0".into(),
            prefix_len: 16,
            gateway: "10.20.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_1_0_0_result() {
        let r = add_result("1.0.0", &endpoint(), "/run/netns/c1", &json!({})).unwrap();
        let want = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:0a:14:01:05:00", "sandbox": "/run/netns/c1"}],
            "ips": [{"address": "10.20.1.5/16", "gateway": "10.20.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.20.0.1"}],
            "dns": {},
        });
        assert_eq!(r, want);
        assert_eq!(prev_address(&r), Some("10.20.1.5".parse().unwrap()));
    }

    #[test]
    fn older_results_carry_the_ip_version() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let dns = json!({"nameservers": ["10.20.0.53"]});
            let r = add_result(v, &endpoint(), "/run/netns/c1", &dns).unwrap();
            assert_eq!(r["cniVersion"], v);
            assert_eq!(r["ips"][0]["version"], "4", "{v}");
            assert_eq!(r["ips"][0]["interface"], 0);
            assert_eq!(r["dns"], dns);
        }
    }

    #[test]
    fn an_unusable_answer_is_an_error_not_a_panic() {
        let mut ep = endpoint();
        ep.ip = "x".into();
        assert_eq!(add_result("1.0.0", &ep, "/n", &json!({})).unwrap_err().code, code::IO_FAILURE);
    }

    #[test]
    fn version_answers() {
        let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]);
        assert_eq!(version(Some("0.4.0")), json!({"cniVersion": "0.4.0", "supportedVersions": all}));
        assert_eq!(version(Some("9.9.9"))["cniVersion"], "1.0.0");
        assert_eq!(version(None)["cniVersion"], "1.0.0");
        assert!(!has_check("0.3.1") && has_check("0.4.0") && has_check("1.0.0"));
    }

    #[test]
    fn errors() {
        let e = CniError::new(7, "bad").with_details("why");
        assert_eq!(
            error(Some("0.4.0"), &e),
            json!({"cniVersion": "0.4.0", "code": 7, "msg": "bad", "details": "why"})
        );
        assert_eq!(
            error(Some("nonsense"), &CniError::new(6, "x")),
            json!({"cniVersion": "1.0.0", "code": 6, "msg": "x"})
        );
    }
}
