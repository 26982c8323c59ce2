//! Starts the agent's parts and stops them: `run(config, shutdown)`.
//!
//! Shutdown is injected (a signal in `main`, anything in tests). Stopping
//! ends the tasks and the API but never touches the kernel: the datapath of
//! this host keeps forwarding while the agent is down or restarting. The
//! metrics listener starts first, so `/healthz` answers (and `/readyz` says
//! why not ready) while etcd is still being dialed. The tasks are supervised
//! (`supervise`): when one ends, the agent exits non-zero.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ovnet_ipam_store::{Error as StoreError, EtcdStore, StoreConfig};
use ovnet_proto::agent_server::AgentServer;
use tokio::sync::watch;
use tonic::transport::ServerTlsConfig;
use tracing::{info, warn};

use crate::api::AgentService;
use crate::backoff::Backoff;
use crate::config::{Config, Listen};
use crate::dataplane::{Dataplane, NetlinkDataplane};
use crate::desired::HostContext;
use crate::endpoint::Endpoints;
use crate::leaks::Busy;
use crate::metrics::Metrics;
use crate::reconcile::Loop;
use crate::supervise::{Task, abort_all, serve_supervised};

/// Runs the agent until `shutdown` completes.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let node = cfg.node_name().map_err(anyhow::Error::msg)?;
    let api_tls = match cfg.api_tls().map_err(anyhow::Error::msg)? {
        Some(files) => Some(crate::tls::server_config(&files).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let store_cfg = store_config(&cfg).map_err(anyhow::Error::msg)?;
    let cni_agent = match &cfg.cni_conf_dir {
        Some(_) => {
            Some(crate::cni::agent_address(&cfg.listen, api_tls.is_some()).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let dp = NetlinkDataplane::new().context("opening netlink")?;
    let underlay = dp.underlay(cfg.advertise_addr).await.context("finding the underlay")?;
    let listener = bind(&cfg.listen).await?;
    let docker_listener = match &cfg.docker_plugin {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let metrics = Metrics::new();
    let http = match cfg.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, metrics.clone()).await?),
        None => None,
    };
    info!(node = %node, vtep = %underlay.addr, underlay = %underlay.ifname, mtu = underlay.mtu, listen = %cfg.listen, tls = api_tls.is_some(), "ovagent starting");
    tokio::pin!(shutdown);
    let store = tokio::select! {
        s = connect(store_cfg, &metrics) => s?,
        _ = &mut shutdown => return Ok(()),
    };
    let control_plane = cfg.control_plane(crate::config::resolve_ipv4);
    info!(etcd = ?control_plane.etcd, own = ?control_plane.own, open = cfg.open_control_plane, "containers kept from the control plane");
    let me =
        HostContext { node: node.clone(), vtep: underlay.addr, underlay_mtu: underlay.mtu, control_plane };
    let (state_tx, state_rx) = watch::channel(None);
    let state_rx_docker = state_rx.clone();
    let (ready_tx, ready_rx) = watch::channel(Arc::new(crate::reconcile::Ready::default()));
    let (registered_tx, registered_rx) = watch::channel(false);
    let busy = Busy::default();
    let (releases_tx, releases_rx) = tokio::sync::mpsc::unbounded_channel();
    let reconcile = Loop {
        dp: dp.clone(),
        me: me.clone(),
        ready: ready_tx,
        resync: cfg.resync_interval(),
        metrics: metrics.clone(),
        busy: busy.clone(),
        releases: Some(releases_tx),
    };
    let mut tasks = vec![
        Task::spawn("watch", crate::watch::run(store.clone(), state_tx, metrics.clone())),
        Task::spawn(
            "registration",
            crate::registration::run(
                crate::registration::Registration {
                    store: store.clone(),
                    node,
                    vtep: underlay.addr,
                    control: me.control_plane.published(underlay.addr),
                    ttl: cfg.lease_ttl(),
                    grace: cfg.block_grace,
                    registered: registered_tx,
                    metrics: metrics.clone(),
                },
                state_rx.clone(),
            ),
        ),
        Task::spawn("reconcile", crate::reconcile::run(reconcile, state_rx.clone())),
        Task::spawn("releases", release_dead_endpoints(store.clone(), releases_rx, metrics.clone())),
    ];
    tasks.extend(http.map(|handle| Task { name: "metrics listener", handle }));
    let dns = crate::dns::Dns {
        node: me.node.clone(),
        extra: cfg.dns_address.0,
        resolv_conf: cfg.resolv_conf.clone(),
        metrics: metrics.dns(),
        dp: dp.clone(),
    };
    tasks.push(Task::spawn("dns", crate::dns::run(dns, state_rx.clone(), std::future::pending())));
    tasks.extend(cfg.cni_conf_dir.clone().zip(cni_agent).map(|(dir, agent)| {
        let cni = crate::cni::run(dir, agent, me.node.clone(), state_rx.clone(), cfg.resync_interval());
        Task::spawn("cni conflists", cni)
    }));
    let endpoints = Arc::new(
        Endpoints::new(store.clone(), dp.clone(), me, ready_rx)
            .with_busy(busy)
            .with_registered(registered_rx)
            .with_cache(state_rx),
    );
    match docker_listener {
        Some(l) => tasks.push(Task {
            name: "docker plugin",
            handle: serve_docker_plugin(l, store.clone(), endpoints.clone(), metrics.clone()),
        }),
        // A host where Docker (or anything) sets FORWARD to DROP still lets
        // containers out and published ports in.
        None => tasks.push(Task::spawn("forward check", crate::docker::forward::run(false))),
    }
    tasks.extend(cfg.docker_sync.clone().map(|socket| {
        let janitor = crate::docker::janitor::Janitor { endpoints: endpoints.clone(), store: store.clone() };
        let sync = crate::docker::mirror::DockerSync {
            socket,
            store: store.clone(),
            state: state_rx_docker,
            mirror: true,
            janitor,
        };
        Task::spawn("docker sync", sync.run())
    }));
    let service = AgentService::new(store, dp, endpoints, metrics.clone());
    let api = async { serve_api_tls(listener, service, api_tls, shutdown).await.context("serving the API") };
    let result = serve_supervised(api, &mut tasks, &metrics).await;
    abort_all(&tasks);
    if let Some(path) = &cfg.docker_plugin {
        let _ = std::fs::remove_file(path);
    }
    if let Listen::Unix(path) = &cfg.listen {
        let _ = std::fs::remove_file(path);
    }
    info!("ovagent stopped; the datapath stays in place");
    result
}

/// Releases in etcd the endpoints the reconcile loop found dead (their veth
/// gone with their namespace), each only while it is still the same endpoint.
async fn release_dead_endpoints(
    store: EtcdStore,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ovnet_ipam_store::EndpointRecord>,
    metrics: Metrics,
) {
    while let Some(ep) = rx.recv().await {
        // With etcd unreachable the release is tried again as soon as etcd
        // answers (chaos finding, #15): waiting for the reconcile loop's
        // resend left the dead endpoint in etcd for 10 s after an outage.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            match store.release_endpoint_if(&ep.network, ep.ip, &ep.id).await {
                Ok(true) => {
                    info!(network = %ep.network, ip = %ep.ip, netns = %ep.netns, "released the address of a dead endpoint");
                    // `ip netns del` leaves /etc/netns/NAME: take our resolv.conf back.
                    let _ = crate::dns::resolv::disconnected(&ep.netns, &ep.network.to_ascii_lowercase());
                }
                Ok(false) => {}
                Err(e) => {
                    metrics.etcd_error();
                    warn!(error = %e, network = %ep.network, ip = %ep.ip, "releasing a dead endpoint failed; will retry");
                    if matches!(e, StoreError::EtcdUnavailable(_)) {
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            break;
        }
    }
}

/// Serves the Docker plugin (`--docker-plugin`) in a task of its own.
fn serve_docker_plugin<D: Dataplane>(
    listener: tokio::net::UnixListener,
    store: EtcdStore,
    endpoints: Arc<Endpoints<D>>,
    metrics: Metrics,
) -> tokio::task::JoinHandle<()> {
    let plugin = Arc::new(crate::docker::Plugin::new(store, endpoints).with_metrics(metrics));
    info!("serving the Docker network and IPAM plugin ovnet");
    // One task for both, so aborting it ends the firewall check too.
    tokio::spawn(async move {
        let serve = async {
            if let Err(e) = crate::docker::serve(listener, plugin, std::future::pending()).await {
                warn!(error = %e, "the Docker plugin listener stopped");
            }
        };
        tokio::join!(serve, crate::docker::forward::run(true));
    })
}

/// Binds the metrics listener and serves it in a task of its own.
async fn serve_metrics(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    info!(listen = %addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, metrics, std::future::pending()).await {
            warn!(error = %e, "the metrics listener stopped");
        }
    }))
}

