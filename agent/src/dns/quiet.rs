//! The DNS server's own nftables table, `inet ovnet_dns`, which keeps the
//! kernel from refusing DNS queries while the agent restarts.
//!
//! Without a socket on port 53 (the agent is starting) the kernel answers a
//! container's query with ICMP port unreachable, and glibc's resolver takes
//! that as a final failure of that attempt and retries at once, so a lookup
//! made in the ~0.25 s of a restart fails. The one rule of this table drops
//! exactly those ICMP errors on their way to a container (`oifname "ovbr*"
//! icmp type destination-unreachable icmp code port-unreachable` about a
//! UDP port 53 packet), so the query goes unanswered instead and the
//! resolver's next attempt (`timeout:1`) reaches the restarted agent. The
//! table is written whole in one transaction (add, delete, add), as the
//! firewall module writes `inet ovnet`, at start and every 30 s after; the
//! messages are built here, pure.

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, Cmp, DataAttribute, Expressions, Hook, HookNumber, Immediate, InetHookNumber,
    ListAttribute, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage,
    TableAttribute, TableFlags, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

/// The table's name (family `inet`).
pub const TABLE: &str = "ovnet_dns";
const CHAIN: &str = "output";
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`.
const TRANSPORT: u32 = 2;

/// What the table holds, as the `nft` command it equals (for the log).
pub const COMMAND: &str = "nft 'add table inet ovnet_dns; delete table inet ovnet_dns; add table inet ovnet_dns; \
add chain inet ovnet_dns output { type filter hook output priority filter; policy accept; }; \
add rule inet ovnet_dns output oifname \"ovbr*\" meta l4proto icmp icmp type destination-unreachable \
icmp code port-unreachable @th,240,16 53 drop'";

/// The transaction that (re)writes the table.
pub fn batch() -> Vec<NetlinkMessage<NetfilterMessage>> {
    let table = || {
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![name(), TableAttribute::Flags(TableFlags::empty())],
        })
    };
    let cmds = vec![
        (table(), NLM_F_CREATE),
        (NfTablesMessage::DeleteTable(TableMessage { attributes: vec![name()] }), 0),
        (table(), NLM_F_CREATE),
        (NfTablesMessage::NewChain(chain()), NLM_F_CREATE),
        (NfTablesMessage::NewRule(rule()), NLM_F_CREATE | NLM_F_APPEND),
    ];
    let mut out = vec![control(ControlMessage::BatchBegin)];
    for (cmd, flags) in cmds {
        let header = NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0);
        let mut msg = NetlinkMessage::from(NetfilterMessage::new(header, cmd));
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        out.push(msg);
    }
    out.push(control(ControlMessage::BatchEnd));
    out
}

fn control(msg: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(header, msg));
    msg.header.flags = NLM_F_REQUEST;
    msg
}

fn name() -> TableAttribute {
    TableAttribute::Name(TABLE.to_string())
}

fn chain() -> netlink_packet_netfilter::nftables::ChainMessage {
    netlink_packet_netfilter::nftables::ChainMessage {
        attributes: vec![
            ChainAttribute::Table(TABLE.to_string()),
            ChainAttribute::Name(CHAIN.to_string()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(InetHookNumber::LocalOut)),
                Hook::Priority(0),
            ]),
            ChainAttribute::Policy(NF_ACCEPT),
            ChainAttribute::Type("filter".to_string()),
        ],
    }
}

fn meta(key: MetaKey) -> ListAttribute<netlink_packet_netfilter::nftables::ExpressionAttribute> {
    Expressions::Meta(vec![Meta::Key(key), Meta::DestinationRegister(Register::Reg1)]).into()
}

fn payload(offset: u32, len: u32) -> ListAttribute<netlink_packet_netfilter::nftables::ExpressionAttribute> {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(TRANSPORT),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn equal(data: &[u8]) -> ListAttribute<netlink_packet_netfilter::nftables::ExpressionAttribute> {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(data.to_vec())),
    ])
    .into()
}

/// `oifname "ovbr*" meta l4proto icmp icmp type 3 icmp code 3 @th,240,16 53 drop`:
/// the inner UDP destination port sits 8 (ICMP) + 20 (IP) + 2 bytes in.
fn rule() -> RuleMessage {
    let drop = Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(NF_DROP))])),
    ]);
    let exprs = vec![
        meta(MetaKey::Oifname),
        equal(b"ovbr"),
        meta(MetaKey::L4Proto),
        equal(&[1]),
        payload(0, 2),
        equal(&[3, 3]),
        payload(30, 2),
        equal(&53u16.to_be_bytes()),
        drop.into(),
    ];
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.to_string()),
            RuleAttribute::Chain(CHAIN.to_string()),
            RuleAttribute::Expressions(exprs),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transaction_of_five_acked_commands() {
        let b = batch();
        assert_eq!(b.len(), 7);
        assert!(b[1..6].iter().all(|m| m.header.flags & NLM_F_ACK != 0));
        assert!(b[0].header.flags & NLM_F_ACK == 0 && b[6].header.flags & NLM_F_ACK == 0);
    }
}
