//! `--docker-sync`: keeps the local dockerd's `ovnet` networks equal to
//! ovnet's networks, so a network made on any host (with `ovctl` or with
//! `docker network create -d ovnet` there) shows in `docker network ls` here.
//!
//! The design decision: level-triggered, as the reconcile loop. etcd
//! snapshots, Docker events and a periodic tick only wake the loop; each
//! pass compares the whole of ovnet's networks with the whole of dockerd's
//! ([`plan`], pure) and creates or removes what differs, then lets the
//! [`janitor`](super::janitor) compare endpoints the same way. While dockerd
//! is down the loop retries with backoff and starts over with a full pass
//! when it is back, so a restart of either side loses nothing. A removal is
//! double-checked first: etcd is read again (the snapshot may be older than
//! a network this dockerd just created through the plugin) and Docker is
//! asked whether a container still uses the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use futures::StreamExt;
use ovnet_ipam_store::{ClusterState, EtcdStore, NetworkRecord};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::engine::{DRIVER, DockerNetwork, Engine};
use super::janitor::Janitor;
use crate::backoff::Backoff;
use crate::dataplane::Dataplane;
use crate::watch::StateRx;

/// How often a full pass runs when nothing woke the loop.
const RESYNC: Duration = Duration::from_secs(30);
/// How long a wake-up waits for more events before the pass.
const COALESCE: Duration = Duration::from_millis(200);
/// How soon a pass whose create or remove failed runs again.
const RETRY: Duration = Duration::from_secs(2);

/// What one pass changes in dockerd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorPlan {
    /// ovnet networks to create a docker network for.
    pub create: Vec<NetworkRecord>,
    /// `ovnet` docker networks whose ovnet network is gone (removed only
    /// when no container uses them and etcd confirms).
    pub remove: Vec<DockerNetwork>,
    /// ovnet networks whose name a docker network of another driver holds.
    pub conflicts: Vec<DockerNetwork>,
}

/// Compares ovnet's networks with dockerd's (all drivers).
pub fn plan(desired: &BTreeMap<String, NetworkRecord>, docker: &[DockerNetwork]) -> MirrorPlan {
    let mut p = MirrorPlan::default();
    for net in desired.values() {
        match docker.iter().find(|d| d.name == net.name) {
            None => p.create.push(net.clone()),
            Some(d) if d.driver != DRIVER => p.conflicts.push(d.clone()),
            Some(_) => {}
        }
    }
    p.remove =
        docker.iter().filter(|d| d.driver == DRIVER && !desired.contains_key(&d.ovnet)).cloned().collect();
    p
}

/// The networks host `node` mirrors: all but other hosts' bridge networks,
/// which cannot be used here.
pub fn usable_here(
    networks: &BTreeMap<String, NetworkRecord>,
    node: &str,
) -> BTreeMap<String, NetworkRecord> {
    networks.iter().filter(|(_, n)| n.usable_on(node)).map(|(k, n)| (k.clone(), n.clone())).collect()
}

/// The Docker side of the agent: the mirror (when `mirror`) and the janitor.
pub struct DockerSync<D: Dataplane> {
    pub socket: PathBuf,
    pub store: EtcdStore,
    pub state: StateRx,
    /// Keep dockerd's networks equal to ovnet's (`--docker-sync`).
    pub mirror: bool,
    pub janitor: Janitor<D>,
}