/// Serves the gRPC API on `listener` until `shutdown` completes.
pub async fn serve_api<D: Dataplane>(
    listener: Listener,
    service: AgentService<D>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_api_tls(listener, service, None, shutdown).await
}

/// `serve_api`, over TLS when `tls` is given (a TCP listener only: `Config::api_tls` refuses TLS with a Unix socket).
pub async fn serve_api_tls<D: Dataplane>(
    listener: Listener,
    service: AgentService<D>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let (Some(tls), Listener::Tcp(_)) = (tls, &listener) {
        builder = builder.tls_config(tls)?;
    }
    let server = builder.add_service(AgentServer::new(service));
    match listener {
        Listener::Unix(l) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
            server.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        Listener::Tcp(l) => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            server.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    }
}

/// A bound API listener.
pub enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

/// Binds the API listener (a Unix socket gets mode 0660; a stale one is replaced).
pub async fn bind(listen: &Listen) -> anyhow::Result<Listener> {
    match listen {
        Listen::Unix(path) => Ok(Listener::Unix(bind_unix(path)?)),
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            Ok(Listener::Tcp(l))
        }
    }
}

/// Binds the socket (removing a stale one) and sets mode 0660.
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(meta.file_type().is_socket(), "{} exists and is not a socket", path.display());
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l =
        tokio::net::UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    Ok(l)
}

