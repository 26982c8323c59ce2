//! The seeded schedule of a chaos run: which fault when, for how long, and
//! which operation comes next. Pure: the same seed gives the same schedule.
//!
//! Faults come one after another on a timeline (a fault, then a quiet gap in
//! which the cluster must converge, then the next); operations are drawn
//! from their own stream of the same seed and run all the time, so every
//! fault lands on operations in flight. The design decision: our own small
//! generator (SplitMix64) rather than a crate's, so a seed printed today
//! replays the same schedule after any dependency upgrade.

use std::time::Duration;

/// SplitMix64: tiny, fast and fixed forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// One fault, with what it hits and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the agent, start it again after `hold`.
    AgentKill { host: usize },
    /// SIGTERM the agent, start it again.
    AgentTerm { host: usize },
    /// SIGSTOP the agent past the lease TTL, then SIGCONT.
    AgentFreeze { host: usize },
    /// SIGKILL one etcd member, restart it after `hold`.
    MemberKill { member: usize },
    /// SIGKILL whichever member leads, restart it after `hold`.
    LeaderKill,
    /// SIGSTOP one etcd member, SIGCONT after `hold`.
    MemberFreeze { member: usize },
    /// Every etcd member killed for `hold` (up to 30 s), then restarted.
    Outage,
    /// The host's underlay link down and its agent killed past the TTL; back after `hold`.
    HostDeath { host: usize },
    /// Like `HostDeath`, but the host never returns; it is removed with `ovctl host rm`.
    HostLost { host: usize },
    /// Undecodable records written under the prefix, deleted after `hold`.
    BadRecords,
    /// dockerd of a Docker host stopped (SIGTERM, or SIGKILL as in a
    /// crash) and started again after `hold`; its `--restart always`
    /// container must come back on ovnet (`--runtimes`).
    DockerdRestart { host: usize, kill: bool },
    /// A Docker container removed with `docker rm -f` while its host's agent
    /// is killed; back, the agent's janitor must release the endpoint
    /// (`--runtimes`). `hold` is at least dockerd's retries of the plugin.
    DockerRmAgentDown { host: usize },
    /// `runs` podman containers started on the ovnet network through CNI,
    /// removed with `podman rm -f` after `hold` (`--runtimes`).
    PodmanChurn { host: usize, runs: usize },
}

impl Fault {
    /// The kind's name, for the tallies.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::AgentKill { .. } => "agent SIGKILL + restart",
            Fault::AgentTerm { .. } => "agent SIGTERM + restart",
            Fault::AgentFreeze { .. } => "agent SIGSTOP past the TTL",
            Fault::MemberKill { .. } => "etcd member kill + rejoin",
            Fault::LeaderKill => "etcd leader kill + rejoin",
            Fault::MemberFreeze { .. } => "etcd member SIGSTOP",
            Fault::Outage => "etcd whole-cluster outage",
            Fault::HostDeath { .. } => "host death past the TTL + return",
            Fault::HostLost { .. } => "host lost for good (host rm)",
            Fault::BadRecords => "bad records under the prefix",
            Fault::DockerdRestart { kill: false, .. } => "dockerd SIGTERM + start",
            Fault::DockerdRestart { kill: true, .. } => "dockerd SIGKILL + start",
            Fault::DockerRmAgentDown { .. } => "docker rm -f while the agent is down",
            Fault::PodmanChurn { .. } => "podman run + rm -f churn",
        }
    }

    /// Whether the fault needs the real runtimes of `--runtimes`.
    pub fn is_runtime(&self) -> bool {
        matches!(
            self,
            Fault::DockerdRestart { .. } | Fault::DockerRmAgentDown { .. } | Fault::PodmanChurn { .. }
        )
    }
}

/// One operation of the churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Connect,
    Disconnect,
    /// A container's namespace deleted without a disconnect.
    ContainerDies,
    NetworkCreate,
    NetworkRemove,
    /// The same name created on two hosts at once.
    RacingCreate,
    /// `connect --ip` of an address a live container holds.
    TakenIp,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "connect",
            Op::Disconnect => "disconnect",
            Op::ContainerDies => "container dies",
            Op::NetworkCreate => "network create",
            Op::NetworkRemove => "network rm",
            Op::RacingCreate => "racing creates",
            Op::TakenIp => "connect --ip taken",
        }
    }
}

/// A fault at `at` from the start, lasting `hold`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// What shapes a schedule.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub hosts: usize,
    pub members: usize,
    pub duration: Duration,
    pub lease_ttl: Duration,
    /// The longest whole-cluster outage.
    pub max_outage: Duration,
    /// Hosts `0..docker_hosts` run a dockerd (`--runtimes`; 0 without).
    pub docker_hosts: usize,
    /// The host that runs podman (`--runtimes`).
    pub podman_host: Option<usize>,
}

impl Shape {
    /// Where `--runtimes` puts the real runtimes (when `on`): a dockerd on
    /// the first two hosts, podman on the third.
    pub fn with_runtimes(self, on: bool) -> Shape {
        Shape {
            docker_hosts: if on { self.hosts.min(2) } else { 0 },
            podman_host: (on && self.hosts >= 3).then_some(2),
            ..self
        }
    }

