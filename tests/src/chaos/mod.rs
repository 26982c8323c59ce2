//! `ovchaos`: a seeded fault soak that checks every invariant as it goes
//! (issue #15).
//!
//! A lab of N hosts on a three-member etcd cluster; long-lived containers on
//! every host ping each other all-pairs at 10 ms; an operations thread churns
//! containers and networks through `ovctl`; the main thread applies faults
//! from a schedule drawn from one seed (agents killed, stopped and frozen,
//! etcd members killed and frozen, the leader killed, whole-cluster outages,
//! hosts dying and one lost for good, bad records; with `--runtimes` also
//! dockerd restarts, `docker rm -f` while the agent is down and podman
//! churn, see [`runtimes`]). The pure parts (the
//! schedule, the invariants over snapshots, the report) are unit-tested; the
//! runner only gathers evidence and asks them. The design decision: faults
//! follow each other on one timeline while operations overlap all of them,
//! so every fault has a quiet moment after it in which convergence is
//! checked, and the same seed replays the same faults and operations (their
//! timing against each other depends on the machine).

pub mod check;
pub mod churn;
pub mod finish;
pub mod inject;
pub mod pings;
pub mod report;
pub mod run;
pub mod runtimes;
pub mod schedule;
