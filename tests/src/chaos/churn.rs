//! The operations of a chaos run, on a thread of their own so that faults
//! land on calls in flight: containers connected, disconnected and dying,
//! networks created (also two at once under one name) and removed, `--ip`
//! of taken addresses. Each `ovctl` call is judged by the control-plane
//! rule against the [`World`] as it was for the whole call.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::check::{Call, Verdict, judge};
use super::schedule::{Op, Rng, ops};
use crate::netns::Netns;

/// What the fault thread tells the operations thread.
#[derive(Clone, Debug)]
pub struct World {
    /// Whether an etcd quorum is up, and a counter bumped on every change.
    pub quorum: bool,
    pub quorum_version: u64,
    /// Whether host `i`'s agent answers; a counter per host bumped on every fault there.
    pub up: Vec<bool>,
    pub host_version: Vec<u64>,
    /// Hosts gone for good.
    pub lost: Vec<bool>,
    /// The fault step in progress or last done.
    pub step: usize,
    /// Set by the fault thread for a quiescent point: no new operation starts.
    pub hold_ops: bool,
    /// Set by the operations thread while it holds.
    pub ops_idle: bool,
}

impl World {
    pub fn new(hosts: usize) -> World {
        World {
            quorum: true,
            quorum_version: 0,
            up: vec![true; hosts],
            host_version: vec![0; hosts],
            lost: vec![false; hosts],
            step: 0,
            hold_ops: false,
            ops_idle: false,
        }
    }
}

/// A container of the churn.
pub struct Container {
    pub ns: Netns,
    pub host: usize,
    pub net: String,
    pub ip: String,
}

/// How to reach the agents.
#[derive(Clone)]
pub struct Agents {
    pub sockets: Vec<PathBuf>,
    pub ovctl: PathBuf,
}

/// One judged call, for the tallies: (operation, outcome, violation).
pub type Outcome = (String, String, Option<String>);

impl Agents {
    /// Runs `ovctl ARGS` on host `i`, timed.
    pub fn call(&self, i: usize, args: &[&str]) -> (bool, Duration, String, String) {
        let start = Instant::now();
        let out = Command::new(&self.ovctl)
            .arg("-H")
            .arg(format!("unix://{}", self.sockets[i].display()))
            .args(["--timeout", "10"])
            .args(args)
            .output();
        let took = start.elapsed();
        match out {
            Ok(o) => (
                o.status.success(),
                took,
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            ),
            Err(e) => (false, took, String::new(), format!("running ovctl: {e}")),
        }
    }

    /// Runs and judges one call on host `i` against `world` before and after.
    pub fn judged(&self, world: &Mutex<World>, i: usize, op: &str, args: &[&str]) -> (Outcome, bool, String) {
        let before = snapshot(world);
        let (ok, took, stdout, stderr) = self.call(i, args);
        let after = snapshot(world);
        if before.host_version[i] != after.host_version[i] || !before.up[i] {
            let outcome = (op.to_string(), "disturbed by a fault on its host".to_string(), None);
            return (outcome, ok, stdout);
        }
        let quorum = (before.quorum_version == after.quorum_version).then_some(before.quorum);
        let verdict = judge(&Call { ok, took, stderr: stderr.clone(), quorum });
        let (outcome, violation) = match verdict {
            Verdict::Succeeded => ("succeeded", None),
            Verdict::OwnReason => ("failed for its own reason", None),
            Verdict::Unreachable => ("failed: etcd unreachable (no quorum)", None),
            Verdict::Violation(v) => {
                let at = format!("during step {}: `ovctl {}` on h{}", before.step, args.join(" "), i + 1);
                ("violation", Some(format!("{at}: {v}")))
            }
        };
        ((op.to_string(), outcome.to_string(), violation), ok, stdout)
    }
}

