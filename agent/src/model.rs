//! The state the planner compares: what this host's kernel should hold
//! (`Desired`) and what it holds (`Observed`).
//!
//! Both are plain data keyed by device name, so the planner is a pure diff and
//! tests build them by hand. Only devices whose names carry the agent's prefix
//! (`ov`) are ever observed or touched, plus the one nftables table the
//! agent owns (`inet ovnet`, see [`Firewall`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{Mac, Proto};

/// Every device the agent creates starts with this, so it never touches others.
pub const DEVICE_PREFIX: &str = "ov";
/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Bridge of the network with this VNI: `ovbr4096`.
pub fn bridge_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}br{vni}")
}

/// VXLAN device of the network with this VNI: `ovvx4096`.
pub fn vxlan_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}vx{vni}")
}

/// Host end of an endpoint's veth pair, from the endpoint id: `ovve1a2b3c4d5e`.
pub fn veth_host_name(endpoint_id: &str) -> String {
    let id: String = endpoint_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(10).collect();
    format!("{DEVICE_PREFIX}ve{id}")
}

/// The container end's name while it is still in the host namespace: `ovtp1a2b3c4d5e`.
pub fn veth_temp_name(endpoint_id: &str) -> String {
    let id: String = endpoint_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(10).collect();
    format!("{DEVICE_PREFIX}tp{id}")
}

/// A unicast or flood (all-zeros MAC) entry in a VXLAN device's FDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// A permanent neighbour (ARP) entry on a VXLAN device, answered by its ARP proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// The bridge of one network: holds the anycast gateway address and MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub mac: Mac,
    /// Gateway address with the subnet's prefix length.
    pub addr: Ipv4Net,
    pub mtu: u32,
}

/// The VXLAN device of one network, a port of its bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub mtu: u32,
    pub master: String,
}

/// Everything one network needs on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDatapath {
    pub network: String,
    pub bridge: BridgeSpec,
    /// What the network's driver adds to the bridge.
    pub driver: DriverDatapath,
    /// Host ends of local endpoints' veths, to be ports of the bridge.
    pub ports: BTreeSet<String>,
    /// No way out (`--internal`): routed traffic from and to it is dropped.
    pub internal: bool,
    /// Ports of this host published to local endpoints.
    pub published: BTreeSet<Published>,
}

impl NetworkDatapath {
    /// The VXLAN side of an overlay network; `None` for a bridge network.
    pub fn overlay(&self) -> Option<&OverlayDatapath> {
        match &self.driver {
            DriverDatapath::Overlay(o) => Some(o),
            DriverDatapath::Bridge => None,
        }
    }

    pub fn overlay_mut(&mut self) -> Option<&mut OverlayDatapath> {
        match &mut self.driver {
            DriverDatapath::Overlay(o) => Some(o),
            DriverDatapath::Bridge => None,
        }
    }
}

/// The driver's part of a network's datapath, beside the bridge and ports
/// every driver has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverDatapath {
    /// A VXLAN device on the bridge, with entries toward the endpoints on
    /// other hosts.
    Overlay(OverlayDatapath),
    /// Nothing more: a network of this host alone (no VXLAN device, no entries).
    Bridge,
}

/// The VXLAN device of an overlay network and its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayDatapath {
    pub vxlan: VxlanSpec,
    /// Remote endpoints' MACs and flood entries toward live peers.
    pub fdb: BTreeSet<FdbEntry>,
    /// Remote endpoints' IP -> MAC.
    pub neigh: BTreeSet<NeighEntry>,
}

/// What this host's kernel should hold, keyed by bridge name. Each
/// network's datapath is shared, so an unchanged one is reused across passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub networks: BTreeMap<String, Arc<NetworkDatapath>>,
    /// The control plane kept from containers.
    pub guard: Guard,
    /// VTEPs of registered hosts that are not alive: their VXLAN traffic
    /// is dropped on arrival.
    pub cut: BTreeSet<Ipv4Addr>,
}

impl Desired {
    /// The firewall these networks need: every bridge isolated from the
    /// others, internal ones cut off, the others masqueraded on their way
    /// out, and the ports published here forwarded.
    pub fn firewall(&self) -> Firewall {
        let nets = || self.networks.values();
        Firewall {
            isolated: self.networks.keys().cloned().collect(),
            internal: nets().filter(|n| n.internal).map(|n| n.bridge.name.clone()).collect(),
            outbound: nets()
                .filter(|n| !n.internal)
                .map(|n| Outbound { bridge: n.bridge.name.clone(), subnet: n.bridge.addr.trunc() })
                .collect(),
            published: nets().filter(|n| !n.internal).flat_map(|n| n.published.iter().copied()).collect(),
            guard: self.guard.clone(),
            cut: self.cut.clone(),
        }
    }
}

