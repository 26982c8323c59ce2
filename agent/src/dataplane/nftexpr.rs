//! The nf_tables expressions the agent's rules are made of, both ways:
//! [`encode`] turns an [`Expr`] into the attribute list nf_tables takes,
//! [`decode`] turns what a dump lists back into an [`Expr`].
//!
//! The design decision: `decode` normalises what the kernel adds to an
//! expression when it lists it (a `nat`'s maximum registers and flags, a
//! `bitwise`'s operation, a `counter`'s values), so a rule read back is
//! equal to the rule written exactly when it does the same thing; anything
//! the agent does not write becomes `Other` and makes the table `Altered`.

use netlink_packet_core::{DefaultNla, Nla};
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, Meta, MetaKey,
    Operator, Payload, Register, Verdict, VerdictAttribute,
};

/// `NF_DROP`, the isolation rules' verdict.
const NF_DROP: u32 = 0;
/// `IFNAMSIZ`: an exact interface name is compared over all of it.
const IFNAMSIZ: usize = 16;
/// `NFTA_CT_DREG`, `NFTA_CT_KEY`.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
/// `NFTA_NAT_TYPE`, `_FAMILY`, `_REG_ADDR_MIN`, `_REG_PROTO_MIN`.
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
/// `NFTA_MASQ_FLAGS`.
const NFTA_MASQ_FLAGS: u16 = 1;
/// `NFT_NAT_DNAT`, `NFPROTO_IPV4`.
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;

/// Where a payload load starts: `NFT_PAYLOAD_NETWORK_HEADER`, `_TRANSPORT_HEADER`.
pub const NETWORK_HEADER: u32 = 1;
pub const TRANSPORT_HEADER: u32 = 2;
/// `NFT_CT_STATUS` (after `NFT_CT_STATE`, `NFT_CT_DIRECTION`).
pub const CT_STATUS: u32 = 2;

/// One expression of a rule, as far as the agent tells them apart. Loads
/// go to register 1 and comparisons read it, but for a DNAT's port (register 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg 1`.
    Meta(MetaKey),
    /// `cmp OP reg 1 DATA`.
    Cmp(Operator, Vec<u8>),
    /// `payload load LEN b @ BASE header + OFFSET => reg 1`.
    Payload { base: u32, offset: u32, len: u32 },
    /// `bitwise reg 1 = (reg 1 & MASK) ^ XOR`.
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// `ct load KEY => reg 1`.
    Ct(u32),
    /// `immediate reg REG DATA` (REG 1 or 2).
    Imm(u32, Vec<u8>),
    /// `nat dnat ip addr_min reg 1 proto_min reg 2`.
    Dnat,
    /// `masq`.
    Masq,
    /// `counter` (whatever it has counted).
    Counter,
    /// `immediate reg 0 drop`.
    Drop,
    /// Anything else, by the name of its expression type.
    Other(String),
}

/// An exact interface name as `nft` compares it: zero-padded to `IFNAMSIZ`
/// (a wildcard like `"ovbr*"` is the prefix alone, without the padding).
pub fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ.max(bytes.len()), 0);
    bytes
}

/// The name an exact [`ifname`] comparison is for.
pub fn ifname_of(bytes: &[u8]) -> Option<String> {
    if bytes.len() != IFNAMSIZ {
        return None;
    }
    let end = bytes.iter().position(|b| *b == 0)?;
    (end > 0 && bytes[end..].iter().all(|b| *b == 0))
        .then(|| String::from_utf8(bytes[..end].to_vec()).ok())
        .flatten()
}

fn register(n: u32) -> Register {
    if n == 2 { Register::Reg2 } else { Register::Reg1 }
}

fn raw(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

/// One expression as nf_tables takes it.
pub fn encode(expr: &Expr) -> ListAttribute<ExpressionAttribute> {
    let other =
        |name: &str, attributes| Expressions::Other { expression_type: name.into(), attributes }.into();
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
        Expr::Payload { base, offset, len } => Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(*base),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ])
        .into(),
        Expr::Bitwise { mask, xor } => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(mask.len() as u32),
            Bitwise::Mask(DataAttribute::Value(mask.clone())),
            Bitwise::Xor(DataAttribute::Value(xor.clone())),
        ])
        .into(),
        Expr::Ct(key) => other("ct", vec![raw(NFTA_CT_KEY, *key), raw(NFTA_CT_DREG, 1)]),
        Expr::Imm(reg, data) => Expressions::Immediate(vec![
            Immediate::DestinationRegister(register(*reg)),
            Immediate::Data(DataAttribute::Value(data.clone())),
        ])
        .into(),
        Expr::Dnat => other(
            "nat",
            vec![
                raw(NFTA_NAT_TYPE, NFT_NAT_DNAT),
                raw(NFTA_NAT_FAMILY, NFPROTO_IPV4),
                raw(NFTA_NAT_REG_ADDR_MIN, 1),
                raw(NFTA_NAT_REG_PROTO_MIN, 2),
            ],
        ),
        Expr::Masq => ListAttribute::Element(vec![ExpressionAttribute::Name("masq".to_string())]),
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
pub fn decode(attr: &ListAttribute<ExpressionAttribute>) -> Expr {
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
    let decoded = match data {
        Some(Expressions::Meta(m)) => meta(m),
        Some(Expressions::Cmp(c)) => cmp(c),
        Some(Expressions::Immediate(i)) => immediate(i),
        Some(Expressions::Payload(p)) => payload(p),
        Some(Expressions::Bitwise(b)) => bitwise(b),
        Some(Expressions::Other { expression_type, attributes }) => raw_expr(expression_type, attributes),
        None if name == Some("masq") => Some(Expr::Masq),
        _ => None,
    };
    match decoded {
        Some(e) => e,
        None if name == Some("counter") => Expr::Counter,
        None => other(),
    }
}

