use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// An agent in memory: one network `demo`, endpoints by (container, ifname).
#[derive(Default)]
struct Fake {
    endpoints: BTreeMap<(String, String), pb::Endpoint>,
    /// Every call, as `verb network`.
    calls: Vec<String>,
    /// When set, every call fails with it.
    fail: Option<fn() -> CtlError>,
}

impl Fake {
    fn check(&mut self, verb: &str, network: &str) -> Result<(), CtlError> {
        self.calls.push(format!("{verb} {network}"));
        if let Some(f) = self.fail {
            return Err(f());
        }
        if network != "demo" {
            return Err(CtlError::Agent {
                code: tonic::Code::NotFound,
                message: format!("network {network:?} not found"),
            });
        }
        Ok(())
    }
}

impl AgentApi for Fake {
    async fn connect(&mut self, r: pb::ConnectRequest) -> Result<pb::Endpoint, CtlError> {
        self.check("connect", &r.network)?;
        let ep = pb::Endpoint {
            network: r.network,
            netns: r.netns,
            ip: if r.ip.is_empty() { "10.20.1.2".into() } else { r.ip },
            mac: "02:0a:14:01:02:00".into(),
            ifname: r.ifname.clone(),
            prefix_len: 16,
            gateway: "10.20.0.1".into(),
            runtime: r.runtime,
            container_id: r.container_id.clone(),
            container_name: r.container_name,
            aliases: r.aliases,
            ..Default::default()
        };
        self.endpoints.insert((r.container_id, r.ifname), ep.clone());
        Ok(ep)
    }

    async fn disconnect(&mut self, r: pb::DisconnectRequest) -> Result<Option<pb::Endpoint>, CtlError> {
        self.check("disconnect", &r.network)?;
        match self.endpoints.remove(&(r.container_id, r.ifname)) {
            Some(ep) => Ok(Some(ep)),
            None => Err(CtlError::Agent { code: tonic::Code::NotFound, message: "not connected".into() }),
        }
    }

    async fn inspect(&mut self, network: String) -> Result<pb::NetworkDetail, CtlError> {
        self.check("inspect", &network)?;
        Ok(pb::NetworkDetail { endpoints: self.endpoints.values().cloned().collect(), ..Default::default() })
    }
}

fn env_of(command: &str, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut map: BTreeMap<String, String> = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        if v.is_empty() {
            map.remove(*k);
        } else {
            map.insert(k.to_string(), v.to_string());
        }
    }
    move |k: &str| map.get(k).cloned()
}

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"demo","type":"ovnet","agent":"unix:///tmp/agent.sock"}"#;

/// Runs the plugin against `fake`; returns the reply and the JSON printed.
async fn run_with(fake: &mut Fake, command: &str, extra: &[(&str, &str)], stdin: &str) -> (Reply, Value) {
    let reply = run(env_of(command, extra), stdin.as_bytes(), |addr| async move {
        assert_eq!(addr.to_string(), "unix:///tmp/agent.sock", "dials the conflist's agent");
        Ok(&mut *fake)
    })
    .await;
    let value =
        if reply.stdout.is_empty() { Value::Null } else { serde_json::from_str(&reply.stdout).unwrap() };
    (reply, value)
}

impl AgentApi for &mut Fake {
    async fn connect(&mut self, r: pb::ConnectRequest) -> Result<pb::Endpoint, CtlError> {
        (**self).connect(r).await
    }
    async fn disconnect(&mut self, r: pb::DisconnectRequest) -> Result<Option<pb::Endpoint>, CtlError> {
        (**self).disconnect(r).await
    }
    async fn inspect(&mut self, n: String) -> Result<pb::NetworkDetail, CtlError> {
        (**self).inspect(n).await
    }
}

#[tokio::test]
async fn add_connects_with_the_container_and_returns_a_result() {
    let mut fake = Fake::default();
    let (reply, out) = run_with(&mut fake, "ADD", &[], CONF).await;
    assert!(reply.ok, "{}", reply.stdout);
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(
        out["interfaces"][0],
        json!({"name": "eth0", "mac": "02:0a:14:01:02:00", "sandbox": "/run/netns/c1"})
    );
    assert_eq!(out["ips"][0]["address"], "10.20.1.2/16");
    let ep = &fake.endpoints[&("c0ffee".to_string(), "eth0".to_string())];
    assert_eq!((ep.runtime.as_str(), ep.container_name.as_str()), ("cni", "web"));
}