/// The nftables family and name of the table the agent owns entirely.
pub const FIREWALL_FAMILY: &str = "inet";
pub const FIREWALL_TABLE: &str = "ovnet";
/// Its filter chain (hook forward, priority filter, policy accept).
pub const FIREWALL_CHAIN: &str = "forward";
/// Its NAT chains: published ports for traffic that arrives and for the
/// host's own (hooks prerouting and output, priority dstnat), masquerade
/// on the way out (hook postrouting, priority srcnat).
pub const PREROUTING_CHAIN: &str = "prerouting";
pub const OUTPUT_CHAIN: &str = "output";
pub const POSTROUTING_CHAIN: &str = "postrouting";
/// Its filter chain for what reaches the host itself (hook input, priority
/// filter): the control plane kept from containers, dead peers cut off.
pub const INPUT_CHAIN: &str = "input";

/// What containers may not reach (the control plane): TCP from any ovnet
/// bridge to these ports of this host, at any of its addresses (input), or
/// to these addresses elsewhere (forward), is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    pub ports: BTreeSet<u16>,
    pub addrs: BTreeSet<SocketAddrV4>,
}

/// A network with a way out: what leaves its subnet through any interface
/// but its bridge is masqueraded to the host's address, and what a
/// published port sends into it from its own subnet (hairpin) too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outbound {
    pub bridge: String,
    pub subnet: Ipv4Net,
}

/// A port of this host forwarded to an endpoint: `PROTO` to
/// `host_ip:host_port` goes to `ip:port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    pub proto: Proto,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The contents of the agent's nftables table `inet ovnet`, as the planner
/// sees them: routed traffic from each of these bridges to any other bridge
/// of ours (`ovbr*`) is dropped. Hosts forward between interfaces (Docker
/// turns `ip_forward` on), and each bridge holds its network's gateway, so
/// without this the host would route from one network into another.
/// Traffic inside one bridge is left alone, also where `br_netfilter` shows
/// it to the forward hook. Internal bridges get no routed traffic at all;
/// the others are masqueraded on the way out ([`Outbound`]), and ports
/// published on this host are forwarded ([`Published`]). Containers are
/// kept from the control plane ([`Guard`]), and VXLAN traffic from the VTEP
/// of a host that is not alive is dropped (`cut`): its peers program
/// nothing toward it, so what its containers send would only get answers
/// that wait in vain for ARP (and, queued, hold up the host's other ICMP
/// answers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Firewall {
    pub isolated: BTreeSet<String>,
    pub internal: BTreeSet<String>,
    pub outbound: BTreeSet<Outbound>,
    pub published: BTreeSet<Published>,
    pub guard: Guard,
    pub cut: BTreeSet<Ipv4Addr>,
}

/// What the kernel holds of the table `inet ovnet`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FirewallState {
    /// No such table.
    #[default]
    Missing,
    /// The table exactly as the agent writes it.
    Rules(Firewall),
    /// The table holds something the agent does not write (what, in words).
    Altered(String),
    /// The table could not be read (why; e.g. a kernel without nf_tables).
    Unreadable(String),
}

/// The kind of an observed link, with the attributes the planner checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan { vni: u32, local: Option<Ipv4Addr>, port: u16, learning: bool, proxy: bool },
    Veth,
    Other(String),
}

/// One link whose name starts with [`DEVICE_PREFIX`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub name: String,
    pub index: u32,
    pub kind: LinkKind,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    /// Name of the master device (the bridge), if enslaved.
    pub master: Option<String>,
    /// IPv4 addresses with prefix length.
    pub addrs: BTreeSet<Ipv4Net>,
}

/// What this host's kernel holds of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: BTreeMap<String, ObservedLink>,
    /// Self (device-level) FDB entries of each of our VXLAN devices.
    pub fdb: BTreeMap<String, BTreeSet<FdbEntry>>,
    /// Permanent IPv4 neighbour entries of each of our VXLAN devices.
    pub neigh: BTreeMap<String, BTreeSet<NeighEntry>>,
    /// The table `inet ovnet`.
    pub firewall: FirewallState,
}