fn snapshot(world: &Mutex<World>) -> World {
    match world.lock() {
        Ok(w) => w.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// The operations thread's state.
pub struct Churn {
    pub agents: Agents,
    pub world: Arc<Mutex<World>>,
    pub lab_id: String,
    pub networks: Vec<String>,
    pub containers: Vec<Container>,
    pub outcomes: Vec<Outcome>,
    rng: Rng,
    made: u64,
}

impl Churn {
    pub fn new(agents: Agents, world: Arc<Mutex<World>>, lab_id: String, seed: u64) -> Churn {
        let rng = Rng::new(seed ^ 0x7069_636b);
        Churn {
            agents,
            world,
            lab_id,
            networks: Vec::new(),
            containers: Vec::new(),
            outcomes: Vec::new(),
            rng,
            made: 0,
        }
    }

    /// Runs operations until `stop` is set, a short pause between them.
    pub fn run(mut self, seed: u64, stop: Arc<AtomicBool>) -> Churn {
        for op in ops(seed) {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            self.hold_while_asked(&stop);
            self.one(op);
            std::thread::sleep(Duration::from_millis(self.rng.range(50, 300)));
        }
        self
    }

    /// Waits (saying so) while the fault thread wants a quiescent point.
    fn hold_while_asked(&self, stop: &AtomicBool) {
        loop {
            let hold = match self.world.lock() {
                Ok(mut w) => {
                    w.ops_idle = w.hold_ops;
                    w.hold_ops
                }
                Err(_) => false,
            };
            if !hold || stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn live_hosts(&self) -> Vec<usize> {
        let w = snapshot(&self.world);
        (0..w.up.len()).filter(|&i| w.up[i] && !w.lost[i]).collect()
    }

    fn pick_host(&mut self) -> Option<usize> {
        let live = self.live_hosts();
        (!live.is_empty()).then(|| live[self.rng.below(live.len())])
    }

    fn name(&mut self, what: &str) -> String {
        self.made += 1;
        format!("{what}{}", self.made)
    }

    fn one(&mut self, op: Op) {
        let op = match op {
            Op::Connect | Op::TakenIp if self.networks.is_empty() => Op::NetworkCreate,
            Op::Connect if self.containers.len() >= 12 => Op::Disconnect,
            Op::NetworkCreate | Op::RacingCreate if self.networks.len() >= 4 => Op::NetworkRemove,
            op => op,
        };
        let Some(host) = self.pick_host() else { return };
        match op {
            Op::Connect => self.connect(host),
            Op::Disconnect => self.disconnect(),
            Op::ContainerDies => self.container_dies(),
            Op::NetworkCreate => {
                let name = self.name("ch");
                let (o, ok, _) = self.agents.judged(
                    &self.world,
                    host,
                    op.name(),
                    &["network", "create", "-d", "overlay", &name],
                );
                self.outcomes.push(o);
                if ok {
                    self.networks.push(name);
                }
            }
            Op::NetworkRemove => self.network_rm(host),
            Op::RacingCreate => self.racing_create(),
            Op::TakenIp => self.taken_ip(),
        }
    }

    fn connect(&mut self, host: usize) {
        let net = self.networks[self.rng.below(self.networks.len())].clone();
        let name = self.name("x");
        let Ok(ns) = Netns::new(&format!("ovl{}-{name}", self.lab_id)) else { return };
        let (o, ok, ip) = self.agents.judged(
            &self.world,
            host,
            Op::Connect.name(),
            &["network", "connect", &net, &ns.name],
        );
        self.outcomes.push(o);
        if ok {
            self.containers.push(Container { ns, host, net, ip });
        }
    }

    /// A container whose host's agent answers, taken out of the list.
    fn take_container(&mut self) -> Option<Container> {
        let live = self.live_hosts();
        let candidates: Vec<usize> =
            (0..self.containers.len()).filter(|&i| live.contains(&self.containers[i].host)).collect();
        (!candidates.is_empty()).then(|| self.containers.remove(candidates[self.rng.below(candidates.len())]))
    }

    fn disconnect(&mut self) {
        let Some(c) = self.take_container() else { return };
        let (o, _, _) = self.agents.judged(
            &self.world,
            c.host,
            Op::Disconnect.name(),
            &["network", "disconnect", &c.net, &c.ns.name],
        );
        self.outcomes.push(o);
        // A failed disconnect may have been half done: the veth goes first
        // (on purpose, see `Endpoints::disconnect`), and the agent frees the
        // address of an endpoint without its veth once etcd answers. The
        // container's state is unknown then, so it is not used again (as a
        // holder in `taken_ip`, say): it dies, and the agent cleans up after
        // it (30-minute run: `connect --ip` of such an address succeeded and
        // was judged a double holding).
        drop(c);
    }

    fn container_dies(&mut self) {
        if let Some(c) = self.take_container() {
            drop(c.ns);
            self.outcomes.push((Op::ContainerDies.name().into(), "namespace deleted".into(), None));
        }
    }

    fn network_rm(&mut self, host: usize) {
        let unused: Vec<usize> = (0..self.networks.len())
            .filter(|&i| !self.containers.iter().any(|c| c.net == self.networks[i]))
            .collect();
        if unused.is_empty() {
            return;
        }
        let i = unused[self.rng.below(unused.len())];
        let net = self.networks[i].clone();
        let (o, ok, _) =
            self.agents.judged(&self.world, host, Op::NetworkRemove.name(), &["network", "rm", &net]);
        self.outcomes.push(o);
        if ok {
            self.networks.remove(i);
        }
    }

    fn racing_create(&mut self) {
        let live = self.live_hosts();
        if live.len() < 2 {
            return;
        }
        let a = live[self.rng.below(live.len())];
        let b = live[(live.iter().position(|&h| h == a).unwrap_or(0) + 1) % live.len()];
        let name = self.name("race");
        let (agents, world, theirs_name) = (self.agents.clone(), self.world.clone(), name.clone());
        let other = std::thread::spawn(move || {
            let args = ["network", "create", "-d", "overlay", theirs_name.as_str()];
            agents.judged(&world, b, Op::RacingCreate.name(), &args)
        });
        let args = ["network", "create", "-d", "overlay", name.as_str()];
        let mine = self.agents.judged(&self.world, a, Op::RacingCreate.name(), &args);
        let Ok(theirs) = other.join() else { return };
        if mine.1 && theirs.1 {
            let evidence = format!("`network create {name}` succeeded on both h{} and h{}", a + 1, b + 1);
            self.outcomes.push((Op::RacingCreate.name().into(), "violation".into(), Some(evidence)));
        }
        if mine.1 || theirs.1 {
            self.networks.push(name);
        }
        self.outcomes.push(mine.0);
        self.outcomes.push(theirs.0);
    }

    fn taken_ip(&mut self) {
        let Some(c) = self.take_container() else { return };
        let (net, ip) = (c.net.clone(), c.ip.clone());
        self.containers.push(c);
        let Some(host) = self.pick_host() else { return };
        let name = self.name("t");
        let Ok(ns) = Netns::new(&format!("ovl{}-{name}", self.lab_id)) else { return };
        let (mut o, ok, _) = self.agents.judged(
            &self.world,
            host,
            Op::TakenIp.name(),
            &["network", "connect", "--ip", &ip, &net, &ns.name],
        );
        if ok {
            o.1 = "violation".into();
            o.2 = Some(format!(
                "`connect --ip {ip}` in {net} on h{} succeeded: the address was held",
                host + 1
            ));
            self.containers.push(Container { ns, host, net, ip });
        }
        self.outcomes.push(o);
    }
}
