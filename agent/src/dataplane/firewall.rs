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
//! rewrites. The rules are byte for byte what `nft` makes of the command
//! `Op::SyncFirewall` logs, so `nft list table inet ovnet` shows them as
//! that command wrote them.

use std::collections::BTreeSet;

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, HookNumber,
    Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator, Register,
    RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::model::{DEVICE_PREFIX, FIREWALL_CHAIN, FIREWALL_TABLE, Firewall, FirewallState};

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is addressed to.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NF_ACCEPT`, the chain's policy.
const NF_ACCEPT: u32 = 1;
/// `NF_DROP`, the rules' verdict.
const NF_DROP: u32 = 0;
/// `IFNAMSIZ`: an exact interface name is compared over all of it.
const IFNAMSIZ: usize = 16;

/// One expression of a rule, as far as the agent tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg 1`.
    Meta(MetaKey),
    /// `cmp OP reg 1 DATA`.
    Cmp(Operator, Vec<u8>),
    /// `counter` (whatever it has counted).
    Counter,
    /// `immediate reg 0 drop`.
    Drop,
    /// Anything else, by the name of its expression type.
    Other(String),
}

/// `iifname "BRIDGE" oifname "ovbr*" oifname != "BRIDGE" counter drop`: what
/// the bridge routes into another network's bridge is dropped.
pub fn isolate(bridge: &str) -> Vec<Expr> {
    vec![
        Expr::Meta(MetaKey::Iifname),
        Expr::Cmp(Operator::Equal, ifname(bridge)),
        Expr::Meta(MetaKey::Oifname),
        Expr::Cmp(Operator::Equal, format!("{DEVICE_PREFIX}br").into_bytes()),
        Expr::Meta(MetaKey::Oifname),
        Expr::Cmp(Operator::NotEqual, ifname(bridge)),
        Expr::Counter,
        Expr::Drop,
    ]
}

/// An exact interface name as `nft` compares it: zero-padded to `IFNAMSIZ`
/// (a wildcard like `"ovbr*"` is the prefix alone, without the padding).
fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ.max(bytes.len()), 0);
    bytes
}

/// The name an exact [`ifname`] comparison is for.
fn ifname_of(bytes: &[u8]) -> Option<String> {
    if bytes.len() != IFNAMSIZ {
        return None;
    }
    let end = bytes.iter().position(|b| *b == 0)?;
    (end > 0 && bytes[end..].iter().all(|b| *b == 0))
        .then(|| String::from_utf8(bytes[..end].to_vec()).ok())
        .flatten()
}

/// The transaction that replaces the table with `fw` (see `Op::SyncFirewall`),
/// between a batch begin and end; every command asks for an ACK, so each
/// gets an answer of its own. Sequence numbers are the sender's to set.
pub fn batch(fw: &Firewall) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let table = || NfTablesMessage::NewTable(table_message());
    let mut cmds = vec![
        (table(), NLM_F_CREATE),
        (NfTablesMessage::DeleteTable(TableMessage { attributes: vec![table_name()] }), 0),
        (table(), NLM_F_CREATE),
        (NfTablesMessage::NewChain(chain_message()), NLM_F_CREATE),
    ];
    for bridge in &fw.isolated {
        cmds.push((NfTablesMessage::NewRule(rule_message(&isolate(bridge))), NLM_F_CREATE | NLM_F_APPEND));
    }
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

/// The base chain: `type filter hook forward priority filter; policy accept;`.
fn chain_message() -> ChainMessage {
    ChainMessage {
        attributes: vec![
            ChainAttribute::Table(FIREWALL_TABLE.to_string()),
            ChainAttribute::Name(FIREWALL_CHAIN.to_string()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(InetHookNumber::Forward)),
                Hook::Priority(0),
            ]),
            ChainAttribute::Policy(NF_ACCEPT),
            ChainAttribute::Type("filter".to_string()),
        ],
    }
}

fn rule_message(exprs: &[Expr]) -> RuleMessage {
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(FIREWALL_TABLE.to_string()),
            RuleAttribute::Chain(FIREWALL_CHAIN.to_string()),
            RuleAttribute::Expressions(exprs.iter().map(encode).collect()),
        ],
    }
}

/// One expression as nf_tables takes it.
fn encode(expr: &Expr) -> ListAttribute<ExpressionAttribute> {
    match expr {
        Expr::Meta(key) => {
            Expressions::Meta(vec![Meta::Key(*key), Meta::DestinationRegister(Register::Reg1)]).into()
        }
        Expr::Cmp(op, data) => Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(*op),
            Cmp::Data(DataAttribute::Value(data.clone())),
        ])
        .into(),
        Expr::Counter => ListAttribute::Element(vec![ExpressionAttribute::Name("counter".to_string())]),
        Expr::Drop => Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(NF_DROP))])),
        ])
        .into(),
        Expr::Other(name) => ListAttribute::Element(vec![ExpressionAttribute::Name(name.clone())]),
    }
}