impl<D: Dataplane> DockerSync<D> {
    /// Runs until the task is dropped: connects, follows, reconnects.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut said_down = false;
        loop {
            match Engine::connect(&self.socket).await {
                Ok(engine) => {
                    info!(socket = %self.socket.display(), api = %engine.api_version(), "connected to dockerd");
                    said_down = false;
                    match self.follow(&engine, &mut backoff).await {
                        Ok(()) => info!("dockerd's event stream ended; reconnecting"),
                        Err(e) => warn!(error = %e, "talking to dockerd failed; reconnecting"),
                    }
                }
                Err(e) if !said_down => {
                    said_down = true;
                    warn!(socket = %self.socket.display(), error = %e, "dockerd is not reachable; retrying");
                }
                Err(e) => debug!(error = %e, "dockerd still not reachable"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection's life: a pass now, then one after every wake-up,
    /// until dockerd's event stream ends.
    async fn follow(&mut self, engine: &Engine, backoff: &mut Backoff) -> Result<(), DockerError> {
        let (tx, mut events) = mpsc::channel(256);
        let stream = engine.events();
        let _forward = AbortOnDrop(tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let end = ev.is_err();
                if tx.send(ev).await.is_err() || end {
                    break;
                }
            }
        }));
        let mut last: Option<Arc<ClusterState>> = None;
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut full = true;
        let mut recheck: Option<tokio::time::Instant> = None;
        loop {
            let state = self.state.borrow_and_update().as_ref().map(|s| s.state.clone());
            if let Some(state) = state
                && (full || last.as_ref().is_none_or(|l| self.matters(l, &state)))
            {
                recheck = self.pass(engine, &state).await?.map(|d| tokio::time::Instant::now() + d);
                backoff.reset();
                last = Some(state);
            }
            let until = recheck.unwrap_or_else(|| tokio::time::Instant::now() + RESYNC);
            full = tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => { debug!(?ev, "docker event"); true }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                changed = self.state.changed() => match changed {
                    Ok(()) => false,
                    Err(_) => return Ok(()),
                },
                _ = tick.tick() => true,
                _ = tokio::time::sleep_until(until), if recheck.is_some() => true,
            };
            // A `docker run` is a burst of events and etcd changes: let it
            // settle, so one pass covers it and none competes with it.
            tokio::time::sleep(COALESCE).await;
            while let Ok(ev) = events.try_recv() {
                ev?;
                full = true;
            }
        }
    }

    /// True when an etcd change between two snapshots can change a pass:
    /// the networks. Changes of this host's Docker endpoint records do not
    /// wake the loop: the plugin writes them in the middle of a `docker run`,
    /// and the container's start, death or removal wakes it anyway.
    fn matters(&self, before: &ClusterState, now: &ClusterState) -> bool {
        self.mirror && before.networks != now.networks
    }

    /// Mirrors the networks (when on), then lets the janitor judge
    /// endpoints; returns how soon the janitor wants another pass.
    async fn pass(&self, engine: &Engine, state: &ClusterState) -> Result<Option<Duration>, DockerError> {
        let mut failed = false;
        let docker = engine.networks().await?;
        if self.mirror {
            let p = plan(&usable_here(&state.networks, &self.janitor.endpoints.host().node), &docker);
            failed = !self.apply(engine, p).await?;
        }
        let host = &self.janitor.endpoints.host().node;
        if let Err(e) = super::stale::forget(&self.janitor.store, host, &docker).await {
            warn!(error = %e, "forgetting stale docker network mappings failed; will retry");
            failed = true;
        }
        let recheck = self.janitor.pass(engine, state).await?;
        Ok(if failed { Some(recheck.map_or(RETRY, |r| r.min(RETRY))) } else { recheck })
    }

    /// Creates and removes what `p` says; false when something failed (the
    /// plugin may not be up yet: dockerd answers "plugin not found").
    async fn apply(&self, engine: &Engine, p: MirrorPlan) -> Result<bool, DockerError> {
        let mut ok = true;
        for d in &p.conflicts {
            debug!(network = %d.name, driver = %d.driver, "a docker network of another driver has the name of an ovnet network; not mirrored");
        }
        for net in &p.create {
            match engine.create_network(net).await {
                Ok(Some(id)) => {
                    info!(network = %net.name, subnet = %net.subnet, docker_id = %id, "docker network created")
                }
                Ok(None) => debug!(network = %net.name, "a docker network of that name appeared meanwhile"),
                Err(e) => {
                    ok = false;
                    warn!(network = %net.name, error = %e, "creating the docker network failed; will retry")
                }
            }
        }
        for d in &p.remove {
            ok &= self.remove(engine, d).await?;
        }
        Ok(ok)
    }

    /// Removes a docker network whose ovnet network is gone, unless a
    /// container still uses it or etcd has the network after all; false
    /// when that could not be decided or done.
    async fn remove(&self, engine: &Engine, d: &DockerNetwork) -> Result<bool, DockerError> {
        match self.store.get_network(&d.ovnet).await {
            Err(ovnet_ipam_store::Error::NetworkNotFound(_)) => {}
            Ok(_) => return Ok(true),
            Err(e) => {
                warn!(network = %d.ovnet, error = %e, "cannot confirm the network is gone from etcd; keeping its docker network");
                return Ok(false);
            }
        }
        if engine.network_in_use(d).await? {
            debug!(network = %d.name, "ovnet network gone but containers use its docker network; kept");
            return Ok(true);
        }
        match engine.remove_network(&d.id).await {
            Ok(()) => info!(network = %d.name, "docker network removed: its ovnet network is gone"),
            Err(e) if super::engine::not_found(&e) => {}
            Err(e) => {
                warn!(network = %d.name, error = %e, "removing the docker network failed; will retry");
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> NetworkRecord {
        NetworkRecord {
            v: 1,
            id: format!("{name}-id"),
            name: name.into(),
            driver: ovnet_ipam_store::Driver::Overlay,
            host: None,
            subnet: subnet.parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            vni: 4096,
            mtu: 1450,
            block_prefix: 26,
            created_at: 0,
            internal: false,
        }
    }

    fn docker(name: &str, driver: &str, ovnet: &str) -> DockerNetwork {
        DockerNetwork {
            id: format!("{name}-did"),
            name: name.into(),
            driver: driver.into(),
            ovnet: ovnet.into(),
        }
    }

    fn desired(nets: &[NetworkRecord]) -> BTreeMap<String, NetworkRecord> {
        nets.iter().map(|n| (n.name.clone(), n.clone())).collect()
    }

    #[test]
    fn creates_what_docker_lacks_and_removes_what_ovnet_lost() {
        let want = desired(&[net("demo", "10.1.0.0/16"), net("db", "10.2.0.0/16")]);
        let have = [
            docker("bridge", "bridge", "bridge"),
            docker("host", "host", "host"),
            docker("demo", DRIVER, "demo"),
            docker("old", DRIVER, "old"),
        ];
        let p = plan(&want, &have);
        assert_eq!(p.create.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["db"]);
        assert_eq!(p.remove.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["old"]);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn another_hosts_bridge_network_is_not_mirrored() {
        let mut lan = net("lan", "10.1.0.0/16");
        (lan.driver, lan.host) = (ovnet_ipam_store::Driver::Bridge, Some("h1".into()));
        let all = desired(&[net("wan", "10.2.0.0/16"), lan]);
        assert_eq!(usable_here(&all, "h1").len(), 2);
        let h2 = usable_here(&all, "h2");
        assert_eq!(h2.keys().collect::<Vec<_>>(), ["wan"]);
        assert_eq!(plan(&h2, &[]).create.len(), 1, "only wan is created on h2");
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let want = desired(&[net("demo", "10.1.0.0/16")]);
        assert_eq!(plan(&want, &[docker("demo", DRIVER, "demo")]), MirrorPlan::default());
        assert_eq!(plan(&BTreeMap::new(), &[docker("bridge", "bridge", "bridge")]), MirrorPlan::default());
    }

    #[test]
    fn a_view_under_another_name_counts_for_its_ovnet_network() {
        // `docker network create -d ovnet -o network=demo mydemo`: not
        // removed while demo exists; demo itself is still mirrored by name.
        let want = desired(&[net("demo", "10.1.0.0/16")]);
        let p = plan(&want, &[docker("mydemo", DRIVER, "demo")]);
        assert!(p.remove.is_empty());
        assert_eq!(p.create.len(), 1);
        let gone = plan(&BTreeMap::new(), &[docker("mydemo", DRIVER, "demo")]);
        assert_eq!(gone.remove.len(), 1);
    }

    #[test]
    fn a_name_held_by_another_driver_is_a_conflict_not_a_create() {
        let want = desired(&[net("demo", "10.1.0.0/16")]);
        let p = plan(&want, &[docker("demo", "bridge", "demo")]);
        assert!(p.create.is_empty() && p.remove.is_empty());
        assert_eq!(p.conflicts.len(), 1);
    }
}
