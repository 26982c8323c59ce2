//! The network configuration a runtime gives the plugin on stdin, and the
//! conflist that makes a runtime use it.
//!
//! The plugin's own fields are `agent` (the agent's address, as
//! `ovctl -H` takes it; by default `unix:///run/ovnet/ovagent.sock`) and
//! `network` (the ovnet network; by default the configuration's `name`).
//! Fields other plugins or runtimes add are ignored, except `ipam`: ovnet
//! hands out the addresses itself, so an `ipam` section is refused rather
//! than silently not used.

use std::net::Ipv4Addr;

use ovnet_ipam_store::PortMapping;
use serde_json::{Map, Value, json};

use super::env::fixed_ip;
use super::reply::{CURRENT_VERSION, supported};
use super::{CniError, code};
use crate::addr::{AgentAddr, Scheme};
use crate::cli::DEFAULT_HOST;

/// The CNI type (and binary name) of the plugin.
pub const PLUGIN_TYPE: &str = "ovnet";

/// A parsed network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The CNI network name.
    pub name: String,
    /// The ovnet network to connect to.
    pub network: String,
    pub agent: AgentAddr,
    /// `runtimeConfig.ips` (the `ips` capability): at most one address.
    pub ip: Option<Ipv4Addr>,
    /// `runtimeConfig.aliases[name]` (the `aliases` capability): DNS
    /// aliases, lower-cased; those that are no DNS label are left out.
    pub aliases: Vec<String>,
    /// `runtimeConfig.portMappings` (the `portMappings` capability).
    pub ports: Vec<PortMapping>,
    /// `dns`, returned in the result as it is.
    pub dns: Value,
    pub prev_result: Option<Value>,
}

/// The `cniVersion` of stdin, if it has a readable one: the version errors
/// should come in.
pub fn asked_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parses stdin: code 6 when it is not a JSON object, 1 for a version we do
/// not speak, 2 for `ipam`, 7 for a missing or wrong field.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE, "cannot decode the network configuration on stdin as JSON")
            .with_details(e.to_string())
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(code::DECODE, "the network configuration on stdin is not a JSON object"));
    };
    let cni_version = string(&obj, "cniVersion")?.ok_or_else(|| missing("cniVersion"))?;
    if !supported(&cni_version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("ovnet does not speak CNI version {cni_version:?}"),
        )
        .with_details(format!("supported versions: {}", super::reply::SUPPORTED_VERSIONS.join(", "))));
    }
    let name = string(&obj, "name")?.ok_or_else(|| missing("name"))?;
    match string(&obj, "type")?.as_deref() {
        Some(PLUGIN_TYPE) => {}
        other => return Err(config(format!("\"type\" is {other:?}, not \"{PLUGIN_TYPE}\""))),
    }
    if let Some(ipam) = obj.get("ipam") {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "ovnet does not use an \"ipam\" section: the agent hands out the addresses; remove it",
        )
        .with_details(format!("\"ipam\": {ipam}")));
    }
    let network = string(&obj, "network")?.unwrap_or_else(|| name.clone());
    let agent_text = string(&obj, "agent")?.unwrap_or_else(|| DEFAULT_HOST.to_string());
    let agent = agent_text.parse::<AgentAddr>().map_err(|e| config(format!("\"agent\": {e}")))?;
    if agent.scheme() == Scheme::Https {
        return Err(config(format!(
            "\"agent\": {agent} is TLS, which the plugin does not speak; use the agent's unix socket"
        )));
    }
    let ip = runtime_ip(&obj)?;
    let aliases = runtime_aliases(&obj, &name)?;
    let ports = port_mappings(&obj)?;
    let dns = obj.get("dns").cloned().unwrap_or_else(|| json!({}));
    let prev_result = obj.get("prevResult").cloned().filter(|v| !v.is_null());
    Ok(NetConf { cni_version, name, network, agent, ip, aliases, ports, dns, prev_result })
}