    /// Whether host `h` runs a real runtime (such a host is never lost).
    pub fn has_runtime(&self, h: usize) -> bool {
        h < self.docker_hosts || self.podman_host == Some(h)
    }

    fn runtimes(&self) -> bool {
        self.docker_hosts > 0 || self.podman_host.is_some()
    }
}

/// How long `docker rm -f` of a container takes while the agent is down:
/// dockerd retries each plugin call for 30 s, and two calls go unanswered
/// (measured: 60.2 and 60.9 s).
pub const DOCKER_RM_WITHOUT_PLUGIN: Duration = Duration::from_secs(60);

/// The faults of a run. Host 0 is never lost (every run keeps a host to
/// drive from), nor is a host with a runtime; at most one host is lost, in
/// the second half of the run. Without runtimes in `shape` the schedule is
/// the one seeds gave before `--runtimes` existed; with them, the draws of
/// the plain faults stay and runtime faults are added.
pub fn faults(seed: u64, shape: Shape) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut at = Duration::from_secs(rng.range(3, 6));
    let mut lost: Option<usize> = None;
    let ttl_ms = shape.lease_ttl.as_millis() as u64;
    // The last 20 s are quiet: everything heals before the final checks.
    while at + Duration::from_secs(20) < shape.duration {
        let live: Vec<usize> = (0..shape.hosts).filter(|&h| Some(h) != lost).collect();
        let host = live[rng.below(live.len())];
        let member = rng.below(shape.members);
        let late = at > shape.duration / 2;
        let kinds = if shape.runtimes() { 16 } else { 11 };
        let (fault, hold_ms) = match rng.below(kinds) {
            0 => (Fault::AgentKill { host }, rng.range(200, 2000)),
            1 => (Fault::AgentTerm { host }, rng.range(200, 2000)),
            2 => (Fault::AgentFreeze { host }, ttl_ms + rng.range(1500, 4000)),
            3 => (Fault::MemberKill { member }, rng.range(1000, 8000)),
            4 | 5 => (Fault::LeaderKill, rng.range(500, 6000)),
            6 => (Fault::MemberFreeze { member }, rng.range(1000, 8000)),
            7 => (Fault::Outage, rng.range(2000, shape.max_outage.as_millis() as u64)),
            8 => (Fault::HostDeath { host }, ttl_ms + rng.range(1500, 5000)),
            9 if late && lost.is_none() && host != 0 && !shape.has_runtime(host) && shape.hosts > 2 => {
                lost = Some(host);
                (Fault::HostLost { host }, ttl_ms + 3000)
            }
            11 | 12 if shape.docker_hosts > 0 => {
                let host = rng.below(shape.docker_hosts);
                (Fault::DockerdRestart { host, kill: rng.below(2) == 1 }, rng.range(200, 3000))
            }
            13 | 14 if shape.podman_host.is_some() => {
                let host = shape.podman_host.unwrap_or_default();
                (Fault::PodmanChurn { host, runs: rng.range(1, 4) as usize }, rng.range(500, 3000))
            }
            15 if shape.docker_hosts > 0 => {
                let host = rng.below(shape.docker_hosts);
                let retry = DOCKER_RM_WITHOUT_PLUGIN.as_millis() as u64;
                (Fault::DockerRmAgentDown { host }, retry + rng.range(500, 3000))
            }
            _ => (Fault::BadRecords, rng.range(1000, 5000)),
        };
        let hold = Duration::from_millis(hold_ms);
        steps.push(Step { at, hold, fault });
        at += hold + Duration::from_millis(rng.range(4000, 9000));
    }
    steps
}

