//! The agent's DNS server: the names and aliases of every network's
//! endpoints on every host, answered on each network's anycast gateway
//! address and on `--dns-address`, UDP and TCP port 53.
//!
//! The design decision: answers come from the watch cache only (`zone`,
//! rebuilt from each snapshot), never from etcd per request, and a query is
//! answered from the networks of its source address (`zone`'s scoping);
//! other names are forwarded to the host's resolvers (`forward`). Listeners
//! (`serve`) are bound with IP_FREEBIND, so a gateway's listener exists
//! before its bridge does; they follow the networks in the snapshot and end
//! with the task (they are aborted when it is dropped).

pub mod forward;
pub mod quiet;
pub mod resolv;
pub mod serve;
pub mod zone;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use hickory_proto::op::{Message, ResponseCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::watch::StateRx;
use serve::Shared;
use zone::Zone;

/// The DNS port.
pub const PORT: u16 = 53;

/// `--dns-address`: an address, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsAddress(pub Option<Ipv4Addr>);

/// Parses `--dns-address`: an IPv4 address or `off`.
pub fn parse_dns_address(s: &str) -> Result<DnsAddress, String> {
    if s == "off" {
        return Ok(DnsAddress(None));
    }
    let ip: Ipv4Addr =
        s.parse().map_err(|_| format!("invalid DNS address {s:?}: expected an IPv4 address or off"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("invalid DNS address {s:?}: not a unicast address"));
    }
    Ok(DnsAddress(Some(ip)))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The DNS server's counters (in the agent's registry).
#[derive(Clone, Default)]
pub struct DnsMetrics {
    queries: Counter,
    answers: Family<KindLabel, Counter>,
    forwarded: Counter,
    failures: Family<KindLabel, Counter>,
}

impl DnsMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("dns_queries", "DNS queries received", self.queries.clone());
        r.register(
            "dns_answers",
            "DNS answers from ovnet's names, by kind (A, PTR, NODATA, NXDOMAIN, other)",
            self.answers.clone(),
        );
        r.register("dns_forwarded", "DNS queries forwarded to the host's resolvers", self.forwarded.clone());
        r.register(
            "dns_failures",
            "DNS queries not answered normally, by reason (malformed, unsupported, busy, upstream)",
            self.failures.clone(),
        );
    }

    pub fn query(&self) {
        self.queries.inc();
    }

    pub fn answer(&self, msg: &Message) {
        let kind = match (msg.metadata.response_code, msg.answers.first().map(|r| r.record_type())) {
            (ResponseCode::NXDomain, _) => "NXDOMAIN",
            (ResponseCode::NoError, None) => "NODATA",
            (ResponseCode::NoError, Some(hickory_proto::rr::RecordType::A)) => "A",
            (ResponseCode::NoError, Some(hickory_proto::rr::RecordType::PTR)) => "PTR",
            _ => "other",
        };
        self.answers.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    pub fn failure(&self, kind: &'static str) {
        self.failures.get_or_create(&KindLabel { kind }).inc();
    }
}

/// What the DNS task needs.
pub struct Dns {
    /// This host's name (its endpoints count before its liveness key shows).
    pub node: String,
    /// `--dns-address`.
    pub extra: Option<Ipv4Addr>,
    /// `--resolv-conf`.
    pub resolv_conf: PathBuf,
    pub metrics: DnsMetrics,
    /// For putting `extra` on `lo` and writing the `quiet` table.
    pub dp: crate::dataplane::NetlinkDataplane,
}

/// The bound listeners by address; dropping it ends them.
#[derive(Default)]
struct Listeners(BTreeMap<Ipv4Addr, JoinHandle<()>>);

impl Drop for Listeners {
    fn drop(&mut self) {
        self.0.values().for_each(JoinHandle::abort);
    }
}