/// What the kernel says one expression of a rule is.
fn decode(attr: &ListAttribute<ExpressionAttribute>) -> Expr {
    let ListAttribute::Element(attrs) = attr else {
        return Expr::Other("an unnamed expression".into());
    };
    let name = attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Name(n) => Some(n.as_str()),
        _ => None,
    });
    let data = attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Data(d) => Some(d),
        _ => None,
    });
    let other = || Expr::Other(name.unwrap_or("an unnamed expression").to_string());
    match data {
        Some(Expressions::Meta(m)) => {
            let key = m.iter().find_map(|a| if let Meta::Key(k) = a { Some(*k) } else { None });
            let reg1 = m.contains(&Meta::DestinationRegister(Register::Reg1));
            match key {
                Some(key) if reg1 && m.len() == 2 => Expr::Meta(key),
                _ => other(),
            }
        }
        Some(Expressions::Cmp(c)) => {
            let op = c.iter().find_map(|a| if let Cmp::Op(o) = a { Some(*o) } else { None });
            let data = c.iter().find_map(|a| {
                if let Cmp::Data(DataAttribute::Value(v)) = a { Some(v.clone()) } else { None }
            });
            match (op, data) {
                (Some(op), Some(data))
                    if c.contains(&Cmp::SourceRegister(Register::Reg1)) && c.len() == 3 =>
                {
                    Expr::Cmp(op, data)
                }
                _ => other(),
            }
        }
        Some(Expressions::Immediate(i)) => {
            let drop = Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(
                NF_DROP,
            ))]));
            if i.len() == 2
                && i.contains(&Immediate::DestinationRegister(Register::Verdict))
                && i.contains(&drop)
            {
                Expr::Drop
            } else {
                other()
            }
        }
        _ if name == Some("counter") => Expr::Counter,
        _ => other(),
    }
}

/// What a dump of the kernel's `inet` tables, chains and rules (`listing`,
/// any order, other tables included) says the table holds: `Rules` only
/// when it is exactly what [`batch`] writes, whatever the order of its
/// rules and their counters.
pub fn parse(listing: &[NfTablesMessage]) -> FirewallState {
    let ours = |table: Option<&str>| table == Some(FIREWALL_TABLE);
    let (mut table_seen, mut chain_seen) = (false, false);
    let mut isolated = BTreeSet::new();
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
            NfTablesMessage::NewChain(c) if ours(chain_table(c)) => match chain_name(c) {
                Some(FIREWALL_CHAIN) if !chain_seen && same_chain(c) => chain_seen = true,
                name => odd.push(format!("chain {}", name.unwrap_or("without a name"))),
            },
            NfTablesMessage::NewRule(r) if ours(rule_table(r)) => match isolated_bridge(r) {
                Some(bridge) if isolated.insert(bridge.clone()) => {}
                Some(bridge) => odd.push(format!("a second rule for {bridge}")),
                None => odd.push(format!("a rule of its own in chain {}", rule_chain(r).unwrap_or("?"))),
            },
            _ => {}
        }
    }
    if !table_seen {
        return FirewallState::Missing;
    }
    if !chain_seen {
        return FirewallState::Altered(format!(
            "its chain {FIREWALL_CHAIN} is missing or not a forward filter chain with policy accept"
        ));
    }
    if !odd.is_empty() {
        return FirewallState::Altered(format!("it holds {}", odd.join(", ")));
    }
    FirewallState::Rules(Firewall { isolated })
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

/// Whether `c` is the base chain [`chain_message`] makes (handles, counts
/// and other bookkeeping aside).
fn same_chain(c: &ChainMessage) -> bool {
    let want = chain_message();
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

/// The bridge a rule isolates, when it is exactly an [`isolate`] rule of the chain.
fn isolated_bridge(r: &RuleMessage) -> Option<String> {
    if rule_chain(r) != Some(FIREWALL_CHAIN) {
        return None;
    }
    let exprs: Vec<Expr> = r.attributes.iter().find_map(|a| {
        if let RuleAttribute::Expressions(e) = a { Some(e.iter().map(decode).collect()) } else { None }
    })?;
    let Some(Expr::Cmp(Operator::Equal, name)) = exprs.get(1) else {
        return None;
    };
    let bridge = ifname_of(name)?;
    (exprs == isolate(&bridge)).then_some(bridge)
}

#[cfg(test)]
#[path = "firewall_tests.rs"]
mod tests;