#[tokio::test]
async fn add_passes_aliases_and_returns_the_agents_dns() {
    let mut fake = Fake::default();
    let conf =
        CONF.replace('}', r#","runtimeConfig":{"aliases":{"demo":["WWW","not_a_label","api","www"]}}}"#);
    let (reply, out) = run_with(&mut fake, "ADD", &[], &conf).await;
    assert!(reply.ok, "{}", reply.stdout);
    let ep = &fake.endpoints[&("c0ffee".to_string(), "eth0".to_string())];
    assert_eq!(ep.aliases, ["api", "www"]);
    assert_eq!(out["dns"], json!({"nameservers": ["10.20.0.1"], "search": [ep.network]}));
    // A conflist's own `dns` wins.
    let conf = CONF.replace('}', r#","dns":{"nameservers":["10.9.9.9"]}}"#);
    let (_, out) = run_with(&mut Fake::default(), "ADD", &[], &conf).await;
    assert_eq!(out["dns"], json!({"nameservers": ["10.9.9.9"]}));
}

#[tokio::test]
async fn add_honours_a_fixed_address_and_the_version_asked() {
    let mut fake = Fake::default();
    let conf = CONF.replace("1.0.0", "0.4.0");
    let (reply, out) = run_with(&mut fake, "ADD", &[("CNI_ARGS", "IP=10.20.3.3")], &conf).await;
    assert!(reply.ok);
    assert_eq!((out["cniVersion"].as_str(), out["ips"][0]["version"].as_str()), (Some("0.4.0"), Some("4")));
    assert_eq!(out["ips"][0]["address"], "10.20.3.3/16");
    let conf = CONF.replace('}', r#","runtimeConfig":{"ips":["10.20.4.4/16"]}}"#);
    let (_, out) = run_with(&mut Fake::default(), "ADD", &[("CNI_CONTAINERID", "c2")], &conf).await;
    assert_eq!(out["ips"][0]["address"], "10.20.4.4/16");
    let (reply, out) = run_with(&mut Fake::default(), "ADD", &[("CNI_ARGS", "IP=10.20.5.5")], &conf).await;
    assert!(!reply.ok);
    assert_eq!(out["code"], 7);
}

#[tokio::test]
async fn del_is_idempotent() {
    let mut fake = Fake::default();
    run_with(&mut fake, "ADD", &[], CONF).await;
    for _ in 0..2 {
        let (reply, out) = run_with(&mut fake, "DEL", &[("CNI_NETNS", "")], CONF).await;
        assert!(reply.ok, "{}", reply.stdout);
        assert_eq!(out, Value::Null, "DEL prints nothing");
    }
    assert!(fake.endpoints.is_empty());
    let gone = CONF.replace("\"demo\"", "\"gone\"");
    assert!(run_with(&mut fake, "DEL", &[], &gone).await.0.ok, "a removed network is success");
}

#[tokio::test]
async fn check_verifies_the_endpoint() {
    let mut fake = Fake::default();
    let (_, result) = run_with(&mut fake, "ADD", &[], CONF).await;
    let with_prev = |prev: &Value| CONF.replace('}', &format!(r#","prevResult":{prev}}}"#));
    let (reply, _) = run_with(&mut fake, "CHECK", &[], &with_prev(&result)).await;
    assert!(reply.ok, "{}", reply.stdout);
    let mut other = result.clone();
    other["ips"][0]["address"] = json!("10.20.9.9/16");
    let (reply, out) = run_with(&mut fake, "CHECK", &[], &with_prev(&other)).await;
    assert_eq!((reply.ok, out["code"].as_u64()), (false, Some(102)));
    assert!(out["msg"].as_str().unwrap().contains("10.20.9.9"), "{out}");
    let (_, out) = run_with(&mut fake, "CHECK", &[("CNI_NETNS", "/run/netns/c9")], &with_prev(&result)).await;
    assert_eq!(out["code"], 102);
    let (_, out) = run_with(&mut fake, "CHECK", &[("CNI_CONTAINERID", "x")], &with_prev(&result)).await;
    assert!(out["msg"].as_str().unwrap().contains("has no endpoint"), "{out}");
    let (_, out) = run_with(&mut fake, "CHECK", &[], CONF).await;
    assert!(out["msg"].as_str().unwrap().contains("prevResult"), "{out}");
    let old = with_prev(&result).replace("1.0.0", "0.3.1");
    let (_, out) = run_with(&mut fake, "CHECK", &[], &old).await;
    assert_eq!((out["code"].as_u64(), out["cniVersion"].as_str()), (Some(1), Some("0.3.1")));
}

#[tokio::test]
async fn version_needs_nothing_but_the_command() {
    let mut fake = Fake::default();
    let env = |k: &str| (k == "CNI_COMMAND").then(|| "VERSION".to_string());
    let reply = run(env, br#"{"cniVersion":"0.3.1"}"#, |_| async { Ok(&mut fake) }).await;
    let out: Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(out["cniVersion"], "0.3.1");
    assert_eq!(out["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"]));
    assert!(fake.calls.is_empty());
}

#[tokio::test]
async fn bad_input_never_reaches_the_agent() {
    let mut fake = Fake::default();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u64);
    let cases: &[Case] = &[
        (&[], "garbage", 6),
        (&[("CNI_NETNS", "")], CONF, 4),
        (&[("CNI_COMMAND", "")], CONF, 4),
        (&[], r#"{"cniVersion":"1.0.0","name":"demo","type":"ovnet","ipam":{}}"#, 2),
    ];
    for (extra, stdin, want) in cases {
        let (reply, out) = run_with(&mut fake, "ADD", extra, stdin).await;
        assert!(!reply.ok);
        assert_eq!(out["code"].as_u64(), Some(*want), "{extra:?} {stdin}: {out}");
    }
    assert!(fake.calls.is_empty(), "{:?}", fake.calls);
}

#[tokio::test]
async fn an_unknown_network_has_its_own_code() {
    let conf = CONF.replace("\"demo\"", "\"nope\"");
    let (reply, out) = run_with(&mut Fake::default(), "ADD", &[], &conf).await;
    assert!(!reply.ok);
    assert_eq!(out["code"], 100);
    assert!(out["details"].as_str().unwrap().contains("ovctl network create nope"), "{out}");
}

#[tokio::test]
async fn an_unreachable_agent_or_etcd_means_try_again_later() {
    let unreachable = || CtlError::Unreachable {
        addr: "unix:///tmp/agent.sock".into(),
        reason: "No such file or directory".into(),
    };
    let no_etcd =
        || CtlError::Agent { code: tonic::Code::Unavailable, message: "etcd is unreachable".into() };
    for fail in [unreachable as fn() -> CtlError, no_etcd] {
        for command in ["ADD", "DEL", "CHECK"] {
            let mut fake = Fake { fail: Some(fail), ..Default::default() };
            let conf = CONF.replace('}', r#","prevResult":{"ips":[]}}"#);
            let (reply, out) = run_with(&mut fake, command, &[], &conf).await;
            assert!(!reply.ok, "{command}");
            assert_eq!(out["code"], 11, "{command}: {out}");
        }
    }
    let env = env_of("DEL", &[]);
    let reply = run(env, CONF.as_bytes(), |_| async { Err::<Fake, _>(unreachable()) }).await;
    assert!(!reply.ok);
    assert!(
        reply.stdout.contains("\"code\":11") && reply.stdout.contains("cannot reach ovagent"),
        "{}",
        reply.stdout
    );
}

#[tokio::test]
async fn other_refusals_keep_the_agents_message() {
    let refused = || CtlError::Agent {
        code: tonic::Code::AlreadyExists,
        message: "namespace already connected".into(),
    };
    let mut fake = Fake { fail: Some(refused), ..Default::default() };
    let (reply, out) = run_with(&mut fake, "ADD", &[], CONF).await;
    assert!(!reply.ok);
    assert_eq!((out["code"].as_u64(), out["msg"].as_str()), (Some(101), Some("namespace already connected")));
}
