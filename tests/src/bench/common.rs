//! What the scenarios share: starting a lab, making a network and container
//! namespaces, and the addresses the agent derives.
//!
//! Containers made here are [`Netns`] values the scenario owns (dropping one
//! deletes the namespace and so its veth), rather than the lab's own list, so
//! a 200-operation run does not keep 200 namespaces alive.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::nlwatch::{Entry, Event, Monitor};
use super::nsthread::{in_netns, ns_path};
use crate::netns::Netns;
use crate::{Lab, LabOptions};

/// How long any single awaited change may take before the scenario fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A network as `ovctl network inspect` shows it.
#[derive(Clone, Debug)]
pub struct Net {
    pub name: String,
    pub vni: u32,
    pub gateway: Ipv4Addr,
}

impl Net {
    /// The bridge and VXLAN device every host holds for this network.
    pub fn devices(&self) -> [String; 2] {
        [format!("ovbr{}", self.vni), format!("ovvx{}", self.vni)]
    }
}

/// A lab of `hosts` hosts with the default lease TTL.
pub fn lab(hosts: usize) -> anyhow::Result<Lab> {
    Lab::start(LabOptions { hosts, ..Default::default() }).context("starting the lab")
}

/// `network inspect NAME` on host 0.
pub fn inspect(lab: &Lab, name: &str) -> anyhow::Result<Net> {
    let v: serde_json::Value = serde_json::from_str(&lab.ctl(0, &format!("network inspect {name}"))?)?;
    let vni = v["vni"].as_u64().context("inspect shows no vni")?;
    let gateway = v["gateway"].as_str().context("inspect shows no gateway")?;
    Ok(Net { name: name.to_string(), vni: u32::try_from(vni)?, gateway: gateway.parse()? })
}

/// Creates overlay network `name` on host 0 and waits until every host has it.
pub fn network(lab: &Lab, name: &str) -> anyhow::Result<Net> {
    lab.create_network(0, &format!("-d overlay {name}"))?;
    inspect(lab, name)
}

/// A new, unconnected container namespace, deleted when dropped.
pub fn container(lab: &Lab, tag: &str) -> anyhow::Result<Netns> {
    Netns::new(&format!("ovl{}-{tag}", lab.id))
}

/// `ovctl network connect NETWORK NS` on host `i`; the address it printed.
pub fn connect(lab: &Lab, i: usize, network: &str, ns: &str) -> anyhow::Result<Ipv4Addr> {
    let out = lab.ovctl_ok(i, &["network", "connect", network, ns])?;
    out.parse().with_context(|| format!("connect printed {out:?}, not an address"))
}

/// The namespace file of host `i`.
pub fn host_path(lab: &Lab, i: usize) -> PathBuf {
    ns_path(&lab.hosts[i].ns.name)
}

/// The MAC the agent gives the endpoint with address `ip`: `02:42:<ip>`.
pub fn endpoint_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Makes the container's ARP retry after 10 ms instead of 1 s, so a ping
/// sent a moment before the remote entries exist shows when they appeared
/// rather than when the kernel's ARP timer fired.
pub fn fast_arp(ns: &str) -> anyhow::Result<()> {
    in_netns(&ns_path(ns), || {
        std::fs::write("/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms", "10")
            .context("setting retrans_time_ms")
    })
}

/// The agent's PID on host `i`.
pub fn agent_pid(lab: &Lab, i: usize) -> anyhow::Result<u32> {
    lab.hosts[i].agent_pid().with_context(|| format!("{} has no agent running", lab.hosts[i].name))
}

/// When both the FDB entry (the endpoint's MAC behind `vtep`) and the
/// neighbour entry of endpoint `ip` had arrived at monitor `m`.
pub fn programmed(
    m: &mut Monitor,
    deadline: Instant,
    ip: Ipv4Addr,
    vtep: Ipv4Addr,
) -> anyhow::Result<Instant> {
    let mac = endpoint_mac(ip);
    let fdb = m.wait_for(
        deadline,
        |e| matches!(e, Event::New(Entry::Fdb { mac: m, dst, .. }) if *m == mac && *dst == vtep),
    )?;
    let neigh = m.wait_for(deadline, |e| matches!(e, Event::New(Entry::Neigh { ip: i, .. }) if *i == ip))?;
    Ok(fdb.max(neigh))
}
