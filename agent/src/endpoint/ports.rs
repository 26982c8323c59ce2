//! Published ports of a connect: checked against the network (none on an
//! internal one) and against every port already published on this host,
//! and host port 0 replaced by a free one, before anything is written.
//!
//! The design decision: the ports are decided under the host's plumbing
//! lock and read from etcd (not the watch cache), so two connects on one
//! host cannot both take a port; the pure [`resolve`] does the deciding.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use ovnet_ipam_store::{EndpointRecord, NetworkRecord, PortMapping, Proto};

use tracing::warn;

use super::Endpoints;
use crate::dataplane::Dataplane;
use crate::error::AgentError;
use crate::model::Published;

impl<D: Dataplane> Endpoints<D> {
    /// The ports to record for a new endpoint of `network` on this host.
    pub(super) async fn ports_for(
        &self,
        network: &str,
        wanted: &[PortMapping],
    ) -> Result<Vec<PortMapping>, AgentError> {
        self.ports_besides(network, wanted, "").await
    }

    /// `ports_for`, not counting the endpoint with id `own` as a holder.
    async fn ports_besides(
        &self,
        network: &str,
        wanted: &[PortMapping],
        own: &str,
    ) -> Result<Vec<PortMapping>, AgentError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let net = self.store.get_network(network).await?;
        let endpoints = self.store.list_endpoints(None).await?;
        let node = self.me.node.clone();
        let taken: Vec<&EndpointRecord> =
            endpoints.iter().filter(|e| e.host == node && e.id != own).collect();
        resolve(&net, &node, wanted, &taken, free_port)
    }

    /// Publishes `wanted` to the existing endpoint `ep` of this host (for
    /// Docker, whose port map comes after the endpoint), replacing what it
    /// had; returns the ports recorded (host ports picked).
    pub async fn publish(
        &self,
        ep: &EndpointRecord,
        wanted: &[PortMapping],
    ) -> Result<Vec<PortMapping>, AgentError> {
        let _plumbing = self.plumbing.lock().await;
        let ports = self.ports_besides(&ep.network, wanted, &ep.id).await?;
        let set = ports.clone();
        let written =
            self.store.update_endpoint(&ep.network, ep.ip, &ep.id, move |e| e.ports = set.clone()).await?;
        let Some(written) = written else {
            return Err(AgentError::NotFound(format!(
                "the endpoint {} of network {} is gone",
                ep.ip, ep.network
            )));
        };
        self.wrote(&ep.network, ep.ip, true);
        self.wait_forwarded(&written).await;
        Ok(ports)
    }

    /// Waits (up to the connect's readiness timeout) until the kernel
    /// forwards every port published to `ep`, so a caller can use a port as
    /// soon as it is answered; a port still missing then is logged, not an
    /// error (the reconcile loop keeps writing it).
    pub(super) async fn wait_forwarded(&self, ep: &EndpointRecord) {
        let want: Vec<Published> = crate::desired::published(ep, &self.me).collect();
        if want.is_empty() {
            return;
        }
        let mut rx = self.ready.clone();
        let all = |r: &std::sync::Arc<crate::reconcile::Ready>| want.iter().all(|p| r.forwarded.contains(p));
        if !matches!(tokio::time::timeout(super::READY_TIMEOUT, rx.wait_for(all)).await, Ok(Ok(_))) {
            warn!(network = %ep.network, ip = %ep.ip, "the published ports are not forwarded yet; the agent keeps trying");
        }
    }

    /// Takes every published port off `ep` (gone already is fine).
    pub async fn unpublish(&self, ep: &EndpointRecord) -> Result<(), AgentError> {
        let _plumbing = self.plumbing.lock().await;
        self.store.update_endpoint(&ep.network, ep.ip, &ep.id, |e| e.ports.clear()).await?;
        self.wrote(&ep.network, ep.ip, true);
        Ok(())
    }
}