/// The aliases `runtimeConfig.aliases` gives network `name` (podman's
/// `--network-alias`, plus the container's name and short id).
fn runtime_aliases(obj: &Map<String, Value>, name: &str) -> Result<Vec<String>, CniError> {
    let Some(list) = obj.get("runtimeConfig").and_then(|r| r.get("aliases")).and_then(|a| a.get(name)) else {
        return Ok(Vec::new());
    };
    let list: Vec<&str> = list
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect())
        .ok_or_else(|| config(format!("\"runtimeConfig.aliases.{name}\" must be a list of names")))?;
    let mut aliases: Vec<String> =
        list.iter().map(|a| a.to_ascii_lowercase()).filter(|a| is_dns_label(a)).collect();
    aliases.sort();
    aliases.dedup();
    Ok(aliases)
}

/// The address of `runtimeConfig.ips`, if any.
fn runtime_ip(obj: &Map<String, Value>) -> Result<Option<Ipv4Addr>, CniError> {
    let ips = obj.get("runtimeConfig").and_then(|r| r.get("ips"));
    let Some(ips) = ips.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list: Vec<&str> = ips
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect())
        .ok_or_else(|| config("\"runtimeConfig.ips\" must be a list of addresses".into()))?;
    match list.as_slice() {
        [] => Ok(None),
        [one] => fixed_ip(one).map(Some).map_err(|e| config(format!("\"runtimeConfig.ips\": {e}"))),
        _ => Err(config("\"runtimeConfig.ips\" names several addresses; an ovnet endpoint has one".into())),
    }
}

/// 1..=63 of `[a-z0-9-]`, no `-` at either end (what the agent accepts).
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `runtimeConfig.portMappings`: `[{"hostPort", "containerPort",
/// "protocol", "hostIP"}]`, each checked as `--publish` checks its spec.
fn port_mappings(obj: &Map<String, Value>) -> Result<Vec<PortMapping>, CniError> {
    let maps = obj.get("runtimeConfig").and_then(|r| r.get("portMappings"));
    let Some(maps) = maps.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let bad = |why: String| config(format!("\"runtimeConfig.portMappings\": {why}"));
    let list = maps.as_array().ok_or_else(|| bad("must be a list".into()))?;
    list.iter()
        .map(|m| {
            let port = |key: &str| m.get(key).and_then(Value::as_u64);
            let host_port = port("hostPort").ok_or_else(|| bad(format!("{m} has no number \"hostPort\"")))?;
            let port =
                port("containerPort").ok_or_else(|| bad(format!("{m} has no number \"containerPort\"")))?;
            let proto = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp").to_ascii_lowercase();
            let ip = m.get("hostIP").and_then(Value::as_str).filter(|s| !s.is_empty() && *s != "0.0.0.0");
            let spec = match ip {
                Some(ip) => format!("{ip}:{host_port}:{port}/{proto}"),
                None => format!("{host_port}:{port}/{proto}"),
            };
            spec.parse::<PortMapping>().map_err(bad)
        })
        .collect()
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(config(format!("\"{key}\" must be a non-empty string"))),
    }
}

fn missing(key: &str) -> CniError {
    config(format!("\"{key}\" is missing"))
}

fn config(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("invalid network configuration: {msg}"))
}

