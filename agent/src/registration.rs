//! Registers this host in etcd and keeps its two leases alive.
//!
//! `alive/<name>` sits on the liveness lease (`--lease-ttl`), renewed every
//! TTL/3. `hosts/<name>`, the host's blocks and its endpoints sit on the
//! reservation lease (`--block-grace`), renewed far more often than it could
//! run out; a restarted agent finds it again through `hosts/<name>` and keeps
//! it, so its containers keep their addresses. Neither lease is ever revoked
//! on shutdown: a restarting agent must not make peers drop the entries
//! toward its containers.
//!
//! The design decision: losing the liveness lease is noticed fast, because
//! peers drop a host whose `alive/` key is gone. While etcd fails, the
//! keep-alive is retried every [`RETRY`] instead of every TTL/3, so the first
//! answer after etcd comes back is seen at once; an answer with TTL 0 (the
//! lease ran out, e.g. etcd was frozen past the TTL) or a snapshot that no
//! longer holds our `alive/` key makes the agent register again right away
//! (a new liveness lease, the same reservation).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ovnet_ipam_store::{AliveRecord, EtcdStore, HostRecord};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::watch::StateRx;

/// How soon a failed keep-alive is tried again.
const RETRY: Duration = Duration::from_millis(250);

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the registration needs.
pub struct Registration {
    pub store: EtcdStore,
    pub node: String,
    pub vtep: Ipv4Addr,
    /// This agent's API and metrics listeners as other hosts reach them
    /// (the host record's `control`).
    pub control: Vec<std::net::SocketAddrV4>,
    /// Liveness TTL.
    pub ttl: Duration,
    /// How long a dead host's blocks and endpoints stay reserved.
    pub grace: Duration,
    /// Turns true after the first successful registration.
    pub registered: watch::Sender<bool>,
    pub metrics: Metrics,
}

/// The leases of one registration.
#[derive(Clone, Copy, Debug)]
struct Leases {
    alive: i64,
    reservation: i64,
    /// The revision that wrote `alive/<node>`.
    revision: i64,
}

/// Why a registration ended.
#[derive(Debug, PartialEq, Eq)]
enum Lost {
    Alive,
    Reservation,
}

/// Keeps this host registered until dropped.
pub async fn run(r: Registration, mut state: StateRx) {
    let started_at = unix_now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let leases = match register(&r, started_at).await {
            Ok(l) => l,
            Err(e) => {
                r.metrics.etcd_error();
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "registering host in etcd failed");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        r.metrics.etcd_ok();
        r.registered.send_replace(true);
        info!(
            node = %r.node, vtep = %r.vtep, lease = leases.alive, reservation = leases.reservation,
            ttl = r.ttl.as_secs(), grace = r.grace.as_secs(), "host registered"
        );
        let lost = keep(&r, leases, &mut state).await;
        warn!(node = %r.node, lost = ?lost, "registration lost; registering again");
    }
}

/// Finds or grants the reservation, grants a liveness lease and writes both
/// keys. With a new reservation (first start, a host back after its grace,
/// records of an ovnet that had none), any record of ours not on it is
/// moved onto it; a found one already holds them all, since the API writes
/// nothing before the host is registered.
async fn register(r: &Registration, started_at: u64) -> Result<Leases, ovnet_ipam_store::Error> {
    let store = &r.store;
    let (reservation, new) = match store.reservation_of(&r.node).await? {
        Some(lease) => (lease, false),
        None => (store.grant_lease(secs(r.grace)).await?, true),
    };
    let alive_lease = store.grant_lease(secs(r.ttl)).await?;
    let host = HostRecord {
        v: 1,
        name: r.node.clone(),
        vtep: r.vtep,
        registered_at: unix_now(),
        control: r.control.clone(),
    };
    let alive = AliveRecord { v: 1, name: r.node.clone(), vtep: r.vtep, started_at };
    let revision = store.register_host_with(&host, &alive, alive_lease, Some(reservation)).await?;
    store.set_reservation(reservation);
    let moved = if new { store.adopt_records(&r.node, reservation).await? } else { 0 };
    if moved > 0 {
        info!(records = moved, reservation, "moved this host's blocks and endpoints onto its reservation");
    }
    Ok(Leases { alive: alive_lease, reservation, revision })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// Renews both leases; returns when one of them is lost.
async fn keep(r: &Registration, leases: Leases, state: &mut StateRx) -> Lost {
    let period = (r.ttl / 3).max(Duration::from_millis(500));
    let reservation_period = (r.grace / 3).clamp(Duration::from_millis(500), Duration::from_secs(60));
    let mut next_reservation = Instant::now() + reservation_period;
    let mut failing = false;
    loop {
        let wait = if failing { RETRY } else { period };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            gone = alive_key_gone(state, &r.node, leases.revision) => if gone {
                return Lost::Alive;
            },
        }
        match r.store.keep_alive_once(leases.alive).await {
            Ok(0) => return Lost::Alive,
            Ok(_) => {
                r.metrics.etcd_ok();
                failing = false;
            }
            Err(e) => {
                r.metrics.etcd_error();
                if !failing {
                    warn!(error = %e, lease = leases.alive, "lease keep-alive failed; retrying");
                }
                failing = true;
                continue;
            }
        }
        if Instant::now() >= next_reservation {
            match r.store.keep_alive_once(leases.reservation).await {
                Ok(0) => return Lost::Reservation,
                Ok(_) => next_reservation = Instant::now() + reservation_period,
                Err(e) => {
                    r.metrics.etcd_error();
                    warn!(error = %e, lease = leases.reservation, "renewing the reservation failed; retrying");
                    failing = true;
                }
            }
        }
    }
}

/// Completes with `true` when a snapshot newer than our registration no
/// longer holds `alive/<node>` (lease revoked or key deleted by hand); never
/// completes otherwise.
async fn alive_key_gone(state: &mut StateRx, node: &str, registered_at: i64) -> bool {
    loop {
        if state.changed().await.is_err() {
            return std::future::pending().await;
        }
        let gone = state
            .borrow_and_update()
            .as_ref()
            .is_some_and(|s| s.state.revision > registered_at && !s.state.alive.contains_key(node));
        if gone {
            return true;
        }
    }
}
