//! The chaos run itself: a lab, long-lived containers pinging all pairs, the
//! operations thread, and the fault timeline; invariants checked after every
//! fault (convergence), every few seconds (allocation, agent exits, panics)
//! and at the end (datapath loss, leaks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::check::{DeadWindow, Loss, allocation, excused, state_of};
use super::churn::{Agents, Churn, World};
use super::inject::{Applied, apply, heal};
use super::pings::Stream;
use super::report::{Summary, Violation};
use super::runtimes::Runtimes;
use super::schedule::{Fault, Shape, Step, faults};
use crate::lab::{AgentOptions, Lab, LabOptions, bin_dir, poll};
use crate::netns::Netns;

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub hosts: usize,
    pub duration: Duration,
    pub lease_ttl: u64,
    pub max_outage: Duration,
    /// How soon after a fault heals the cluster must be converged.
    pub converge: Duration,
    pub machine: String,
    /// Real runtimes too (dockerd on two hosts, podman on a third) and their faults.
    pub runtimes: bool,
}

impl Options {
    /// What shapes the schedule.
    pub fn shape(&self) -> Shape {
        Shape {
            hosts: self.hosts,
            members: 3,
            duration: self.duration,
            lease_ttl: Duration::from_secs(self.lease_ttl),
            max_outage: self.max_outage,
            docker_hosts: 0,
            podman_host: None,
        }
        .with_runtimes(self.runtimes)
    }
}

/// The state of a run in progress.
struct Run {
    opts: Options,
    /// Before `lab`: dropped first, while the agents still answer.
    rt: Option<Runtimes>,
    lab: Lab,
    world: Arc<Mutex<World>>,
    t0: Instant,
    streams: Vec<Stream>,
    base: Vec<(Netns, String)>,
    dead: Vec<DeadWindow>,
    summary: Summary,
    panics: u64,
    frozen_member: bool,
    /// The runtimes' directory, after `lab`: the agents write there until they go.
    _rt_dir: Option<tempfile::TempDir>,
}

impl Run {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn step(&self) -> usize {
        self.world.lock().map(|w| w.step).unwrap_or(0)
    }

    fn violation(&mut self, invariant: &str, evidence: String) {
        let v = Violation {
            seed: self.opts.seed,
            step: self.step(),
            at: self.now(),
            invariant: invariant.into(),
            evidence,
        };
        eprintln!(
            "VIOLATION seed {} step {} at {:.1} s [{}]: {}",
            v.seed, v.step, v.at, v.invariant, v.evidence
        );
        self.summary.violations.push(v);
    }

    fn live(&self) -> Vec<usize> {
        let w = self.world.lock().map(|w| w.clone()).unwrap_or_else(|_| World::new(0));
        (0..w.up.len()).filter(|&i| w.up[i] && !w.lost[i]).collect()
    }

    /// Everything under the prefix, read through any member (a few tries).
    fn dump(&self) -> Option<BTreeMap<String, String>> {
        let prefix = self.lab.prefix.clone();
        (0..2).find_map(|_| {
            let prefix = prefix.clone();
            self.lab
                .with_etcd(move |mut c| async move {
                    let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
                    let mut out = BTreeMap::new();
                    for kv in resp.kvs() {
                        out.insert(
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                        );
                    }
                    Ok(out)
                })
                .ok()
        })
    }

    /// Allocation, agent exits and panics: the checks made at every step.
    fn check_step(&mut self) {
        let quorum = self.world.lock().map(|w| w.quorum).unwrap_or(false);
        // The lab's own client balances at random: skip while a member is frozen.
        if quorum
            && !self.frozen_member
            && let Some(dump) = self.dump()
        {
            self.summary.checked("allocation (no double holding, blocks of the endpoint's host)", 1);
            for v in allocation(&state_of(&self.lab.prefix, &dump)) {
                self.violation("allocation", v);
            }
        }
        let w = self.world.lock().map(|w| w.clone()).unwrap_or_else(|_| World::new(0));
        for i in 0..self.lab.hosts.len() {
            // Only a running agent can exit unexpectedly (a lost or killed one is None).
            if w.up[i] && !w.lost[i] {
                self.summary.checked("no agent exit but the injected ones", 1);
                if let Some(status) = self.lab.agent_exit(i) {
                    self.violation("agent exit", format!("h{}'s agent exited by itself: {status}", i + 1));
                    let _ = self.lab.start_agent(i);
                }
            }
        }
        self.summary.checked("no panic", 1);
        let panics = self.lab.panics();
        if panics > self.panics {
            self.violation("no panic", format!("{} new panic(s) in the agents' logs", panics - self.panics));
            self.panics = panics;
        }
    }

