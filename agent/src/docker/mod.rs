//! The Docker remote plugin `ovnet`: a `NetworkDriver` and an `IpamDriver`
//! served over HTTP on a unix socket that dockerd finds in
//! /run/docker/plugins (`ovagent --docker-plugin`).
//!
//! The design decision: a docker network of driver `ovnet` is a view, on
//! one host, of one ovnet network. Nothing that a restart would lose lives
//! only in memory: the NetworkID -> ovnet network and EndpointID -> address
//! mappings are kept in etcd under `<p>/docker/<host>/` (the maps here are
//! caches), and every endpoint is an ordinary ovnet endpoint record, written
//! by the shared endpoint service in Docker's steps (`endpoint::staged`).
//! Every call answers JSON: at least `{}`, or `{"Err": "..."}` with a
//! non-200 status.
//!
//! With `--docker-sync`, `engine` talks to dockerd's Engine API, `mirror`
//! keeps dockerd's `ovnet` networks equal to ovnet's and `janitor` keeps
//! this host's Docker endpoint records equal to the endpoints dockerd has.

mod driver;
pub mod engine;
pub mod forward;
mod ipam;
pub mod janitor;
pub mod mapping;
pub mod mirror;
mod ports;
mod protocol;
pub mod stale;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{EndpointRecord, EtcdStore, NetworkRecord};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::dataplane::Dataplane;
use crate::endpoint::Endpoints;
use crate::error::AgentError;
use crate::metrics::Metrics;
use mapping::EndpointMapping;

/// Where dockerd looks for the plugin `ovnet`.
pub const DEFAULT_SOCKET: &str = "unix:///run/docker/plugins/ovnet.sock";

/// The address space the IPAM driver announces; a network whose pool comes
/// from another (Docker's default IPAM) is refused.
pub const ADDRESS_SPACE: &str = "ovnet";

/// The content type of plugin answers.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// The plugin's state: the endpoint service and the caches of its etcd mappings.
pub struct Plugin<D: Dataplane> {
    store: EtcdStore,
    endpoints: Arc<Endpoints<D>>,
    /// Docker NetworkID -> ovnet network name.
    networks: Mutex<HashMap<String, String>>,
    /// Docker EndpointID -> (ovnet network, address).
    docker_endpoints: Mutex<HashMap<String, EndpointMapping>>,
    /// Pools handed out by RequestPool for networks not created yet -> name.
    pending: Mutex<HashMap<Ipv4Net, String>>,
    /// This host's Docker endpoint records by (network, address), as
    /// RequestAddress wrote them: saves a read in each later call.
    records: Mutex<HashMap<(String, Ipv4Addr), (EndpointRecord, NetworkRecord)>>,
    /// Where each call's duration is recorded.
    metrics: Option<Metrics>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: Dataplane> Plugin<D> {
    pub fn new(store: EtcdStore, endpoints: Arc<Endpoints<D>>) -> Self {
        Plugin {
            store,
            endpoints,
            networks: Mutex::default(),
            docker_endpoints: Mutex::default(),
            pending: Mutex::default(),
            records: Mutex::default(),
            metrics: None,
        }
    }

    /// Records every call's duration in `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Plugin { metrics: Some(metrics), ..self }
    }

    /// This host's endpoint at `ip` of `network`: from the cache, else etcd.
    async fn record(
        &self,
        network: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<(EndpointRecord, NetworkRecord)>, AgentError> {
        let key = (network.to_string(), ip);
        if let Some(found) = locked(&self.records).get(&key) {
            return Ok(Some(found.clone()));
        }
        let found = self.endpoints.local_endpoint(network, ip).await?;
        if let Some(found) = &found {
            locked(&self.records).insert(key, found.clone());
        }
        Ok(found)
    }

    fn node(&self) -> &str {
        &self.endpoints.host().node
    }

    /// Answers one call of the protocol.
    pub async fn call(&self, method: &str, body: &[u8]) -> Result<Value, AgentError> {
        match method {
            "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            "NetworkDriver.GetCapabilities" => Ok(json!({"Scope": "local", "ConnectivityScope": "global"})),
            "NetworkDriver.CreateNetwork" => self.create_network(p(body)?).await,
            "NetworkDriver.DeleteNetwork" => self.delete_network(p(body)?).await,
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(p(body)?).await,
            "NetworkDriver.Join" => self.join(p(body)?).await,
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(p(body)?).await,
            "NetworkDriver.EndpointOperInfo" => Ok(json!({"Value": {}})),
            "NetworkDriver.ProgramExternalConnectivity" => self.program_external(p(body)?).await,
            "NetworkDriver.RevokeExternalConnectivity" => self.revoke_external(p(body)?).await,
            "IpamDriver.GetCapabilities" => {
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self.request_pool(p(body)?).await,
            "IpamDriver.ReleasePool" => self.release_pool(p(body)?),
            "IpamDriver.RequestAddress" => self.request_address(p(body)?).await,
            "IpamDriver.ReleaseAddress" => self.release_address(p(body)?).await,
            // Leave, Discover*, {Allocate,Free}Network: nothing to do.
            _ => Ok(json!({})),
        }
    }
}

/// The methods of the protocol, as metric labels (a bounded set).
const METHODS: &[&str] = &[
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

fn known_method(method: &str) -> &'static str {
    METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// A request body, or an error naming what is wrong with it.
fn p<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AgentError> {
    protocol::parse(body).map_err(AgentError::InvalidArgument)
}

/// Serves the plugin on `listener` until `shutdown` completes.
pub async fn serve<D: Dataplane>(
    listener: tokio::net::UnixListener,
    plugin: Arc<Plugin<D>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().fallback(handle::<D>).with_state(plugin);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn handle<D: Dataplane>(State(plugin): State<Arc<Plugin<D>>>, uri: Uri, body: Bytes) -> Response {
    let method = uri.path().trim_start_matches('/');
    debug!(method, body = %String::from_utf8_lossy(&body), "docker plugin call");
    let started = std::time::Instant::now();
    let answer = plugin.call(method, &body).await;
    let took = started.elapsed();
    debug!(method, ?took, "docker plugin call answered");
    if let Some(m) = &plugin.metrics {
        m.docker_call(known_method(method), took);
    }
    let (status, value) = match answer {
        Ok(value) => (StatusCode::OK, value),
        Err(e) => {
            warn!(method, error = %e, "docker plugin call failed");
            (status_of(&e), json!({"Err": e.to_string()}))
        }
    };
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], value.to_string()).into_response()
}

/// 400 for what the user can fix, 500 for the rest.
fn status_of(e: &AgentError) -> StatusCode {
    use ovnet_ipam_store::ErrorKind;
    let user = match e {
        AgentError::InvalidArgument(_) | AgentError::AlreadyExists(_) | AgentError::FailedPrecondition(_) => {
            true
        }
        AgentError::Store(s) => matches!(
            s.kind(),
            ErrorKind::InvalidArgument | ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition
        ),
        _ => false,
    };
    if user { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR }
}

/// A Docker id from a request: 1 to 128 ASCII letters and digits (it goes
/// into an etcd key).
fn docker_id<'a>(id: &'a Option<String>, what: &str) -> Result<&'a str, AgentError> {
    match id.as_deref() {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(id)
        }
        Some(id) => Err(AgentError::InvalidArgument(format!("invalid {what} {id:?}"))),
        None => Err(AgentError::InvalidArgument(format!("the request has no {what}"))),
    }
}

/// A field that is absent, null or empty is not given.
fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}
