//! The doctor (`ovctl doctor`): every difference between this host's kernel
//! and what etcd says it should hold, and whether the VXLAN port, the MTUs
//! and checksum offload are sane, and whether the firewall table isolates
//! the networks.
//!
//! The design decision: the doctor has no idea of "right" of its own. It
//! builds the desired state from a fresh etcd snapshot (not the loop's cached
//! copy) and the observed state from the dataplane, and explains
//! `plan(desired, observed)` op by op, which is exactly what the reconcile
//! loop would do next; to that it adds what the planner leaves alone (the
//! veths of local endpoints) and checks no record describes. [`diagnose`] is
//! pure and unit-tested; [`examine`] only gathers its inputs.

use std::net::Ipv4Addr;

use ovnet_ipam_store::{BadRecord, ClusterState, EtcdStore};

use crate::dataplane::{Dataplane, HostFacts, Underlay};
use crate::desired::{HostContext, desired};
use crate::error::AgentError;
use crate::model::{Desired, LinkKind, Observed};
use crate::netns::netns_path;

mod differences;
mod sanity;

/// `1 network`, `2 networks`: a count with its noun, singular or plural.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How bad a finding is. Only problems make `ovctl doctor` fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// A check that passed, said for the record.
    Ok,
    /// Something to look at that is not known to break the datapath.
    Warning,
    /// The kernel differs from etcd, or a setting is known to drop packets.
    Problem,
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    Link,
    Addr,
    Fdb,
    Neigh,
    Veth,
    Mtu,
    VxlanPort,
    Checksum,
    Etcd,
    Firewall,
}

impl Area {
    /// Every area, in the order `ovctl doctor --help` lists them (a test
    /// there checks each is named).
    pub const ALL: [Area; 10] = [
        Area::Link,
        Area::Addr,
        Area::Fdb,
        Area::Neigh,
        Area::Veth,
        Area::Mtu,
        Area::VxlanPort,
        Area::Checksum,
        Area::Firewall,
        Area::Etcd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Link => "link",
            Area::Addr => "addr",
            Area::Fdb => "fdb",
            Area::Neigh => "neigh",
            Area::Veth => "veth",
            Area::Mtu => "mtu",
            Area::VxlanPort => "vxlan-port",
            Area::Checksum => "checksum",
            Area::Etcd => "etcd",
            Area::Firewall => "firewall",
        }
    }
}

/// One line of the doctor's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub area: Area,
    pub message: String,
    /// The command that repairs it (for differences: what the agent runs).
    pub fix: Option<String>,
}

impl Finding {
    fn new(severity: Severity, area: Area, message: String) -> Self {
        Finding { severity, area, message, fix: None }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The doctor's answer for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub node: String,
    /// The etcd revision the desired state was built from.
    pub revision: i64,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == severity).count()
    }
}

/// A local endpoint as etcd records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub host_ifname: String,
    /// Whether the namespace file still exists.
    pub netns_exists: bool,
}

/// Everything `diagnose` looks at.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub revision: i64,
    pub desired: Desired,
    pub observed: Observed,
    pub endpoints: Vec<LocalEndpoint>,
    pub underlay: Underlay,
    /// The underlay MTU the agent plans with (read when it started).
    pub planned_underlay_mtu: u32,
    pub facts: HostFacts,
    pub bad_records: Vec<BadRecord>,
}

/// Every finding, in a stable order: etcd records, differences, veths, then
/// the MTU, VXLAN port and checksum checks.
pub fn diagnose(inp: &Inputs) -> Vec<Finding> {
    let mut out: Vec<Finding> = inp
        .bad_records
        .iter()
        .map(|b| Finding::new(Severity::Warning, Area::Etcd, format!("skipped invalid record: {b}")))
        .collect();
    let mtu_diffs = differences::kernel_vs_etcd(inp, &mut out);
    differences::veths(inp, &mut out);
    sanity::mtu(inp, &mtu_diffs, &mut out);
    sanity::vxlan_port(inp, &mut out);
    sanity::checksums(inp, &mut out);
    out
}

/// Reads a fresh snapshot from etcd and the kernel through `dp`, and diagnoses.
pub async fn examine<D: Dataplane>(
    store: &EtcdStore,
    dp: &D,
    me: &HostContext,
) -> Result<Report, AgentError> {
    let (revision, kvs) = store.snapshot().await?;
    let kvs = kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
    let (state, bad_records) = ClusterState::from_kvs(store.keys(), revision, kvs);
    let underlay = dp.underlay(Some(me.vtep)).await?;
    let observed = dp.observe().await?;
    let mut devices: Vec<String> = observed
        .links
        .values()
        .filter(|l| matches!(l.kind, LinkKind::Vxlan { .. }))
        .map(|l| l.name.clone())
        .collect();
    devices.push(underlay.ifname.clone());
    let facts = dp.facts(devices).await;
    let endpoints = state
        .all_endpoints()
        .filter(|e| e.host == me.node)
        .map(|e| LocalEndpoint {
            network: e.network.clone(),
            ip: e.ip,
            netns: e.netns.clone(),
            host_ifname: e.host_ifname.clone(),
            netns_exists: netns_path(&e.netns).exists(),
        })
        .collect();
    let inputs = Inputs {
        revision,
        desired: desired(&state, me),
        observed,
        endpoints,
        underlay,
        planned_underlay_mtu: me.underlay_mtu,
        facts,
        bad_records,
    };
    Ok(Report { node: me.node.clone(), revision, findings: diagnose(&inputs) })
}

#[cfg(test)]
mod tests;
