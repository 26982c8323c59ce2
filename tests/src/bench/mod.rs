//! ovbench: what ovnet adds in time, memory and etcd traffic, measured in the lab.
//!
//! Each scenario builds its own [`Lab`](crate::Lab) (a real etcd, real agents,
//! hosts and containers as namespaces), drives it through `ovctl` or the
//! ipam-store API, and returns a [`Report`]: rows of percentiles, each with
//! the target where it has one. The design decision a reader must
//! know: nothing is observed by sleeping and looking again. Kernel changes are
//! seen through netlink multicast sockets opened inside each host namespace
//! ([`nlwatch`]) and reachability through a raw ICMP socket inside the
//! container ([`pinger`]), so every time is the moment the event arrived, not
//! the end of a polling interval.

pub mod attach;
pub mod common;
pub mod converge;
pub mod cost;
pub mod datapath;
pub mod docker;
pub mod etcdmetrics;
pub mod network;
pub mod nlwatch;
pub mod nsthread;
pub mod pinger;
pub mod procstat;
pub mod report;
pub mod scale;
pub mod scaleconnect;
pub mod seed;
pub mod stats;

pub use report::{Report, Row};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `connect` until the container pings its gateway, and `disconnect`.
    Attach,
    /// `connect` on one host until every other host holds the entries and can ping.
    Converge,
    /// `network create` until every host holds the bridge and VXLAN device.
    Network,
    /// One agent against 1,000 simulated hosts and 10,000 endpoints.
    Scale,
    /// etcd requests and bytes per connect and disconnect; watch streams per agent.
    Cost,
    /// iperf3 and ping, container to container against host to host.
    Datapath,
    /// `docker run` on ovnet against Docker's bridge; first cross-host reply.
    Docker,
    /// Every scenario, one after the other.
    All,
}

impl Scenario {
    /// Every single scenario, in the order `all` runs them.
    pub const EACH: [Scenario; 7] = [
        Scenario::Attach,
        Scenario::Converge,
        Scenario::Network,
        Scenario::Scale,
        Scenario::Cost,
        Scenario::Datapath,
        Scenario::Docker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Attach => "attach",
            Scenario::Converge => "converge",
            Scenario::Network => "network",
            Scenario::Scale => "scale",
            Scenario::Cost => "cost",
            Scenario::Datapath => "datapath",
            Scenario::Docker => "docker",
            Scenario::All => "all",
        }
    }
}

/// Runs one scenario (not `All`); `smoke` uses tiny counts and checks only
/// that the scenario works.
pub fn run(scenario: Scenario, smoke: bool) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let mut report = match scenario {
        Scenario::Attach => attach::run(smoke),
        Scenario::Converge => converge::run(smoke),
        Scenario::Network => network::run(smoke),
        Scenario::Scale => scale::run(smoke),
        Scenario::Cost => cost::run(smoke),
        Scenario::Datapath => datapath::run(smoke),
        Scenario::Docker => docker::run(smoke),
        Scenario::All => anyhow::bail!("`all` is a list of scenarios, not one"),
    }?;
    report.scenario = scenario.name().to_string();
    report.smoke = smoke;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
