//! One run of the plugin: parse, call the agent, answer.
//!
//! The decisions a reader must know. DEL is idempotent: an endpoint or a
//! network the agent does not know is success, so a repeated DEL, a DEL
//! after the namespace went, or after the agent released the endpoint on
//! its own, all succeed. A failure to reach the agent, or an agent that
//! cannot reach etcd, is code 11 ("try again later") for every command:
//! nothing was changed, and a DEL that fails while the agent is down leaks
//! nothing, since the agent releases an endpoint whose veth is gone once it
//! is back. The agent is found through the configuration's `agent`, so the
//! conflist decides it, never the environment.

use std::future::Future;
use std::time::Duration;

use ovnet_proto as pb;
use serde_json::Value;

use super::conf::{self, NetConf};
use super::env::{self, Command, Env};
use super::reply;
use super::{CniError, code};
use crate::addr::AgentAddr;
use crate::client::Agent;
use crate::error::CtlError;

/// How long a command may take with the agent, dialing included.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls the plugin makes; [`Agent`] is the real one.
pub trait AgentApi {
    fn connect(&mut self, req: pb::ConnectRequest) -> impl Future<Output = Result<pb::Endpoint, CtlError>>;
    fn disconnect(
        &mut self,
        req: pb::DisconnectRequest,
    ) -> impl Future<Output = Result<Option<pb::Endpoint>, CtlError>>;
    fn inspect(&mut self, network: String) -> impl Future<Output = Result<pb::NetworkDetail, CtlError>>;
}

impl AgentApi for Agent {
    async fn connect(&mut self, req: pb::ConnectRequest) -> Result<pb::Endpoint, CtlError> {
        self.connect_endpoint(req).await
    }
    async fn disconnect(&mut self, req: pb::DisconnectRequest) -> Result<Option<pb::Endpoint>, CtlError> {
        self.disconnect_endpoint(req).await
    }
    async fn inspect(&mut self, network: String) -> Result<pb::NetworkDetail, CtlError> {
        self.inspect_network(network).await
    }
}

/// What to print on stdout, and whether the run succeeded (exit 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub stdout: String,
    pub ok: bool,
}

/// Runs the command the environment (`get`) names, with the configuration
/// on `stdin`, dialing the agent with `dial` when the command needs it.
pub async fn run<A, F, Fut>(get: impl Fn(&str) -> Option<String>, stdin: &[u8], dial: F) -> Reply
where
    A: AgentApi,
    F: FnOnce(AgentAddr) -> Fut,
    Fut: Future<Output = Result<A, CtlError>>,
{
    let asked = conf::asked_version(stdin);
    let command = match env::command(&get) {
        Ok(c) => c,
        Err(e) => return failure(asked.as_deref(), &e),
    };
    if command == Command::Version {
        return Reply { stdout: format!("{}\n", reply::version(asked.as_deref())), ok: true };
    }
    let parsed = conf::parse(stdin).and_then(|c| Ok((c, env::env(command, &get)?)));
    let (conf, env) = match parsed {
        Ok(p) => p,
        Err(e) => return failure(asked.as_deref(), &e),
    };
    let work = async {
        let mut agent = dial(conf.agent.clone()).await.map_err(|e| agent_error(command, &conf, e))?;
        execute(&mut agent, &conf, &env).await
    };
    let result = match tokio::time::timeout(AGENT_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("no answer from ovagent at {} within {}s", conf.agent, AGENT_TIMEOUT.as_secs()),
        )),
    };
    match result {
        Ok(Some(out)) => Reply { stdout: format!("{out}\n"), ok: true },
        Ok(None) => Reply { stdout: String::new(), ok: true },
        Err(e) => failure(Some(&conf.cni_version), &e),
    }
}

fn failure(version: Option<&str>, e: &CniError) -> Reply {
    Reply { stdout: format!("{}\n", reply::error(version, e)), ok: false }
}

/// ADD, DEL or CHECK against the agent; ADD returns its result.
pub async fn execute(
    agent: &mut impl AgentApi,
    conf: &NetConf,
    env: &Env,
) -> Result<Option<Value>, CniError> {
    match env.command {
        Command::Add => add(agent, conf, env).await.map(Some),
        Command::Del => del(agent, conf, env).await.map(|()| None),
        Command::Check => check(agent, conf, env).await.map(|()| None),
        Command::Version => Ok(Some(reply::version(Some(&conf.cni_version)))),
    }
}

