//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME` and the `CNI_ARGS` pairs, read through a lookup function so
//! tests pass a map instead of the process's environment.
//!
//! Which variables a command needs follows the spec: ADD and CHECK need all
//! three, DEL only the container id and interface (its namespace may be
//! gone), VERSION none. A missing or empty one is error code 4, naming it.

use std::net::Ipv4Addr;

use super::{CniError, code};

/// What the runtime asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The environment of an ADD, DEL or CHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty for a DEL whose namespace is gone.
    pub netns: String,
    pub ifname: String,
    pub args: Args,
}

/// The `CNI_ARGS` pairs the plugin uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `K8S_POD_NAME`: the container's name (podman sets it).
    pub pod_name: Option<String>,
    /// `IP`: a fixed address, with or without a prefix length.
    pub ip: Option<Ipv4Addr>,
}

/// `CNI_ARGS` keys that are known and ignored (Kubernetes sends them).
const IGNORED_ARGS: &[&str] = &["K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"];

fn invalid(msg: String) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

/// `CNI_COMMAND`.
pub fn command(get: &impl Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("VERSION") => Ok(Command::Version),
        None | Some("") => Err(invalid(
            "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD, DEL, CHECK or VERSION".into(),
        )),
        Some(other) => Err(invalid(format!(
            "unsupported CNI_COMMAND {other:?}: ovnet speaks ADD, DEL, CHECK and VERSION"
        ))),
    }
}

/// The rest of the environment of `command` (not VERSION).
pub fn env(command: Command, get: &impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let required = |name: &str| match get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(format!("{name} is not set: the runtime must give it for {command:?}"))),
    };
    let optional = |name: &str| get(name).unwrap_or_default();
    let container_id = required("CNI_CONTAINERID")?;
    let ifname = required("CNI_IFNAME")?;
    let netns = match command {
        Command::Del => optional("CNI_NETNS"),
        _ => required("CNI_NETNS")?,
    };
    if !netns.is_empty() && !netns.starts_with('/') {
        return Err(invalid(format!("CNI_NETNS {netns:?} must be an absolute path")));
    }
    let args = args(&optional("CNI_ARGS"))?;
    Ok(Env { command, container_id, netns, ifname, args })
}

/// Parses `CNI_ARGS` (`K=V;K=V`). Unknown keys are refused unless
/// `IgnoreUnknown` is true, as the reference plugins do.
pub fn args(text: &str) -> Result<Args, CniError> {
    let mut args = Args::default();
    let mut unknown = Vec::new();
    let mut ignore_unknown = false;
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!("invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE")));
        };
        match key {
            "IgnoreUnknown" => ignore_unknown = matches!(value.to_ascii_lowercase().as_str(), "1" | "true"),
            "K8S_POD_NAME" => args.pod_name = Some(value.to_string()).filter(|v| !v.is_empty()),
            "IP" => args.ip = Some(fixed_ip(value).map_err(|e| invalid(format!("CNI_ARGS IP: {e}")))?),
            k if IGNORED_ARGS.contains(&k) => {}
            k => unknown.push(k.to_string()),
        }
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(invalid(format!(
            "unknown CNI_ARGS {}: ovnet knows IP and K8S_POD_NAME (add IgnoreUnknown=1 to pass others)",
            unknown.join(", ")
        )));
    }
    Ok(args)
}

/// One IPv4 address, with or without `/LEN`.
pub fn fixed_ip(text: &str) -> Result<Ipv4Addr, String> {
    if text.contains(',') {
        return Err(format!("{text:?} names several addresses; an ovnet endpoint has one IPv4 address"));
    }
    let addr = text.split_once('/').map_or(text, |(a, _)| a);
    addr.parse().map_err(|_| format!("{text:?} is not an IPv4 address"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar"),
    ];

    #[test]
    fn commands() {
        assert_eq!(command(&lookup(&[("CNI_COMMAND", "DEL")])), Ok(Command::Del));
        assert_eq!(command(&lookup(&[("CNI_COMMAND", "VERSION")])), Ok(Command::Version));
        let e = command(&lookup(&[])).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND is not set"), "{e}");
        let e = command(&lookup(&[("CNI_COMMAND", "GC")])).unwrap_err();
        assert!(e.msg.contains("unsupported CNI_COMMAND \"GC\""), "{e}");
    }

    #[test]
    fn a_full_add_environment() {
        let e = env(Command::Add, &lookup(FULL)).unwrap();
        assert_eq!(
            (e.container_id.as_str(), e.netns.as_str(), e.ifname.as_str()),
            ("abc123", "/run/netns/c1", "eth0")
        );
        assert_eq!(e.args, Args { pod_name: Some("web".into()), ip: None });
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = env(Command::Add, &lookup(&pairs)).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV);
            assert!(e.msg.starts_with(&format!("{missing} is not set")), "{e}");
        }
        let empty: Vec<_> =
            FULL.iter().map(|&(k, v)| if k == "CNI_IFNAME" { (k, "") } else { (k, v) }).collect();
        assert!(env(Command::Check, &lookup(&empty)).unwrap_err().msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_needs_no_namespace() {
        let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != "CNI_NETNS").collect();
        let e = env(Command::Del, &lookup(&pairs)).unwrap();
        assert_eq!(e.netns, "");
        let relative: Vec<_> =
            FULL.iter().map(|&(k, v)| if k == "CNI_NETNS" { (k, "c1") } else { (k, v) }).collect();
        assert!(env(Command::Add, &lookup(&relative)).unwrap_err().msg.contains("absolute"));
    }

    #[test]
    fn cni_args() {
        assert_eq!(args("").unwrap(), Args::default());
        let a = args("IP=10.1.2.3/16;K8S_POD_NAME=db;K8S_POD_NAMESPACE=x").unwrap();
        assert_eq!(a, Args { pod_name: Some("db".into()), ip: Some(Ipv4Addr::new(10, 1, 2, 3)) });
        assert_eq!(args("IP=10.1.2.3").unwrap().ip, Some(Ipv4Addr::new(10, 1, 2, 3)));
        let cases = [
            ("FOO=1", "unknown CNI_ARGS FOO"),
            ("IgnoreUnknown=0;FOO=1", "unknown CNI_ARGS FOO"),
            ("garbage", "expected KEY=VALUE"),
            ("IP=nope", "not an IPv4 address"),
            ("IP=fd00::1", "not an IPv4 address"),
            ("IP=10.0.0.1,10.0.0.2", "several addresses"),
        ];
        for (text, want) in cases {
            let e = args(text).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{text}");
            assert!(e.msg.contains(want), "{text}: {e}");
        }
        assert!(args("IgnoreUnknown=true;FOO=1").is_ok());
    }
}