    /// After a fault healed: within `converge`, every live host's doctor is
    /// clean and every pair of live hosts has pinged since.
    fn check_converged(&mut self, healed_at: f64, what: &str) {
        self.summary.checked("convergence (doctor clean, all pairs ping) within the budget", 1);
        self.quiesce(true);
        self.converged(healed_at, what);
        self.runtime_pings(healed_at, what);
        self.quiesce(false);
    }

    /// The runtimes' long-lived containers on live hosts reach every live
    /// host's base container and each other by the convergence deadline.
    fn runtime_pings(&mut self, healed_at: f64, what: &str) {
        let Some(rt) = &self.rt else { return };
        let base: Vec<(usize, String)> = self.base.iter().map(|(_, ip)| ip.clone()).enumerate().collect();
        let deadline = self.t0 + Duration::from_secs_f64(healed_at) + self.opts.converge;
        let left = rt.unanswered(&self.live(), &base, deadline);
        self.summary.checked("runtime containers reach every live host after each heal", 1);
        if !left.is_empty() {
            let budget = self.opts.converge;
            self.violation("convergence", format!("after {what}, no reply within {budget:?}: {left:?}"));
        }
    }

    /// Holds the operations (waiting for the one in flight) or lets them go.
    fn quiesce(&self, hold: bool) {
        if let Ok(mut w) = self.world.lock() {
            w.hold_ops = hold;
        }
        if hold {
            let idle = || self.world.lock().map(|w| w.ops_idle).unwrap_or(true).then_some(());
            let _ = poll("the operation in flight to end", Duration::from_secs(30), idle);
        }
    }

    fn converged(&mut self, healed_at: f64, what: &str) {
        let live = self.live();
        let budget = self.opts.converge;
        let mut last;
        let start = Instant::now();
        loop {
            let stale: Vec<String> = self
                .streams
                .iter()
                .filter(|s| live.contains(&s.from_host) && live.contains(&s.to_host))
                .filter(|s| s.seen().last_at <= healed_at)
                .map(|s| format!("h{}->h{}", s.from_host + 1, s.to_host + 1))
                .collect();
            let sick: Vec<String> = doctors(&self.lab, &live);
            if stale.is_empty() && sick.is_empty() {
                return;
            }
            last = format!("no ping since the heal: {stale:?}; doctor: {sick:?}");
            if start.elapsed() > budget {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.violation("convergence", format!("after {what}, not converged within {budget:?}: {last}"));
    }
}

/// `ovctl doctor` on every host of `live` at once; the unhealthy ones.
fn doctors(lab: &Lab, live: &[usize]) -> Vec<String> {
    let ovctl = bin_dir().join("ovctl");
    let children: Vec<_> = live
        .iter()
        .map(|&i| {
            let child = std::process::Command::new(&ovctl)
                .arg("-H")
                .arg(format!("unix://{}", lab.hosts[i].socket.display()))
                .args(["--timeout", "5", "doctor"])
                .output();
            (i, child)
        })
        .collect();
    children
        .into_iter()
        .filter_map(|(i, out)| match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "h{}: {} {}",
                i + 1,
                String::from_utf8_lossy(&o.stderr).trim(),
                String::from_utf8_lossy(&o.stdout).trim().replace('\n', " | ")
            )),
            Err(e) => Some(format!("h{}: {e}", i + 1)),
        })
        .collect()
}

