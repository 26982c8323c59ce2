//! Operations on the kernel: the planner's output and the dataplane's input.
//!
//! Each `Op` prints as the iproute2 command it stands for, so the agent's log
//! of changes reads like a shell history an operator could replay.

use std::fmt;
use std::net::Ipv4Addr;

use crate::model::{FIREWALL_CHAIN, FIREWALL_FAMILY, FIREWALL_TABLE, Firewall, INPUT_CHAIN};

use ipnet::Ipv4Net;
use ovnet_ipam_store::Mac;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `ip link add name NAME address MAC mtu MTU type bridge` + `ip link set
    /// NAME addrgenmode none` + `ip link set NAME up` (IPv4 only: no IPv6
    /// link-local address, so no DAD, router solicitations or MLD reports)
    CreateBridge { name: String, mac: Mac, mtu: u32 },
    /// `ip link add NAME mtu MTU master MASTER type vxlan id VNI local LOCAL
    /// dstport PORT nolearning proxy noudpcsum` + `ip link set NAME addrgenmode
    /// none` + `ip link set NAME up` + `bridge link set dev NAME learning off`
    CreateVxlan { name: String, vni: u32, local: Ipv4Addr, port: u16, mtu: u32, master: String },
    /// `ip link del NAME`
    DeleteLink { name: String },
    /// `ip link set NAME address MAC`
    SetMac { name: String, mac: Mac },
    /// `ip link set NAME mtu MTU`
    SetMtu { name: String, mtu: u32 },
    /// `ip link set NAME master MASTER` (+ `bridge link set dev NAME learning off`)
    SetMaster { name: String, master: String },
    /// `ip link set NAME up`
    SetUp { name: String },
    /// `ip addr add ADDR dev DEV`
    AddAddr { dev: String, addr: Ipv4Net },
    /// `ip addr del ADDR dev DEV`
    DelAddr { dev: String, addr: Ipv4Net },
    /// `bridge fdb append MAC dev DEV dst DST self permanent` (all-zeros MAC: a flood entry)
    AddFdb { dev: String, mac: Mac, dst: Ipv4Addr },
    /// `bridge fdb del MAC dev DEV dst DST self`
    DelFdb { dev: String, mac: Mac, dst: Ipv4Addr },
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`
    AddNeigh { dev: String, ip: Ipv4Addr, mac: Mac },
    /// `ip neigh del IP dev DEV`
    DelNeigh { dev: String, ip: Ipv4Addr },
    /// Replaces the table `inet ovnet` in one nftables transaction:
    /// `nft 'add table inet ovnet; delete table inet ovnet; add table inet ovnet; add chain ...; add rule ...'`
    SyncFirewall { firewall: Firewall },
}

impl Op {
    /// A short snake_case name of the operation, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateBridge { .. } => "create_bridge",
            Op::CreateVxlan { .. } => "create_vxlan",
            Op::DeleteLink { .. } => "delete_link",
            Op::SetMac { .. } => "set_mac",
            Op::SetMtu { .. } => "set_mtu",
            Op::SetMaster { .. } => "set_master",
            Op::SetUp { .. } => "set_up",
            Op::AddAddr { .. } => "add_addr",
            Op::DelAddr { .. } => "del_addr",
            Op::AddFdb { .. } => "add_fdb",
            Op::DelFdb { .. } => "del_fdb",
            Op::AddNeigh { .. } => "add_neigh",
            Op::DelNeigh { .. } => "del_neigh",
            Op::SyncFirewall { .. } => "sync_firewall",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateBridge { name, mac, mtu } => write!(
                f,
                "ip link add name {name} address {mac} mtu {mtu} type bridge \
                 && ip link set {name} addrgenmode none && ip link set {name} up"
            ),
            Op::CreateVxlan { name, vni, local, port, mtu, master } => write!(
                f,
                "ip link add {name} mtu {mtu} master {master} type vxlan id {vni} local {local} dstport {port} \
                 nolearning proxy noudpcsum && ethtool -K {name} gro off && ip link set {name} addrgenmode none \
                 && ip link set {name} up && bridge link set dev {name} learning off"
            ),
            Op::DeleteLink { name } => write!(f, "ip link del {name}"),
            Op::SetMac { name, mac } => write!(f, "ip link set {name} address {mac}"),
            Op::SetMtu { name, mtu } => write!(f, "ip link set {name} mtu {mtu}"),
            Op::SetMaster { name, master } => write!(f, "ip link set {name} master {master}"),
            Op::SetUp { name } => write!(f, "ip link set {name} up"),
            Op::AddAddr { dev, addr } => write!(f, "ip addr add {addr} dev {dev}"),
            Op::DelAddr { dev, addr } => write!(f, "ip addr del {addr} dev {dev}"),
            Op::AddFdb { dev, mac, dst } => {
                write!(f, "bridge fdb append {mac} dev {dev} dst {dst} self permanent")
            }
            Op::DelFdb { dev, mac, dst } => {
                write!(f, "bridge fdb del {mac} dev {dev} dst {dst} self")
            }
            Op::AddNeigh { dev, ip, mac } => {
                write!(f, "ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent")
            }
            Op::DelNeigh { dev, ip } => write!(f, "ip neigh del {ip} dev {dev}"),
            Op::SyncFirewall { firewall } => write!(f, "nft '{}'", nft_script(firewall)),
        }
    }
}

/// The nft commands `SyncFirewall` stands for, `;`-separated. The first
/// `add` makes the `delete` safe when the table is missing; the whole
/// script is one transaction, so the table is never seen half-written.
pub fn nft_script(fw: &Firewall) -> String {
    let table = format!("{FIREWALL_FAMILY} {FIREWALL_TABLE}");
    let mut cmds = vec![
        format!("add table {table}"),
        format!("delete table {table}"),
        format!("add table {table}"),
        format!(
            "add chain {table} {FIREWALL_CHAIN} {{ type filter hook forward priority filter; policy accept; }}"
        ),
        format!(
            "add chain {table} {INPUT_CHAIN} {{ type filter hook input priority filter; policy accept; }}"
        ),
        format!(
            "add chain {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
        ),
        format!("add chain {table} output {{ type nat hook output priority -100; policy accept; }}"),
        format!(
            "add chain {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
        ),
    ];
    for rule in crate::dataplane::rules::rules(fw) {
        cmds.push(format!("add rule {table} {} {}", rule.chain(), rule.nft()));
    }
    cmds.join("; ")
}
