//! The table's netlink messages both ways, without root: what `batch`
//! writes and what `parse` makes of a dump. Messages go through their
//! bytes and back, as they would through the kernel.

use netlink_packet_core::{DefaultNla, NetlinkBuffer, NetlinkDeserializable};
use netlink_packet_netfilter::NetfilterMessageInner;

use netlink_packet_netfilter::nftables::{
    DataAttribute, Expressions, Immediate, MetaKey, Operator, Register, Verdict, VerdictAttribute,
};

use super::super::nftexpr::{ifname, ifname_of};
use super::*;

/// `NF_DROP`.
const NF_DROP: u32 = 0;

fn fw(bridges: &[&str]) -> Firewall {
    Firewall { isolated: bridges.iter().map(|b| b.to_string()).collect(), ..Firewall::default() }
}

/// `msg` as bytes and parsed back.
fn through_bytes(mut msg: NetlinkMessage<NetfilterMessage>) -> NetlinkMessage<NetfilterMessage> {
    msg.finalize();
    let mut bytes = vec![0; msg.buffer_len()];
    msg.serialize(&mut bytes);
    let buf = NetlinkBuffer::new_checked(&bytes[..]).expect("a whole message");
    let inner = NetfilterMessage::deserialize(&msg.header, buf.payload()).expect("parses");
    NetlinkMessage::new(msg.header, inner.into())
}

/// The nf_tables messages of what `batch` adds, as a dump would list them
/// after the kernel has put in its own bookkeeping.
fn listed(fw: &Firewall) -> Vec<NfTablesMessage> {
    batch(fw)
        .into_iter()
        .map(through_bytes)
        .filter_map(|m| match m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(m),
                ..
            }) => Some(m),
            _ => None,
        })
        .skip(2) // the first `add table` and the `delete`
        .map(with_kernel_bookkeeping)
        .collect()
}

/// Handles, a use count, and counters that have counted something.
fn with_kernel_bookkeeping(msg: NfTablesMessage) -> NfTablesMessage {
    match msg {
        NfTablesMessage::NewTable(mut t) => {
            t.attributes.extend([TableAttribute::Use(1), TableAttribute::Handle(4)]);
            NfTablesMessage::NewTable(t)
        }
        NfTablesMessage::NewChain(mut c) => {
            c.attributes.insert(0, ChainAttribute::Handle(1));
            c.attributes.push(ChainAttribute::Use(2));
            NfTablesMessage::NewChain(c)
        }
        NfTablesMessage::NewRule(mut r) => {
            r.attributes.push(RuleAttribute::Handle(7));
            for attr in r.attributes.iter_mut() {
                if let RuleAttribute::Expressions(exprs) = attr {
                    for e in exprs.iter_mut() {
                        if decode(e) == Expr::Counter {
                            *e = Expressions::Other {
                                expression_type: "counter".into(),
                                attributes: vec![
                                    DefaultNla::new(1, 588u64.to_be_bytes().to_vec()),
                                    DefaultNla::new(2, 7u64.to_be_bytes().to_vec()),
                                ],
                            }
                            .into();
                        }
                    }
                }
            }
            NfTablesMessage::NewRule(r)
        }
        other => other,
    }
}

#[test]
fn the_batch_replaces_the_table_in_one_transaction() {
    let msgs = batch(&fw(&["ovbr4096"]));
    let kinds: Vec<String> = msgs
        .iter()
        .map(|m| match &m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(NetfilterMessage { inner, .. }) => {
                match inner {
                    NetfilterMessageInner::None(c) => format!("{:?}", c.message_type()),
                    NetfilterMessageInner::NfTables(t) => format!("{:?}", t.message_type()),
                    other => format!("{other:?}"),
                }
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "BatchBegin",
            "NewTable",
            "DeleteTable",
            "NewTable",
            "NewChain",
            "NewChain",
            "NewChain",
            "NewChain",
            "NewChain",
            "NewRule",
            "BatchEnd"
        ]
    );
    // Every command asks for an answer; the batch's ends do not.
    let acked: Vec<bool> = msgs.iter().map(|m| m.header.flags & NLM_F_ACK != 0).collect();
    assert_eq!(acked, [false, true, true, true, true, true, true, true, true, true, false]);
    assert_eq!(msgs[0].header.flags & NLM_F_REQUEST, NLM_F_REQUEST);
}

#[test]
fn a_rule_compares_names_as_nft_does() {
    // `nft --debug=netlink` for the rule nft makes of the logged command:
    //   [ meta load iifname => reg 1 ]
    //   [ cmp eq reg 1 0x7262766f 0x36393034 0x00000000 0x00000000 ]
    //   [ meta load oifname => reg 1 ]
    //   [ cmp eq reg 1 0x7262766f ]
    //   [ meta load oifname => reg 1 ]
    //   [ cmp neq reg 1 0x7262766f 0x36393034 0x00000000 0x00000000 ]
    //   [ counter pkts 0 bytes 0 ]
    //   [ immediate reg 0 drop ]
    let exact = b"ovbr4096\0\0\0\0\0\0\0\0".to_vec();
    assert_eq!(
        isolate("ovbr4096"),
        [
            Expr::Meta(MetaKey::Iifname),
            Expr::Cmp(Operator::Equal, exact.clone()),
            Expr::Meta(MetaKey::Oifname),
            Expr::Cmp(Operator::Equal, b"ovbr".to_vec()),
            Expr::Meta(MetaKey::Oifname),
            Expr::Cmp(Operator::NotEqual, exact),
            Expr::Counter,
            Expr::Drop,
        ]
    );
    // Each expression survives its own encoding.
    for e in isolate("ovbr4096") {
        assert_eq!(decode(&encode(&e)), e);
    }
    assert_eq!(ifname_of(&ifname("ovbr4096")), Some("ovbr4096".to_string()));
    assert_eq!(ifname_of(b"ovbr"), None);
    assert_eq!(ifname_of(&[0; 16]), None);
}