/// How to reach etcd, with its TLS files loaded and the password read.
fn store_config(cfg: &Config) -> Result<StoreConfig, String> {
    let tls = match cfg.etcd_tls()? {
        Some(files) => Some(crate::tls::etcd_config(&files)?),
        None => None,
    };
    let user = cfg.etcd_credentials()?.map(|(user, password)| (user, password.expose().to_string()));
    Ok(StoreConfig {
        endpoints: cfg.etcd_endpoints.clone(),
        prefix: cfg.etcd_prefix.clone(),
        user,
        tls,
        ..StoreConfig::default()
    })
}

/// Connects to etcd, retrying while it cannot be reached. Refused
/// credentials or a certificate that does not verify end the agent instead:
/// retrying with the same flags cannot help, and an exit shows in
/// `systemctl status`.
async fn connect(sc: StoreConfig, metrics: &Metrics) -> anyhow::Result<EtcdStore> {
    let tls = sc.tls.is_some();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(3));
    loop {
        match EtcdStore::connect(sc.clone()).await {
            Ok(s) => {
                metrics.etcd_ok();
                return Ok(s);
            }
            Err(e) => {
                metrics.etcd_error();
                let message = match etcd_hint(&e, tls) {
                    Some(hint) => format!("{e}; {hint}"),
                    None => e.to_string(),
                };
                if matches!(e, StoreError::EtcdAuth { .. } | StoreError::EtcdTls { .. }) {
                    return Err(anyhow::Error::msg(message));
                }
                let delay = backoff.next_delay();
                warn!(error = %message, retry_in = ?delay, "connecting to etcd failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Which flag to look at when connecting to etcd fails this way.
fn etcd_hint(e: &StoreError, tls: bool) -> Option<&'static str> {
    let text = e.to_string();
    // etcd refusing a client without a certificate shows as a hang-up or,
    // depending on timing, as a TLS alert about the (missing) certificate.
    let closed = text.contains("connection closed")
        || text.contains("broken pipe")
        || text.contains("fatal alert: BadCertificate")
        || text.contains("fatal alert: CertificateRequired");
    match e {
        StoreError::EtcdAuth { .. } if text.contains("user name is empty") => Some(
            "etcd has authentication enabled: pass --etcd-user and its password ($OVNET_ETCD_PASSWORD or --etcd-password-file)",
        ),
        StoreError::EtcdAuth { .. } if text.contains("authentication is not enabled") => {
            Some("etcd has no authentication enabled: drop --etcd-user")
        }
        StoreError::EtcdAuth { .. } => {
            Some("check --etcd-user and its password ($OVNET_ETCD_PASSWORD or --etcd-password-file)")
        }
        StoreError::EtcdTls { .. } => Some(
            "is --etcd-cacert the CA that signed etcd's certificate, and the endpoint's address in that certificate?",
        ),
        StoreError::EtcdUnavailable(_) if tls && closed => Some(
            "etcd closed the connection after the TLS handshake: it may want a client certificate \
             (--etcd-cert, --etcd-key) signed by a CA it trusts",
        ),
        StoreError::EtcdUnavailable(_) if tls && text.contains("tls handshake eof") => {
            Some("etcd does not seem to speak TLS on this port: use an http:// endpoint")
        }
        StoreError::EtcdUnavailable(_) if !tls && closed => {
            Some("if etcd serves TLS, use https:// endpoints with --etcd-cacert")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_hints_name_the_flags() {
        let auth =
            |reason: &str| StoreError::EtcdAuth { endpoints: "http://a:1".into(), reason: reason.into() };
        let down = |reason: &str| StoreError::EtcdUnavailable(format!("cannot connect to x: {reason}"));
        let cases = [
            (auth("authentication failed, invalid user ID or password"), false, "check --etcd-user"),
            (auth("user name is empty"), false, "pass --etcd-user"),
            (auth("authentication is not enabled"), false, "drop --etcd-user"),
            (
                StoreError::EtcdTls { endpoints: "x".into(), reason: "UnknownIssuer".into() },
                true,
                "--etcd-cacert",
            ),
            (down("connection closed"), true, "--etcd-cert, --etcd-key"),
            (down("stream closed because of a broken pipe"), false, "use https://"),
            (down("tls handshake eof"), true, "use an http:// endpoint"),
        ];
        for (e, tls, want) in cases {
            let hint = etcd_hint(&e, tls).unwrap_or_default();
            assert!(hint.contains(want), "{e}: {hint}");
        }
        assert_eq!(etcd_hint(&down("Connection refused"), true), None);
    }
}