/// Serves DNS until `shutdown` completes (or the task is aborted).
pub async fn run(dns: Dns, mut state: StateRx, shutdown: impl Future<Output = ()>) {
    let (zone_tx, zone_rx) = watch::channel(Arc::new(Zone::default()));
    let own = zone_rx.clone();
    let extra = dns.extra;
    let is_own = move |ip: IpAddr| match ip {
        IpAddr::V4(v4) => Some(v4) == extra || own.borrow().nets.iter().any(|n| gateway(n) == v4),
        IpAddr::V6(_) => false,
    };
    let upstreams = forward::Upstreams::new(dns.resolv_conf.clone(), is_own);
    let shared = Arc::new(Shared::new(zone_rx, upstreams, dns.metrics.clone()));
    let mut listeners = Listeners::default();
    let mut on_lo = false;
    // When the `quiet` table was last written, and whether that worked.
    let mut quiet: Option<(tokio::time::Instant, bool)> = None;
    tokio::pin!(shutdown);
    loop {
        if let (Some(ip), false) = (extra, on_lo) {
            on_lo = add_to_lo(dns.dp.handle(), ip).await;
        }
        // Written again every 30 s (a flushed ruleset comes back), logged
        // when it first works and when it fails.
        let due = quiet.is_none_or(|(at, ok)| !ok || at.elapsed() >= QUIET_REWRITE);
        if due {
            let ok = write_quiet(&dns.dp, quiet.is_none_or(|(_, ok)| !ok)).await;
            quiet = Some((tokio::time::Instant::now(), ok));
        }
        let snapshot = state.borrow_and_update().clone();
        if let Some(snap) = snapshot {
            let zone = Zone::build(&snap.state, &dns.node);
            let wanted: Vec<Ipv4Addr> = zone.nets.iter().map(gateway).chain(extra).collect();
            zone_tx.send_replace(Arc::new(zone));
            listen(&shared, &mut listeners, &wanted);
        } else if let Some(ip) = extra {
            listen(&shared, &mut listeners, &[ip]);
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            // A listener that could not be bound, or `lo`, is tried again.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = &mut shutdown => return,
        }
    }
}

fn gateway(n: &zone::NetZone) -> Ipv4Addr {
    n.gateway
}

/// Binds the addresses of `wanted` that have no listener and ends those not wanted.
fn listen(shared: &Arc<Shared>, listeners: &mut Listeners, wanted: &[Ipv4Addr]) {
    listeners.0.retain(|ip, handle| {
        let keep = wanted.contains(ip) && !handle.is_finished();
        if !keep {
            handle.abort();
        }
        keep
    });
    for ip in wanted {
        if listeners.0.contains_key(ip) {
            continue;
        }
        let addr = SocketAddr::from((*ip, PORT));
        match (serve::bind_udp(addr), serve::bind_tcp(addr)) {
            (Ok(udp), Ok(tcp)) => {
                let (a, b) = (shared.clone(), shared.clone());
                let handle = tokio::spawn(async move {
                    tokio::join!(serve::serve_udp(a, udp), serve::serve_tcp(b, tcp));
                });
                info!(listen = %addr, "serving DNS");
                listeners.0.insert(*ip, handle);
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!(listen = %addr, error = %e, "cannot serve DNS here; will retry")
            }
        }
    }
}

/// How often the `quiet` table is written again.
const QUIET_REWRITE: Duration = Duration::from_secs(30);

/// Writes the `quiet` table (logging the command when `log`): true when done.
async fn write_quiet(dp: &crate::dataplane::NetlinkDataplane, log: bool) -> bool {
    match dp.nft_transaction(quiet::batch()).await {
        Ok(()) => {
            if log {
                info!("{}", quiet::COMMAND);
            }
            true
        }
        Err(e) => {
            warn!(error = %e, "cannot write the table inet {}; will retry", quiet::TABLE);
            false
        }
    }
}

/// `ip addr replace IP/32 dev lo`: true when done.
async fn add_to_lo(h: &rtnetlink::Handle, ip: Ipv4Addr) -> bool {
    let added = async {
        let lo = h.link().get().match_name("lo").execute().try_next().await?;
        let Some(lo) = lo else {
            return Ok(false);
        };
        h.address().add(lo.header.index, IpAddr::V4(ip), 32).replace().execute().await?;
        Ok::<_, rtnetlink::Error>(true)
    };
    match added.await {
        Ok(done) => done,
        Err(e) => {
            warn!(address = %ip, error = %e, "cannot put the DNS address on lo; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_address_flag() {
        assert_eq!(parse_dns_address("off"), Ok(DnsAddress(None)));
        assert_eq!(parse_dns_address("169.254.53.53"), Ok(DnsAddress(Some(Ipv4Addr::new(169, 254, 53, 53)))));
        for bad in ["", "1.2.3", "0.0.0.0", "224.0.0.1", "::1"] {
            assert!(parse_dns_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counters_are_in_the_agents_registry() {
        let m = crate::metrics::Metrics::new();
        let dns = m.dns();
        dns.query();
        dns.forwarded();
        dns.failure("malformed");
        dns.answer(&Message::error_msg(1, hickory_proto::op::OpCode::Query, ResponseCode::NXDomain));
        let text = m.encode();
        for want in [
            "ovnet_dns_queries_total 1",
            "ovnet_dns_forwarded_total 1",
            "ovnet_dns_failures_total{kind=\"malformed\"} 1",
            "ovnet_dns_answers_total{kind=\"NXDOMAIN\"} 1",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