/// The operations' own stream of the seed.
pub fn ops(seed: u64) -> impl Iterator<Item = Op> {
    let mut rng = Rng::new(seed ^ 0x6f70_735f_7374_7265);
    std::iter::from_fn(move || {
        Some(match rng.below(14) {
            0..=3 => Op::Connect,
            4 | 5 => Op::Disconnect,
            6 => Op::ContainerDies,
            7 | 8 => Op::NetworkCreate,
            9 | 10 => Op::NetworkRemove,
            11 => Op::RacingCreate,
            _ => Op::TakenIp,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(secs: u64) -> Shape {
        Shape {
            hosts: 5,
            members: 3,
            duration: Duration::from_secs(secs),
            lease_ttl: Duration::from_secs(3),
            max_outage: Duration::from_secs(30),
            docker_hosts: 0,
            podman_host: None,
        }
    }

    #[test]
    fn without_runtimes_a_seed_gives_the_schedule_it_gave_before_them() {
        // Taken from the schedule code before `--runtimes` existed.
        let fingerprint = |seed| {
            let steps = faults(seed, shape(600));
            let sum: u128 = steps.iter().map(|s| s.at.as_millis() + s.hold.as_millis()).sum();
            let first: Vec<(u128, Fault)> =
                steps.iter().take(5).map(|s| (s.hold.as_millis(), s.fault.clone())).collect();
            (steps.len(), sum, first)
        };
        let (n, sum, first) = fingerprint(42);
        assert_eq!((n, sum), (52, 15_034_822));
        assert_eq!(
            first,
            vec![
                (1907, Fault::AgentTerm { host: 1 }),
                (1059, Fault::BadRecords),
                (797, Fault::LeaderKill),
                (2401, Fault::LeaderKill),
                (4592, Fault::HostDeath { host: 1 }),
            ]
        );
        let (n, sum, _) = fingerprint(7);
        assert_eq!((n, sum), (56, 16_339_522));
        assert!(faults(42, shape(600).with_runtimes(false)) == faults(42, shape(600)));
    }

    #[test]
    fn runtime_faults_come_only_with_runtimes_and_hit_only_their_hosts() {
        for seed in 0..100 {
            assert!(!faults(seed, shape(600)).iter().any(|s| s.fault.is_runtime()), "seed {seed}");
        }
        let mut kinds = std::collections::BTreeSet::new();
        for hosts in [3, 5] {
            let sh = Shape { hosts, ..shape(600) }.with_runtimes(true);
            assert_eq!((sh.docker_hosts, sh.podman_host), (2, Some(2)));
            for seed in 0..100 {
                let steps = faults(seed, sh);
                assert_eq!(steps, faults(seed, sh), "seed {seed} replays");
                for pair in steps.windows(2) {
                    assert!(pair[0].at + pair[0].hold < pair[1].at, "seed {seed}: {pair:?}");
                }
                for s in &steps {
                    kinds.insert(s.fault.kind());
                    match s.fault {
                        Fault::DockerdRestart { host, .. } => assert!(host < 2, "seed {seed}: {s:?}"),
                        Fault::DockerRmAgentDown { host } => {
                            assert!(host < 2, "seed {seed}: {s:?}");
                            assert!(s.hold >= DOCKER_RM_WITHOUT_PLUGIN);
                        }
                        Fault::PodmanChurn { host, runs } => {
                            assert_eq!(host, 2);
                            assert!((1..=4).contains(&runs));
                        }
                        Fault::HostLost { host } => assert!(host > 2, "seed {seed}: a runtime host lost"),
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(kinds.len(), 14, "{kinds:?}");
        // Two hosts: Docker on both, no podman; one host: Docker only there.
        let two = Shape { hosts: 2, ..shape(600) }.with_runtimes(true);
        assert_eq!((two.docker_hosts, two.podman_host), (2, None));
        assert!(!faults(1, two).iter().any(|s| matches!(s.fault, Fault::PodmanChurn { .. })));
        assert_eq!(Shape { hosts: 1, ..shape(600) }.with_runtimes(true).docker_hosts, 1);
    }

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_does_not() {
        assert_eq!(faults(42, shape(600)), faults(42, shape(600)));
        assert_ne!(faults(42, shape(600)), faults(43, shape(600)));
        let a: Vec<Op> = ops(7).take(100).collect();
        assert_eq!(a, ops(7).take(100).collect::<Vec<_>>());
        assert_ne!(a, ops(8).take(100).collect::<Vec<_>>());
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_quiet_tail() {
        for seed in 0..50 {
            let steps = faults(seed, shape(600));
            assert!(steps.len() > 20, "seed {seed}: only {} faults in 10 min", steps.len());
            for pair in steps.windows(2) {
                assert!(pair[0].at + pair[0].hold < pair[1].at, "seed {seed}: {pair:?}");
            }
            let last = steps.last().unwrap();
            assert!(last.at < Duration::from_secs(580));
            for s in &steps {
                if s.fault == Fault::Outage {
                    assert!(s.hold <= Duration::from_secs(30));
                }
            }
        }
    }

    #[test]
    fn at_most_one_host_is_lost_never_host_0_and_it_is_not_hit_again() {
        let mut seen_lost = 0;
        for seed in 0..200 {
            let steps = faults(seed, shape(600));
            let lost: Vec<usize> = steps
                .iter()
                .filter_map(|s| match s.fault {
                    Fault::HostLost { host } => Some(host),
                    _ => None,
                })
                .collect();
            assert!(lost.len() <= 1, "seed {seed}: {lost:?}");
            if let Some(&h) = lost.first() {
                seen_lost += 1;
                assert_ne!(h, 0);
                let i = steps.iter().position(|s| s.fault == Fault::HostLost { host: h }).unwrap();
                for s in &steps[i + 1..] {
                    let hit = match s.fault {
                        Fault::AgentKill { host }
                        | Fault::AgentTerm { host }
                        | Fault::AgentFreeze { host }
                        | Fault::HostDeath { host }
                        | Fault::HostLost { host } => host,
                        _ => usize::MAX,
                    };
                    assert_ne!(hit, h, "seed {seed}: the lost host is hit again");
                }
            }
        }
        assert!(seen_lost > 50, "a host is lost in only {seen_lost} of 200 runs");
    }

    #[test]
    fn every_kind_shows_up() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..20 {
            kinds.extend(faults(seed, shape(600)).iter().map(|s| s.fault.kind()));
        }
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        let ops: std::collections::BTreeSet<&str> = ops(1).take(500).map(Op::name).collect();
        assert_eq!(ops.len(), 7);
    }
}