/// Builds the lab, the long-lived containers and their pings.
fn setup(opts: &Options) -> anyhow::Result<Run> {
    let lab_opts = LabOptions { hosts: opts.hosts, lease_ttl: opts.lease_ttl, etcd_members: 3 };
    let mut agents = AgentOptions { resync_interval: Some(5), ..Default::default() };
    let rt_dir = if opts.runtimes {
        let (dir, args) = super::runtimes::prepare()?;
        agents.extra_args = args;
        Some(dir)
    } else {
        None
    };
    let mut lab = Lab::start_with(lab_opts, agents)?;
    let mut rt = match &rt_dir {
        Some(dir) => Some(Runtimes::start(&mut lab, opts.shape(), dir.path())?),
        None => None,
    };
    lab.ctl(0, "network create -d overlay base")?;
    let mut base = Vec::new();
    for i in 0..opts.hosts {
        let ns = Netns::new(&format!("ovl{}-b{}", lab.id, i + 1))?;
        let ip = lab.ovctl_ok(i, &["network", "connect", "base", &ns.name])?;
        base.push((ns, ip));
    }
    for (a, (ns, _)) in base.iter().enumerate() {
        for (b, (_, ip)) in base.iter().enumerate() {
            if a != b {
                poll(&format!("h{} to ping h{}", a + 1, b + 1), Duration::from_secs(20), || {
                    crate::netns::ping(&ns.name, ip).then_some(())
                })?;
            }
        }
    }
    if let Some(rt) = &mut rt {
        rt.keep(&lab)?;
        let ips: Vec<(usize, String)> = base.iter().map(|(_, ip)| ip.clone()).enumerate().collect();
        let all: Vec<usize> = (0..opts.hosts).collect();
        let left = rt.unanswered(&all, &ips, Instant::now() + Duration::from_secs(20));
        anyhow::ensure!(left.is_empty(), "runtime containers do not reach: {left:?}");
    }
    let t0 = Instant::now();
    let mut streams = Vec::new();
    for (a, (ns, _)) in base.iter().enumerate() {
        for (b, (_, ip)) in base.iter().enumerate() {
            if a != b {
                streams.push(Stream::start(&ns.name, ip, a, b, t0)?);
            }
        }
    }
    let world = Arc::new(Mutex::new(World::new(opts.hosts)));
    let summary = Summary {
        seed: opts.seed,
        hosts: opts.hosts,
        etcd_members: 3,
        planned_secs: opts.duration.as_secs(),
        machine: opts.machine.clone(),
        runtimes: opts.runtimes,
        ..Default::default()
    };
    Ok(Run {
        opts: opts.clone(),
        rt,
        lab,
        world,
        t0,
        streams,
        base,
        dead: Vec::new(),
        summary,
        panics: 0,
        frozen_member: false,
        _rt_dir: rt_dir,
    })
}

/// Runs the whole soak; the summary holds every violation found.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let mut run = setup(opts)?;
    let steps = faults(opts.seed, opts.shape());
    let agents = Agents {
        sockets: run.lab.hosts.iter().map(|h| h.socket.clone()).collect(),
        ovctl: bin_dir().join("ovctl"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let churn = Churn::new(agents, run.world.clone(), run.lab.id.clone(), opts.seed);
    let (seed, flag) = (opts.seed, stop.clone());
    let worker = std::thread::spawn(move || churn.run(seed, flag));
    let result = timeline(&mut run, &steps);
    stop.store(true, Ordering::SeqCst);
    let churn = worker.join().map_err(|_| anyhow::anyhow!("the operations thread panicked"))?;
    if let Err(e) = result {
        // A fault that cannot be applied or healed ends the run, reported.
        run.violation("runner", format!("{e:#}"));
        run.summary.ran_secs = run.now();
        return Ok(run.summary);
    }
    super::finish::finish(&mut run_parts(&mut run), churn)?;
    run.summary.ran_secs = run.now();
    Ok(run.summary)
}

/// The pieces `finish` works on.
fn run_parts(run: &mut Run) -> super::finish::Parts<'_> {
    super::finish::Parts {
        lab: &mut run.lab,
        rt: run.rt.as_mut(),
        world: &run.world,
        streams: &mut run.streams,
        base: &mut run.base,
        dead: &run.dead,
        summary: &mut run.summary,
        seed: run.opts.seed,
        t0: run.t0,
    }
}

