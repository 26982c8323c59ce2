//! Dialing the agent and calling its RPCs, with every failure classified.
//!
//! The decision a reader must know: a `tonic::Status` that carries a source
//! error was made *on our side* by tonic from a transport failure (connection
//! refused or reset, HTTP/2 error), so it means "cannot reach the agent"
//! (exit 3). A status without a source was decoded from the agent's answer
//! and is the agent's own verdict (exit 1), even when its code is
//! `Unavailable` (which the agent uses when etcd is down).

use std::error::Error as StdError;

use hyper_util::rt::TokioIo;
use ovnet_proto as pb;
use ovnet_proto::agent_client::AgentClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::addr::{AgentAddr, Transport};
use crate::error::CtlError;
use crate::tls::Mode;

/// Where the agent is and how to speak to it.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: AgentAddr,
    /// TLS for a TCP address; `None` is plain text.
    pub tls: Option<ClientTlsConfig>,
    /// Agrees with `tls`; says whether a client certificate is presented.
    pub mode: Mode,
}

/// A connected client of one agent.
pub struct Agent {
    client: AgentClient<Channel>,
    addr: AgentAddr,
    mode: Mode,
}

impl Agent {
    /// Opens the connection (eagerly, so an absent agent fails here).
    pub async fn connect(target: &Target) -> Result<Self, CtlError> {
        let (addr, mode) = (&target.addr, target.mode);
        let unreachable = |e: tonic::transport::Error| unreachable(addr, &e, mode);
        let channel = match addr.transport() {
            Transport::Unix(path) => {
                let path = path.clone();
                // The URI is a placeholder: the connector ignores it.
                Endpoint::from_static("http://[::]:50051")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(unreachable)?
            }
            Transport::Tcp(authority) => {
                let scheme = if target.tls.is_some() { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}")).map_err(|e| {
                    CtlError::InvalidAddress { addr: addr.to_string(), reason: root_cause(&e) }
                })?;
                if let Some(cfg) = &target.tls {
                    endpoint = endpoint.tls_config(cfg.clone()).map_err(|e| {
                        CtlError::Usage(format!("TLS settings for {addr}: {}", root_cause(&e)))
                    })?;
                }
                endpoint.connect().await.map_err(unreachable)?
            }
        };
        Ok(Agent { client: AgentClient::new(channel), addr: addr.clone(), mode })
    }

    /// The address it was dialed at.
    pub fn addr(&self) -> &AgentAddr {
        &self.addr
    }

    /// Whether it is spoken to over TLS.
    pub fn tls(&self) -> bool {
        self.mode != Mode::Plain
    }

    pub async fn create_network(&mut self, req: pb::CreateNetworkRequest) -> Result<pb::Network, CtlError> {
        let r = self.client.create_network(req).await;
        self.answer(r)
    }

    pub async fn list_networks(&mut self) -> Result<Vec<pb::Network>, CtlError> {
        let r = self.client.list_networks(pb::ListNetworksRequest {}).await;
        Ok(self.answer(r)?.networks)
    }

    pub async fn inspect_network(&mut self, name: String) -> Result<pb::NetworkDetail, CtlError> {
        let r = self.client.inspect_network(pb::InspectNetworkRequest { name }).await;
        self.answer(r)
    }

    pub async fn remove_network(&mut self, name: String) -> Result<(), CtlError> {
        let r = self.client.remove_network(pb::RemoveNetworkRequest { name }).await;
        self.answer(r).map(drop)
    }

    pub async fn connect_endpoint(&mut self, req: pb::ConnectRequest) -> Result<pb::Endpoint, CtlError> {
        let r = self.client.connect_endpoint(req).await;
        self.answer(r)
    }

    pub async fn disconnect_endpoint(
        &mut self,
        req: pb::DisconnectRequest,
    ) -> Result<Option<pb::Endpoint>, CtlError> {
        let r = self.client.disconnect_endpoint(req).await;
        Ok(self.answer(r)?.endpoint)
    }

    pub async fn list_hosts(&mut self) -> Result<Vec<pb::Host>, CtlError> {
        let r = self.client.list_hosts(pb::ListHostsRequest {}).await;
        Ok(self.answer(r)?.hosts)
    }

    pub async fn remove_host(&mut self, name: String) -> Result<pb::RemoveHostResponse, CtlError> {
        let r = self.client.remove_host(pb::RemoveHostRequest { name }).await;
        self.answer(r)
    }

    pub async fn version(&mut self) -> Result<pb::VersionResponse, CtlError> {
        let r = self.client.version(pb::VersionRequest {}).await;
        self.answer(r)
    }

    pub async fn doctor(&mut self) -> Result<pb::DoctorReport, CtlError> {
        let r = self.client.doctor(pb::DoctorRequest {}).await;
        self.answer(r)
    }

    fn answer<T>(&self, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, CtlError> {
        r.map(tonic::Response::into_inner).map_err(|s| classify(&self.addr, s, self.mode))
    }
}

/// Agent verdict (exit 1) or transport failure (exit 3); see the module doc.
/// `mode` says how we spoke (for the hint of a failed handshake).
pub fn classify(addr: &AgentAddr, status: tonic::Status, mode: Mode) -> CtlError {
    if status.source().is_some() {
        let reason = crate::tls::explain(root_cause(&status), mode);
        return CtlError::Unreachable { addr: addr.to_string(), reason };
    }
    let message = if status.message().is_empty() {
        format!("agent failed: {}", status.code().description())
    } else {
        status.message().to_string()
    };
    CtlError::Agent { code: status.code(), message }
}

fn unreachable(addr: &AgentAddr, e: &tonic::transport::Error, mode: Mode) -> CtlError {
    CtlError::Unreachable { addr: addr.to_string(), reason: crate::tls::explain(root_cause(e), mode) }
}

/// The innermost error of a chain, without std's ` (os error N)` suffix:
/// "No such file or directory" rather than "transport error".
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn root_cause_is_innermost_without_os_error() {
        let io = std::io::Error::from_raw_os_error(2);
        assert_eq!(root_cause(&Outer(io)), "No such file or directory");
        let custom = std::io::Error::other("broken (os error 5");
        assert_eq!(root_cause(&custom), "broken (os error 5");
    }

    #[test]
    fn statuses_from_the_agent_are_agent_errors() {
        let addr: AgentAddr = "unix:///x".parse().unwrap();
        let e = classify(&addr, tonic::Status::unavailable("etcd is unreachable"), Mode::Plain);
        assert!(matches!(e, CtlError::Agent { code: tonic::Code::Unavailable, .. }));
        assert_eq!(e.to_string(), "etcd is unreachable");
        assert_eq!(e.exit_code(), 1);
        let e = classify(&addr, tonic::Status::internal(""), Mode::Plain);
        assert!(e.to_string().starts_with("agent failed: "), "{e}");
    }

    #[test]
    fn statuses_made_from_transport_errors_mean_unreachable() {
        let addr: AgentAddr = "tcp://1.2.3.4:5".parse().unwrap();
        let io = std::io::Error::from_raw_os_error(104);
        let status = tonic::Status::from_error(Box::new(io));
        let e = classify(&addr, status, Mode::Plain);
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().starts_with("cannot reach ovagent at tcp://1.2.3.4:5: "), "{e}");
    }
}