/// The conflist that lets a runtime use ovnet network `network` through
/// the agent at `agent`: named after the network, one `ovnet` plugin with
/// the `ips` capability (a fixed address). The agent writes the same text
/// into its `--cni-conf-dir`.
pub fn conflist(network: &str, agent: &str) -> String {
    let list = json!({
        "cniVersion": CURRENT_VERSION,
        "name": network,
        "plugins": [{
            "type": PLUGIN_TYPE,
            "agent": agent,
            "capabilities": { "ips": true, "aliases": true, "portMappings": true },
        }],
    });
    format!("{list:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"demo","type":"ovnet"{extra}}}"#)
    }

    #[test]
    fn defaults() {
        let c = parse(conf("").as_bytes()).unwrap();
        assert_eq!((c.name.as_str(), c.network.as_str()), ("demo", "demo"));
        assert_eq!(c.agent.to_string(), DEFAULT_HOST);
        assert_eq!((c.ip, &c.dns, &c.prev_result), (None, &json!({}), &None));
    }

    #[test]
    fn plugin_fields_and_runtime_config() {
        let extra = r#","agent":"unix:///tmp/a.sock","network":"blue","dns":{"nameservers":["10.0.0.53"]},
            "runtimeConfig":{"ips":["10.9.0.7/16"],"portMappings":[]},"prevResult":{"ips":[]}"#;
        let c = parse(conf(extra).as_bytes()).unwrap();
        assert_eq!(c.agent.to_string(), "unix:///tmp/a.sock");
        assert_eq!(c.network, "blue");
        assert_eq!(c.ip, Some(Ipv4Addr::new(10, 9, 0, 7)));
        assert_eq!(c.dns["nameservers"][0], "10.0.0.53");
        assert!(c.prev_result.is_some());
        assert!(c.ports.is_empty());
        let maps = r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
            {"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"10.0.0.1"},
            {"hostPort":9090,"containerPort":90,"hostIP":"0.0.0.0"}]}"#;
        let c = parse(conf(maps).as_bytes()).unwrap();
        let shown: Vec<String> = c.ports.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["8080:80/tcp", "10.0.0.1:5353:53/udp", "9090:90/tcp"]);
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let cases: &[(&str, u32, &str)] = &[
            ("", 6, "cannot decode"),
            ("garbage", 6, "cannot decode"),
            ("[1,2]", 6, "not a JSON object"),
            (r#"{"name":"demo","type":"ovnet"}"#, 7, "\"cniVersion\" is missing"),
            (r#"{"cniVersion":"0.2.0","name":"demo","type":"ovnet"}"#, 1, "version \"0.2.0\""),
            (r#"{"cniVersion":"1.0.0","type":"ovnet"}"#, 7, "\"name\" is missing"),
            (r#"{"cniVersion":"1.0.0","name":7,"type":"ovnet"}"#, 7, "\"name\" must be"),
            (r#"{"cniVersion":"1.0.0","name":"demo","type":"bridge"}"#, 7, "not \"ovnet\""),
            (&conf(r#","ipam":{"type":"host-local"}"#), 2, "\"ipam\": {\"type\":\"host-local\"}"),
            (&conf(r#","agent":"ftp://x""#), 7, "\"agent\": invalid agent address"),
            (&conf(r#","agent":"https://10.0.0.1:50051""#), 7, "is TLS, which the plugin"),
            (&conf(r#","runtimeConfig":{"ips":["a"]}"#), 7, "not an IPv4 address"),
            (&conf(r#","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2"]}"#), 7, "several"),
            (&conf(r#","runtimeConfig":{"ips":"10.0.0.1"}"#), 7, "must be a list"),
            (&conf(r#","runtimeConfig":{"portMappings":{}}"#), 7, "must be a list"),
            (
                &conf(r#","runtimeConfig":{"portMappings":[{"hostPort":80}]}"#),
                7,
                "no number \"containerPort\"",
            ),
            (
                &conf(r#","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":0}]}"#),
                7,
                "container port",
            ),
            (
                &conf(
                    r#","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"sctp"}]}"#,
                ),
                7,
                "not tcp or udp",
            ),
        ];
        for (input, want_code, want) in cases {
            let e = parse(input.as_bytes()).unwrap_err();
            assert_eq!(e.code, *want_code, "{input}: {e}");
            assert!(e.to_string().contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn the_conflist_is_a_configuration_the_plugin_reads() {
        let text = conflist("demo", "unix:///run/x.sock");
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list["name"], "demo");
        assert_eq!(list["cniVersion"], CURRENT_VERSION);
        // libcni gives each plugin the list's name and version.
        let mut plugin = list["plugins"][0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let c = parse(plugin.to_string().as_bytes()).unwrap();
        assert_eq!((c.network.as_str(), c.agent.to_string().as_str()), ("demo", "unix:///run/x.sock"));
        assert_eq!(list["plugins"][0]["capabilities"]["ips"], true);
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn the_version_asked_for() {
        assert_eq!(asked_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(asked_version(b"garbage"), None);
    }
}
