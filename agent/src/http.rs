//! The metrics listener (`--metrics-listen`): `/metrics` (Prometheus text),
//! `/healthz` and `/readyz`.
//!
//! It serves only what `Metrics` already holds, so a scrape or a probe never
//! waits on etcd or the kernel: `/healthz` answers 200 while every task of
//! the agent runs (503 with the task's end once one ended, while the agent
//! exits), `/readyz` 200 only when etcd answers, the datapath was synced once
//! and the firewall table is written, else 503 with the reason.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// The content type of the OpenMetrics text exposition, which Prometheus reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown).await
}

fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .with_state(metrics)
}

async fn scrape(State(m): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], m.encode())
}

async fn health(State(m): State<Metrics>) -> (StatusCode, String) {
    match m.health() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
    }
}

async fn ready(State(m): State<Metrics>) -> (StatusCode, String) {
    match m.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.0 GET: (status code, body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head[9..12].parse().unwrap(), body.to_string())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Metrics::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m.clone(), async {
            let _ = stopped.await;
        }));
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("# TYPE ovnet_networks gauge"), "{body}");
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.starts_with("not ready: etcd is not reachable"), "{body}");
        m.etcd_ok();
        m.synced();
        assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
        m.isolation(Some("firewall table inet ovnet: Operation not permitted".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert!(code == 503 && body.contains("networks are not isolated: firewall"), "{body}");
        m.isolation(None);
        m.unhealthy("the watch task panicked: boom".into());
        assert_eq!(get(addr, "/healthz").await, (503, "unhealthy: the watch task panicked: boom\n".into()));
        assert_eq!(get(addr, "/nope").await.0, 404);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