/// A port of this host that no socket holds now, as the kernel picks one.
fn free_port(proto: Proto) -> Option<u16> {
    let any = (Ipv4Addr::UNSPECIFIED, 0);
    match proto {
        Proto::Tcp => TcpListener::bind(any).ok()?.local_addr().ok().map(|a| a.port()),
        Proto::Udp => UdpSocket::bind(any).ok()?.local_addr().ok().map(|a| a.port()),
    }
}

/// `wanted` checked and with host port 0 picked by `pick`: refused on an
/// internal network, for a bad mapping, or for a port that clashes with one
/// of `taken` (this host's endpoints) or with another of `wanted`.
pub fn resolve(
    net: &NetworkRecord,
    node: &str,
    wanted: &[PortMapping],
    taken: &[&EndpointRecord],
    mut pick: impl FnMut(Proto) -> Option<u16>,
) -> Result<Vec<PortMapping>, AgentError> {
    let invalid = |why: String| Err(AgentError::InvalidArgument(why));
    if net.internal && !wanted.is_empty() {
        return invalid(format!(
            "network {:?} is internal (no way in or out): it cannot publish ports",
            net.name
        ));
    }
    let holder = |m: &PortMapping| {
        taken.iter().find_map(|e| {
            e.ports.iter().find(|p| p.clashes(m)).map(|p| {
                let who = e
                    .container
                    .as_ref()
                    .map_or(e.netns.clone(), |c| format!("{} container {}", c.runtime, c.id));
                format!("{who} ({} {} on network {:?}, as {p})", e.ip, e.id, e.network)
            })
        })
    };
    let mut out: Vec<PortMapping> = Vec::new();
    for m in wanted {
        m.check().map_err(AgentError::InvalidArgument)?;
        let mut m = *m;
        if m.host_port == 0 {
            let tries =
                (0..64).filter_map(|_| pick(m.proto)).map(|port| PortMapping { host_port: port, ..m });
            let free = tries.into_iter().find(|c| holder(c).is_none() && !out.iter().any(|o| o.clashes(c)));
            m = free.ok_or_else(|| {
                AgentError::Unavailable(format!("no free {} port on host {node:?}", m.proto))
            })?;
        }
        if let Some(other) = out.iter().find(|o| o.clashes(&m)) {
            return invalid(format!("--publish {m} and {other} ask for the same port of the host"));
        }
        if let Some(who) = holder(&m) {
            return Err(AgentError::AlreadyExists(format!(
                "{} port {} of host {node:?} is already published to {who}",
                m.proto, m.host_port
            )));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint, network};

    fn p(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    #[test]
    fn a_port_taken_on_this_host_names_its_holder() {
        let net = network("blue", 4096, "10.1.0.0/16");
        let mut web = endpoint("blue", "h1", [10, 1, 0, 2]);
        web.ports = vec![p("8080:80")];
        let err = resolve(&net, "h1", &[p("8080:81")], &[&web], |_| None).unwrap_err().to_string();
        assert!(
            err.contains("tcp port 8080 of host \"h1\" is already published to") && err.contains("10.1.0.2"),
            "{err}"
        );
        assert_eq!(resolve(&net, "h1", &[p("8080:81/udp")], &[&web], |_| None).unwrap(), [p("8080:81/udp")]);
    }

    #[test]
    fn port_zero_is_picked_around_what_is_taken() {
        let net = network("blue", 4096, "10.1.0.0/16");
        let mut web = endpoint("blue", "h1", [10, 1, 0, 2]);
        web.ports = vec![p("40000:80")];
        let mut offers = [40000, 40001].into_iter();
        let got = resolve(&net, "h1", &[p("0:80")], &[&web], |_| offers.next()).unwrap();
        assert_eq!(got, [p("40001:80")]);
    }

    #[test]
    fn internal_networks_and_twice_the_same_port_are_refused() {
        let mut net = network("blue", 4096, "10.1.0.0/16");
        let err = resolve(&net, "h1", &[p("80:80"), p("80:81")], &[], |_| None).unwrap_err().to_string();
        assert!(err.contains("same port of the host"), "{err}");
        net.internal = true;
        let err = resolve(&net, "h1", &[p("80:80")], &[], |_| None).unwrap_err().to_string();
        assert!(err.contains("is internal"), "{err}");
    }
}
