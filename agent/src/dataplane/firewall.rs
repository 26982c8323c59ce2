//! The agent's nftables table `inet ovnet` as nf_tables netlink messages:
//! the transaction that writes it ([`batch`]) and what a dump of the
//! kernel's tables, chains and rules says it holds ([`parse`]). Both are
//! pure; the netlink dataplane sends and dumps them on its own
//! NETLINK_NETFILTER socket, so no `nft` process runs.
//!
//! The design decision: the agent owns the table entirely and never edits
//! it in place. A write is one transaction that deletes and recreates it
//! (`add table; delete table; add table; add chain; add rule...`), so a
//! missing, partial or hand-edited table is replaced whole, nothing is ever
//! seen half-written, and no other table is touched. A read maps the table
//! back to a [`Firewall`] only when it is exactly what [`batch`] writes
//! (counter values aside); anything else is `Altered`, which the planner
//! rewrites. The rules themselves (isolation, internal networks, masquerade,
//! published ports, the control-plane guard, dead peers cut off) are in
//! [`super::rules`]; `nft list table inet ovnet` shows them as the command
//! `Op::SyncFirewall` logs wrote them.

use std::collections::BTreeSet;

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage, RuleAttribute,
    RuleMessage, TableAttribute, TableFlags, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::model::{
    FIREWALL_CHAIN, FIREWALL_TABLE, Firewall, FirewallState, INPUT_CHAIN, OUTPUT_CHAIN, POSTROUTING_CHAIN,
    PREROUTING_CHAIN,
};

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is addressed to.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NF_ACCEPT`, the chains' policy.
const NF_ACCEPT: u32 = 1;

pub use super::nftexpr::{Expr, decode, encode};
use super::rules::{Rule, firewall_of, recognize, rules};

/// `iifname "BRIDGE" oifname "ovbr*" oifname != "BRIDGE" counter drop`: what
/// the bridge routes into another network's bridge is dropped.
pub fn isolate(bridge: &str) -> Vec<Expr> {
    Rule::Isolate(bridge.to_string()).exprs()
}

/// The table's base chains: name, hook, priority, type.
const CHAINS: [(&str, InetHookNumber, i32, &str); 5] = [
    (FIREWALL_CHAIN, InetHookNumber::Forward, 0, "filter"),
    (INPUT_CHAIN, InetHookNumber::LocalIn, 0, "filter"),
    (PREROUTING_CHAIN, InetHookNumber::PreRouting, -100, "nat"),
    (OUTPUT_CHAIN, InetHookNumber::LocalOut, -100, "nat"),
    (POSTROUTING_CHAIN, InetHookNumber::PostRouting, 100, "nat"),
];

/// The transaction that replaces the table with `fw` (see `Op::SyncFirewall`),
/// between a batch begin and end; every command asks for an ACK, so each
/// gets an answer of its own. Sequence numbers are the sender's to set.
pub fn batch(fw: &Firewall) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let table = || NfTablesMessage::NewTable(table_message());
    let mut cmds = vec![
        (table(), NLM_F_CREATE),
        (NfTablesMessage::DeleteTable(TableMessage { attributes: vec![table_name()] }), 0),
        (table(), NLM_F_CREATE),
    ];
    for chain in CHAINS {
        cmds.push((NfTablesMessage::NewChain(chain_message(chain)), NLM_F_CREATE));
    }
    for rule in rules(fw) {
        cmds.push((NfTablesMessage::NewRule(rule_message(&rule)), NLM_F_CREATE | NLM_F_APPEND));
    }
    transaction(cmds)
}

/// `cmds` (family `inet`, each with its extra flags) as one nf_tables
/// transaction: between a batch begin and end, each command asking for an
/// ACK of its own.
pub fn transaction(cmds: Vec<(NfTablesMessage, u16)>) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let mut out = vec![control(ControlMessage::BatchBegin)];
    for (cmd, flags) in cmds {
        let mut msg = NetlinkMessage::from(NetfilterMessage::new(inet(), cmd));
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        out.push(msg);
    }
    out.push(control(ControlMessage::BatchEnd));
    out
}

/// A batch begin or end, addressed to nf_tables; no ACK is asked for.
fn control(msg: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(header, msg));
    msg.header.flags = NLM_F_REQUEST;
    msg
}

/// The nfgenmsg header of every command and dump: family `inet`.
pub fn inet() -> NetfilterHeader {
    NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0)
}

fn table_name() -> TableAttribute {
    TableAttribute::Name(FIREWALL_TABLE.to_string())
}

fn table_message() -> TableMessage {
    TableMessage { attributes: vec![table_name(), TableAttribute::Flags(TableFlags::empty())] }
}

/// A base chain: `type TYPE hook HOOK priority PRIORITY; policy accept;`.
fn chain_message((name, hook, priority, kind): (&str, InetHookNumber, i32, &str)) -> ChainMessage {
    ChainMessage {
        attributes: vec![
            ChainAttribute::Table(FIREWALL_TABLE.to_string()),
            ChainAttribute::Name(name.to_string()),
            ChainAttribute::Hook(vec![Hook::Number(HookNumber::Inet(hook)), Hook::Priority(priority as u32)]),
            ChainAttribute::Policy(NF_ACCEPT),
            ChainAttribute::Type(kind.to_string()),
        ],
    }
}

fn rule_message(rule: &Rule) -> RuleMessage {
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(FIREWALL_TABLE.to_string()),
            RuleAttribute::Chain(rule.chain().to_string()),
            RuleAttribute::Expressions(rule.exprs().iter().map(encode).collect()),
        ],
    }
}

/// What a dump of the kernel's `inet` tables, chains and rules (`listing`,
/// any order, other tables included) says the table holds: `Rules` only
/// when it is exactly what [`batch`] writes, whatever the order of its
/// rules and their counters.
pub fn parse(listing: &[NfTablesMessage]) -> FirewallState {
    let ours = |table: Option<&str>| table == Some(FIREWALL_TABLE);
    let mut table_seen = false;
    let mut chains_seen = BTreeSet::new();
    let mut found: Vec<Rule> = Vec::new();
    let mut odd: Vec<String> = Vec::new();
    for msg in listing {
        match msg {
            NfTablesMessage::NewTable(t) if ours(table_of(t)) => {
                table_seen = true;
                let flags = t.attributes.iter().find_map(|a| match a {
                    TableAttribute::Flags(f) => Some(*f),
                    _ => None,
                });
                if flags.is_some_and(|f| f.contains(TableFlags::Dormant)) {
                    odd.push("the dormant flag".into());
                }
            }
            NfTablesMessage::NewChain(c) if ours(chain_table(c)) => {
                match CHAINS.iter().find(|spec| Some(spec.0) == chain_name(c)) {
                    Some(spec) if same_chain(c, *spec) && chains_seen.insert(spec.0) => {}
                    _ => odd.push(format!("chain {}", chain_name(c).unwrap_or("without a name"))),
                }
            }
            NfTablesMessage::NewRule(r) if ours(rule_table(r)) => match our_rule(r) {
                Some(rule) => found.push(rule),
                None => odd.push(format!("a rule of its own in chain {}", rule_chain(r).unwrap_or("?"))),
            },
            _ => {}
        }
    }
    if !table_seen {
        return FirewallState::Missing;
    }
    if let Some(missing) = CHAINS.iter().find(|spec| !chains_seen.contains(spec.0)) {
        return FirewallState::Altered(format!(
            "its chain {} is missing or not a base {} chain with policy accept",
            missing.0, missing.3
        ));
    }
    if !odd.is_empty() {
        return FirewallState::Altered(format!("it holds {}", odd.join(", ")));
    }
    match firewall_of(&found) {
        Ok(fw) => FirewallState::Rules(fw),
        Err(why) => FirewallState::Altered(why),
    }
}

fn table_of(t: &TableMessage) -> Option<&str> {
    t.attributes.iter().find_map(|a| if let TableAttribute::Name(n) = a { Some(n.as_str()) } else { None })
}

fn chain_table(c: &ChainMessage) -> Option<&str> {
    c.attributes.iter().find_map(|a| if let ChainAttribute::Table(n) = a { Some(n.as_str()) } else { None })
}

fn chain_name(c: &ChainMessage) -> Option<&str> {
    c.attributes.iter().find_map(|a| if let ChainAttribute::Name(n) = a { Some(n.as_str()) } else { None })
}

fn rule_table(r: &RuleMessage) -> Option<&str> {
    r.attributes.iter().find_map(|a| if let RuleAttribute::Table(n) = a { Some(n.as_str()) } else { None })
}

fn rule_chain(r: &RuleMessage) -> Option<&str> {
    r.attributes.iter().find_map(|a| if let RuleAttribute::Chain(n) = a { Some(n.as_str()) } else { None })
}

/// Whether `c` is the base chain [`chain_message`] makes of `spec`
/// (handles, counts and other bookkeeping aside).
fn same_chain(c: &ChainMessage, spec: (&str, InetHookNumber, i32, &str)) -> bool {
    let want = chain_message(spec);
    let hook = |m: &ChainMessage| {
        m.attributes.iter().find_map(|a| if let ChainAttribute::Hook(h) = a { Some(h.clone()) } else { None })
    };
    let policy = |m: &ChainMessage| {
        m.attributes.iter().find_map(|a| if let ChainAttribute::Policy(p) = a { Some(*p) } else { None })
    };
    let kind = |m: &ChainMessage| {
        m.attributes.iter().find_map(|a| if let ChainAttribute::Type(t) = a { Some(t.clone()) } else { None })
    };
    let mut have_hook = hook(c);
    if let Some(h) = have_hook.as_mut() {
        h.retain(|a| matches!(a, Hook::Number(_) | Hook::Priority(_)));
    }
    have_hook == hook(&want) && policy(c) == policy(&want) && kind(c) == kind(&want)
}

/// Which of our rules `r` is, when it is exactly one.
fn our_rule(r: &RuleMessage) -> Option<Rule> {
    let exprs: Vec<Expr> = r.attributes.iter().find_map(|a| {
        if let RuleAttribute::Expressions(e) = a { Some(e.iter().map(decode).collect()) } else { None }
    })?;
    recognize(rule_chain(r)?, &exprs)
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