/// Applies the faults at their times, checking as it goes.
fn timeline(run: &mut Run, steps: &[Step]) -> anyhow::Result<()> {
    for (n, step) in steps.iter().enumerate() {
        while run.t0.elapsed() < step.at {
            run.check_step();
            std::thread::sleep(Duration::from_millis(500).min(step.at.saturating_sub(run.t0.elapsed())));
        }
        if let Ok(mut w) = run.world.lock() {
            w.step = n + 1;
        }
        eprintln!(
            "[{:7.1} s] step {}: {} ({:?}, {:.1} s)",
            run.now(),
            n + 1,
            step.fault.kind(),
            step.fault,
            step.hold.as_secs_f64()
        );
        run.summary.fault(step.fault.kind());
        let started = run.now();
        run.frozen_member = matches!(step.fault, Fault::MemberFreeze { .. });
        let applied = apply_any(run, &step.fault).with_context(|| format!("applying {:?}", step.fault))?;
        let until = Instant::now() + step.hold;
        while Instant::now() < until {
            run.check_step();
            std::thread::sleep(
                Duration::from_millis(500).min(until.saturating_duration_since(Instant::now())),
            );
        }
        heal_any(run, applied).with_context(|| format!("healing {:?}", step.fault))?;
        run.frozen_member = false;
        let healed = run.now();
        if let Fault::AgentFreeze { host }
        | Fault::HostDeath { host }
        | Fault::HostLost { host }
        | Fault::DockerRmAgentDown { host } = step.fault
        {
            let end = if matches!(step.fault, Fault::HostLost { .. }) {
                f64::MAX
            } else {
                healed + run.opts.converge.as_secs_f64()
            };
            run.dead.push(DeadWindow { host, start: started, end });
        }
        run.check_converged(healed, step.fault.kind());
        run.check_step();
    }
    while run.t0.elapsed() < run.opts.duration {
        run.check_step();
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// A fault applied by `inject` or by the runtimes.
enum AnyApplied {
    Plain(Applied),
    Runtime(super::runtimes::RtApplied),
}

fn apply_any(run: &mut Run, fault: &Fault) -> anyhow::Result<AnyApplied> {
    if !fault.is_runtime() {
        return Ok(AnyApplied::Plain(apply(&mut run.lab, &run.world, fault)?));
    }
    let rt = run.rt.as_mut().context("a runtime fault in a run without --runtimes")?;
    Ok(AnyApplied::Runtime(rt.apply(&mut run.lab, &run.world, fault)?))
}

/// Heals what `apply_any` did; the runtimes' findings become violations.
fn heal_any(run: &mut Run, applied: AnyApplied) -> anyhow::Result<()> {
    match applied {
        AnyApplied::Plain(a) => heal(&mut run.lab, &run.world, &a, 0),
        AnyApplied::Runtime(a) => {
            let check = match a.fault() {
                Fault::DockerdRestart { .. } => {
                    "a --restart always container back on ovnet after dockerd starts"
                }
                _ => "runtime containers' endpoints released after rm (etcd record, veth)",
            };
            run.summary.checked(check, 1);
            let rt = run.rt.as_mut().context("a runtime fault in a run without --runtimes")?;
            for (invariant, evidence) in rt.heal(&mut run.lab, &run.world, a)? {
                run.violation(&invariant, evidence);
            }
            Ok(())
        }
    }
}

/// Losses of every stream, sorted into excused and violations.
pub(crate) fn tally_losses(streams: &[Stream], dead: &[DeadWindow], stopped: f64) -> (u64, u64, Vec<String>) {
    let (mut sent, mut excused_n, mut bad) = (0, 0, Vec::new());
    for s in streams {
        let seen = s.seen();
        // Unanswered since the last reply (toward a lost host): a loss too.
        let tail = ((stopped - seen.last_at) / 0.01) as u64;
        let mut losses = seen.losses.clone();
        if tail > 50 {
            losses.push(Loss {
                from_host: s.from_host,
                to_host: s.to_host,
                lost: tail,
                start: seen.last_at,
                end: stopped,
            });
        }
        sent += seen.last_seq + if tail > 50 { tail } else { 0 };
        for loss in &losses {
            if excused(loss, dead) {
                excused_n += loss.lost;
            } else {
                bad.push(format!(
                    "h{}->h{}: {} pings lost between {:.2} s and {:.2} s",
                    loss.from_host + 1,
                    loss.to_host + 1,
                    loss.lost,
                    loss.start,
                    loss.end
                ));
            }
        }
    }
    (sent, excused_n, bad)
}