async fn add(agent: &mut impl AgentApi, conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    let ip = match (env.args.ip, conf.ip) {
        (Some(a), Some(b)) if a != b => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("CNI_ARGS asks for IP {a} but runtimeConfig.ips for {b}: give one"),
            ));
        }
        (a, b) => a.or(b),
    };
    let req = pb::ConnectRequest {
        network: conf.network.clone(),
        netns: env.netns.clone(),
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ifname: env.ifname.clone(),
        runtime: "cni".into(),
        container_id: env.container_id.clone(),
        container_name: env.args.pod_name.clone().unwrap_or_default(),
        name: String::new(),
        aliases: conf.aliases.clone(),
        publish: conf.ports.iter().map(ToString::to_string).collect(),
    };
    let ep = agent.connect(req).await.map_err(|e| agent_error(Command::Add, conf, e))?;
    reply::add_result(&conf.cni_version, &ep, &env.netns, &dns(conf, &ep))
}

/// The `dns` of the result: as configured, else the agent's DNS server on
/// the network's gateway with the network as search domain (podman writes
/// them into the container's resolv.conf).
fn dns(conf: &NetConf, ep: &pb::Endpoint) -> Value {
    let configured = conf.dns.get("nameservers").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if configured || ep.gateway.is_empty() {
        return conf.dns.clone();
    }
    serde_json::json!({ "nameservers": [ep.gateway], "search": [ep.network] })
}

async fn del(agent: &mut impl AgentApi, conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let req = pb::DisconnectRequest {
        network: conf.network.clone(),
        netns: env.netns.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    };
    match agent.disconnect(req).await {
        Ok(_) => Ok(()),
        // Gone already (a repeated DEL, a released endpoint, a removed
        // network), or not this host's: nothing of it is here to delete.
        Err(CtlError::Agent { code: tonic::Code::NotFound | tonic::Code::FailedPrecondition, .. }) => Ok(()),
        Err(e) => Err(agent_error(Command::Del, conf, e)),
    }
}

async fn check(agent: &mut impl AgentApi, conf: &NetConf, env: &Env) -> Result<(), CniError> {
    if !reply::has_check(&conf.cni_version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CHECK needs CNI version 0.4.0 or later, the configuration says {}", conf.cni_version),
        ));
    }
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(code::INVALID_CONFIG, "invalid network configuration: CHECK needs \"prevResult\"")
    })?;
    let detail =
        agent.inspect(conf.network.clone()).await.map_err(|e| agent_error(Command::Check, conf, e))?;
    verify(&detail, conf, env, reply::prev_address(prev))
}

/// CHECK's verdict: the agent holds this container's endpoint on this
/// interface, in this namespace, with the address of the previous result.
pub fn verify(
    detail: &pb::NetworkDetail,
    conf: &NetConf,
    env: &Env,
    prev: Option<std::net::Ipv4Addr>,
) -> Result<(), CniError> {
    let failed = |msg: String| Err(CniError::new(code::CHECK_FAILED, msg));
    let which = format!("container {} (interface {})", env.container_id, env.ifname);
    let Some(ep) =
        detail.endpoints.iter().find(|e| e.container_id == env.container_id && e.ifname == env.ifname)
    else {
        return failed(format!("{which} has no endpoint on network {}", conf.network));
    };
    if ep.netns != env.netns {
        return failed(format!("the endpoint of {which} is in namespace {}, not {}", ep.netns, env.netns));
    }
    match prev {
        Some(ip) if ip.to_string() == ep.ip => Ok(()),
        Some(ip) => {
            failed(format!("the endpoint of {which} has address {}, the previous result {ip}", ep.ip))
        }
        None => failed("the previous result names no address of the container".into()),
    }
}

/// A failure of the agent call as a CNI error: transient ones (the agent
/// or etcd unreachable) are "try again later", an unknown network on ADD
/// has its own code, anything else the agent refused keeps its message.
pub fn agent_error(command: Command, conf: &NetConf, e: CtlError) -> CniError {
    use tonic::Code;
    let msg = e.to_string();
    let code = match &e {
        CtlError::Unreachable { .. } | CtlError::Timeout { .. } => code::TRY_AGAIN_LATER,
        CtlError::Agent { code: Code::Unavailable | Code::DeadlineExceeded, .. } => code::TRY_AGAIN_LATER,
        CtlError::Agent { code: Code::NotFound, .. } if command != Command::Del => {
            return CniError::new(code::UNKNOWN_NETWORK, msg)
                .with_details(format!("create it first: ovctl network create {}", conf.network));
        }
        CtlError::Agent { .. } => code::AGENT_REFUSED,
        _ => code::IO_FAILURE,
    };
    CniError::new(code, msg)
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