fn meta(m: &[Meta]) -> Option<Expr> {
    let key = m.iter().find_map(|a| if let Meta::Key(k) = a { Some(*k) } else { None })?;
    (m.contains(&Meta::DestinationRegister(Register::Reg1)) && m.len() == 2).then_some(Expr::Meta(key))
}

fn cmp(c: &[Cmp]) -> Option<Expr> {
    let op = c.iter().find_map(|a| if let Cmp::Op(o) = a { Some(*o) } else { None })?;
    let data = c
        .iter()
        .find_map(|a| if let Cmp::Data(DataAttribute::Value(v)) = a { Some(v.clone()) } else { None })?;
    (c.contains(&Cmp::SourceRegister(Register::Reg1)) && c.len() == 3).then_some(Expr::Cmp(op, data))
}

fn immediate(i: &[Immediate]) -> Option<Expr> {
    let drop = Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Other(NF_DROP))]));
    if i.len() != 2 {
        return None;
    }
    if i.contains(&Immediate::DestinationRegister(Register::Verdict)) && i.contains(&drop) {
        return Some(Expr::Drop);
    }
    let data = i.iter().find_map(|a| match a {
        Immediate::Data(DataAttribute::Value(v)) => Some(v.clone()),
        _ => None,
    })?;
    [1, 2]
        .into_iter()
        .find(|r| i.contains(&Immediate::DestinationRegister(register(*r))))
        .map(|r| Expr::Imm(r, data))
}

fn payload(p: &[Payload]) -> Option<Expr> {
    let get = |f: fn(&Payload) -> Option<u32>| p.iter().find_map(f);
    let base = get(|a| if let Payload::Base(v) = a { Some(*v) } else { None })?;
    let offset = get(|a| if let Payload::Offset(v) = a { Some(*v) } else { None })?;
    let len = get(|a| if let Payload::Len(v) = a { Some(*v) } else { None })?;
    (p.len() == 4 && p.contains(&Payload::DestinationRegister(Register::Reg1))).then_some(Expr::Payload {
        base,
        offset,
        len,
    })
}

fn bitwise(b: &[Bitwise]) -> Option<Expr> {
    let value = |d: &DataAttribute| if let DataAttribute::Value(v) = d { Some(v.clone()) } else { None };
    let mask = b.iter().find_map(|a| if let Bitwise::Mask(d) = a { value(d) } else { None })?;
    let xor = b.iter().find_map(|a| if let Bitwise::Xor(d) = a { value(d) } else { None })?;
    let regs = b.contains(&Bitwise::SourceRegister(Register::Reg1))
        && b.contains(&Bitwise::DestinationRegister(Register::Reg1));
    // `NFT_BITWISE_BOOL` (0) is the only operation with a mask and xor.
    let plain =
        b.iter().all(|a| !matches!(a, Bitwise::Op(op) if *op != 0 ) && !matches!(a, Bitwise::Data(_)));
    (regs && plain).then_some(Expr::Bitwise { mask, xor })
}

/// A `ct`, `nat` or `masq` expression, from its raw attributes.
fn raw_expr(name: &str, attributes: &[DefaultNla]) -> Option<Expr> {
    let u32_of = |kind: u16| -> Option<u32> {
        let a = attributes.iter().find(|a| a.kind() == kind)?;
        let mut buf = vec![0; a.value_len()];
        a.emit_value(&mut buf);
        Some(u32::from_be_bytes(buf.try_into().ok()?))
    };
    let kinds: Vec<u16> = attributes.iter().map(Nla::kind).collect();
    match name {
        "ct" => {
            let only = kinds.iter().all(|k| [NFTA_CT_DREG, NFTA_CT_KEY].contains(k));
            (only && u32_of(NFTA_CT_DREG) == Some(1)).then(|| u32_of(NFTA_CT_KEY).map(Expr::Ct)).flatten()
        }
        "nat" => {
            // The kernel lists the maximum registers (the minimum ones) and
            // the flags the registers imply; the rest must be ours.
            let dnat = u32_of(NFTA_NAT_TYPE) == Some(NFT_NAT_DNAT)
                && u32_of(NFTA_NAT_FAMILY) == Some(NFPROTO_IPV4)
                && u32_of(NFTA_NAT_REG_ADDR_MIN) == Some(1)
                && u32_of(NFTA_NAT_REG_PROTO_MIN) == Some(2)
                && u32_of(4).is_none_or(|r| r == 1)
                && u32_of(6).is_none_or(|r| r == 2)
                && u32_of(7).is_none_or(|f| f & !0x3 == 0)
                && kinds.iter().all(|k| (1..=7).contains(k));
            dnat.then_some(Expr::Dnat)
        }
        "masq" => kinds
            .iter()
            .all(|k| *k == NFTA_MASQ_FLAGS)
            .then_some(())
            .filter(|_| u32_of(NFTA_MASQ_FLAGS).is_none_or(|f| f == 0))
            .map(|_| Expr::Masq),
        _ => None,
    }
}