#[test]
fn what_the_batch_adds_reads_back_as_written() {
    for want in [fw(&["ovbr4096", "ovbr5000"]), fw(&[])] {
        assert_eq!(parse(&listed(&want)), FirewallState::Rules(want));
    }
}

#[test]
fn other_tables_are_not_ours_and_without_ours_the_table_is_missing() {
    let mut foreign = listed(&fw(&["ovbr4096"]));
    for msg in foreign.iter_mut() {
        match msg {
            NfTablesMessage::NewTable(t) => t.attributes[0] = TableAttribute::Name("mine".into()),
            NfTablesMessage::NewChain(c) => c.attributes[1] = ChainAttribute::Table("mine".into()),
            NfTablesMessage::NewRule(r) => r.attributes[0] = RuleAttribute::Table("mine".into()),
            _ => {}
        }
    }
    assert_eq!(parse(&foreign), FirewallState::Missing);
    assert_eq!(parse(&[]), FirewallState::Missing);
    let mut both = foreign;
    both.extend(listed(&fw(&["ovbr4096"])));
    assert_eq!(parse(&both), FirewallState::Rules(fw(&["ovbr4096"])));
}

#[test]
fn anything_else_in_the_table_is_altered() {
    let accept = Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(NF_ACCEPT))])),
    ]);
    let foreign_rule = NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(FIREWALL_TABLE.into()),
            RuleAttribute::Chain(FIREWALL_CHAIN.into()),
            RuleAttribute::Expressions(vec![accept.into()]),
        ],
    });
    let chain = NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![ChainAttribute::Table(FIREWALL_TABLE.into()), ChainAttribute::Name("mine".into())],
    });
    let twice = listed(&fw(&["ovbr4096"])).pop().expect("a rule");
    let mut renamed = listed(&fw(&["ovbr4096"])).pop().expect("a rule");
    if let NfTablesMessage::NewRule(r) = &mut renamed {
        r.attributes[1] = RuleAttribute::Chain("other".into());
    }
    for (extra, what) in [
        (foreign_rule, "a rule of its own in chain forward"),
        (chain, "chain mine"),
        (twice, "extra rules iifname \"ovbr4096\""),
        (renamed, "a rule of its own in chain other"),
    ] {
        let mut listing = listed(&fw(&["ovbr4096"]));
        listing.push(extra.clone());
        match parse(&listing) {
            FirewallState::Altered(why) => assert!(why.contains(what), "{why}"),
            other => panic!("{extra:?}: {other:?}"),
        }
    }

    // A chain of the right name that drops by default, or no chain at all.
    let mut dropping = listed(&fw(&["ovbr4096"]));
    for msg in dropping.iter_mut() {
        if let NfTablesMessage::NewChain(c) = msg {
            c.attributes.retain(|a| !matches!(a, ChainAttribute::Policy(_)));
            c.attributes.push(ChainAttribute::Policy(NF_DROP));
        }
    }
    assert!(matches!(parse(&dropping), FirewallState::Altered(why) if why.contains("chain forward")));
    let chainless: Vec<_> =
        listed(&fw(&[])).into_iter().filter(|m| !matches!(m, NfTablesMessage::NewChain(_))).collect();
    assert!(matches!(parse(&chainless), FirewallState::Altered(why) if why.contains("chain forward")));

    // A table put to sleep by hand.
    let mut dormant = listed(&fw(&[]));
    if let Some(NfTablesMessage::NewTable(t)) = dormant.first_mut() {
        t.attributes.retain(|a| !matches!(a, TableAttribute::Flags(_)));
        t.attributes.push(TableAttribute::Flags(TableFlags::Dormant));
    }
    assert!(matches!(parse(&dormant), FirewallState::Altered(why) if why.contains("dormant")));
}

#[test]
fn a_rule_with_a_changed_expression_is_not_an_isolation_rule() {
    let mut exprs = isolate("ovbr4096");
    exprs[5] = Expr::Cmp(Operator::Equal, ifname("ovbr4096"));
    let rule = NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(FIREWALL_TABLE.to_string()),
            RuleAttribute::Chain(FIREWALL_CHAIN.to_string()),
            RuleAttribute::Expressions(exprs.iter().map(encode).collect()),
        ],
    });
    let mut listing = listed(&fw(&[]));
    listing.push(rule);
    assert!(matches!(parse(&listing), FirewallState::Altered(why) if why.contains("a rule of its own")));
}
