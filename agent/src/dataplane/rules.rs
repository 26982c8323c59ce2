//! The rules of the table `inet ovnet`, each as the expressions it is made
//! of and the chain it goes in: [`rules`] lists what a [`Firewall`] needs,
//! [`recognize`] says which rule a listed one is.
//!
//! The design decision: a rule is recognised by taking its parameters from
//! where they sit in the expressions and building the rule again from them;
//! only an exact match counts, so a rule edited by hand in any way is not
//! one of ours and the table is rewritten.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use netlink_packet_netfilter::nftables::{MetaKey, Operator};
use ovnet_ipam_store::Proto;

use super::nftexpr::{CT_STATUS, Expr, NETWORK_HEADER, TRANSPORT_HEADER, ifname, ifname_of};
use crate::model::{
    DEVICE_PREFIX, FIREWALL_CHAIN, Firewall, INPUT_CHAIN, OUTPUT_CHAIN, Outbound, POSTROUTING_CHAIN,
    PREROUTING_CHAIN, Published, VXLAN_PORT,
};

/// `NFPROTO_IPV4`, as `meta nfproto` loads it.
const NFPROTO_IPV4: u8 = 2;
/// `IPS_DST_NAT`: the connection's destination was translated.
const IPS_DST_NAT: u32 = 1 << 5;

/// One rule of the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// `iifname BR oifname "ovbr*" oifname != BR counter drop` (forward).
    Isolate(String),
    /// `iifname BR oifname != BR counter drop` (forward): nothing routed out.
    InternalOut(String),
    /// `oifname BR iifname != BR counter drop` (forward): nothing routed in.
    InternalIn(String),
    /// `ip saddr SUBNET oifname != BR counter masquerade` (postrouting).
    Masquerade(Outbound),
    /// `ct status dnat oifname BR ip saddr SUBNET counter masquerade`
    /// (postrouting): a container reaching a published port of its own
    /// host gets the answer through the host, not straight from the peer.
    Hairpin(Outbound),
    /// `ip daddr HOST PROTO dport PORT counter dnat ip to IP:PORT`, in
    /// prerouting (`true`) or output (`false`).
    Dnat(Published, bool),
    /// `iifname "ovbr*" tcp dport PORT counter drop` (input): containers
    /// kept from a control-plane port of this host.
    GuardPort(u16),
    /// `iifname "ovbr*" ip daddr IP tcp dport PORT counter drop` (forward):
    /// containers kept from a control-plane address elsewhere.
    GuardAddr(SocketAddrV4),
    /// `ip saddr VTEP udp dport 4789 counter drop` (input): a host that is
    /// not alive is cut off.
    Cut(Ipv4Addr),
}

/// `iifname "ovbr*"` / `oifname "ovbr*"`: a prefix compare.
fn any_bridge() -> Vec<u8> {
    format!("{DEVICE_PREFIX}br").into_bytes()
}

impl Rule {
    /// The chain the rule goes in.
    pub fn chain(&self) -> &'static str {
        match self {
            Rule::Isolate(_) | Rule::InternalOut(_) | Rule::InternalIn(_) | Rule::GuardAddr(_) => {
                FIREWALL_CHAIN
            }
            Rule::GuardPort(_) | Rule::Cut(_) => INPUT_CHAIN,
            Rule::Masquerade(_) | Rule::Hairpin(_) => POSTROUTING_CHAIN,
            Rule::Dnat(_, true) => PREROUTING_CHAIN,
            Rule::Dnat(_, false) => OUTPUT_CHAIN,
        }
    }

    /// The rule's expressions, in order.
    pub fn exprs(&self) -> Vec<Expr> {
        let eq = |d: Vec<u8>| Expr::Cmp(Operator::Equal, d);
        let ne = |d: Vec<u8>| Expr::Cmp(Operator::NotEqual, d);
        let name = |key| Expr::Meta(key);
        match self {
            Rule::Isolate(br) => vec![
                name(MetaKey::Iifname),
                eq(ifname(br)),
                name(MetaKey::Oifname),
                eq(any_bridge()),
                name(MetaKey::Oifname),
                ne(ifname(br)),
                Expr::Counter,
                Expr::Drop,
            ],
            Rule::InternalOut(br) | Rule::InternalIn(br) => {
                let (a, b) = match self {
                    Rule::InternalOut(_) => (MetaKey::Iifname, MetaKey::Oifname),
                    _ => (MetaKey::Oifname, MetaKey::Iifname),
                };
                vec![name(a), eq(ifname(br)), name(b), ne(ifname(br)), Expr::Counter, Expr::Drop]
            }
            Rule::Masquerade(o) => {
                let mut e = saddr_in(o.subnet);
                e.extend([name(MetaKey::Oifname), ne(ifname(&o.bridge)), Expr::Counter, Expr::Masq]);
                e
            }
            Rule::Hairpin(o) => {
                let mut e = vec![
                    Expr::Ct(CT_STATUS),
                    Expr::Bitwise { mask: IPS_DST_NAT.to_ne_bytes().to_vec(), xor: vec![0; 4] },
                    ne(vec![0; 4]),
                    name(MetaKey::Oifname),
                    eq(ifname(&o.bridge)),
                ];
                e.extend(saddr_in(o.subnet));
                e.extend([Expr::Counter, Expr::Masq]);
                e
            }
            Rule::Dnat(p, _) => vec![
                name(MetaKey::Nfproto),
                eq(vec![NFPROTO_IPV4]),
                Expr::Payload { base: NETWORK_HEADER, offset: 16, len: 4 },
                eq(p.host_ip.octets().to_vec()),
                name(MetaKey::L4Proto),
                eq(vec![p.proto.number()]),
                Expr::Payload { base: TRANSPORT_HEADER, offset: 2, len: 2 },
                eq(p.host_port.to_be_bytes().to_vec()),
                Expr::Counter,
                Expr::Imm(1, p.ip.octets().to_vec()),
                Expr::Imm(2, p.port.to_be_bytes().to_vec()),
                Expr::Dnat,
            ],
            Rule::GuardPort(port) => {
                let mut e = vec![name(MetaKey::Iifname), eq(any_bridge())];
                e.extend(dport(6, *port));
                e.extend([Expr::Counter, Expr::Drop]);
                e
            }
            Rule::GuardAddr(a) => {
                let mut e = vec![
                    name(MetaKey::Iifname),
                    eq(any_bridge()),
                    name(MetaKey::Nfproto),
                    eq(vec![NFPROTO_IPV4]),
                    Expr::Payload { base: NETWORK_HEADER, offset: 16, len: 4 },
                    eq(a.ip().octets().to_vec()),
                ];
                e.extend(dport(6, a.port()));
                e.extend([Expr::Counter, Expr::Drop]);
                e
            }
            Rule::Cut(vtep) => {
                let mut e = vec![
                    name(MetaKey::Nfproto),
                    eq(vec![NFPROTO_IPV4]),
                    Expr::Payload { base: NETWORK_HEADER, offset: 12, len: 4 },
                    eq(vtep.octets().to_vec()),
                ];
                e.extend(dport(17, VXLAN_PORT));
                e.extend([Expr::Counter, Expr::Drop]);
                e
            }
        }
    }

    /// `nft` syntax of the rule, for logs and `ovctl doctor`.
    pub fn nft(&self) -> String {
        match self {
            Rule::Isolate(br) => {
                format!("iifname \"{br}\" oifname \"{DEVICE_PREFIX}br*\" oifname != \"{br}\" counter drop")
            }
            Rule::InternalOut(br) => format!("iifname \"{br}\" oifname != \"{br}\" counter drop"),
            Rule::InternalIn(br) => format!("oifname \"{br}\" iifname != \"{br}\" counter drop"),
            Rule::Masquerade(o) => {
                format!("ip saddr {} oifname != \"{}\" counter masquerade", o.subnet, o.bridge)
            }
            Rule::Hairpin(o) => {
                format!("ct status dnat oifname \"{}\" ip saddr {} counter masquerade", o.bridge, o.subnet)
            }
            Rule::Dnat(p, _) => format!(
                "ip daddr {} {} dport {} counter dnat ip to {}:{}",
                p.host_ip, p.proto, p.host_port, p.ip, p.port
            ),
            Rule::GuardPort(port) => format!("iifname \"{DEVICE_PREFIX}br*\" tcp dport {port} counter drop"),
            Rule::GuardAddr(a) => format!(
                "iifname \"{DEVICE_PREFIX}br*\" ip daddr {} tcp dport {} counter drop",
                a.ip(),
                a.port()
            ),
            Rule::Cut(vtep) => format!("ip saddr {vtep} udp dport {VXLAN_PORT} counter drop"),
        }
    }
}

/// `meta l4proto PROTO th dport PORT` (`tcp dport PORT` for 6).
fn dport(proto: u8, port: u16) -> [Expr; 4] {
    [
        Expr::Meta(MetaKey::L4Proto),
        Expr::Cmp(Operator::Equal, vec![proto]),
        Expr::Payload { base: TRANSPORT_HEADER, offset: 2, len: 2 },
        Expr::Cmp(Operator::Equal, port.to_be_bytes().to_vec()),
    ]
}

/// `ip saddr SUBNET`, as `nft` makes it: a byte-aligned prefix compares
/// only its bytes, any other is masked first.
fn saddr_in(subnet: Ipv4Net) -> Vec<Expr> {
    let mut e = vec![Expr::Meta(MetaKey::Nfproto), Expr::Cmp(Operator::Equal, vec![NFPROTO_IPV4])];
    let net = subnet.network().octets();
    let len = subnet.prefix_len();
    if len.is_multiple_of(8) {
        let bytes = usize::from(len / 8);
        e.push(Expr::Payload { base: NETWORK_HEADER, offset: 12, len: u32::from(len / 8) });
        e.push(Expr::Cmp(Operator::Equal, net[..bytes].to_vec()));
    } else {
        e.push(Expr::Payload { base: NETWORK_HEADER, offset: 12, len: 4 });
        e.push(Expr::Bitwise { mask: subnet.netmask().octets().to_vec(), xor: vec![0; 4] });
        e.push(Expr::Cmp(Operator::Equal, net.to_vec()));
    }
    e
}

/// The subnet of an `ip saddr SUBNET` at the start of `exprs`.
fn saddr_of(exprs: &[Expr]) -> Option<Ipv4Net> {
    match exprs {
        [_, _, Expr::Payload { len: 4, .. }, Expr::Bitwise { mask, .. }, Expr::Cmp(_, net), ..] => {
            subnet(mask, net)
        }
        [_, _, Expr::Payload { len, .. }, Expr::Cmp(_, net), ..] if (1..=4).contains(len) => {
            let mut a = [0u8; 4];
            let n = *len as usize;
            a[..n].copy_from_slice(net.get(..n)?);
            Ipv4Net::new(Ipv4Addr::from(a), (n * 8) as u8).ok()
        }
        _ => None,
    }
}

/// The first exact interface name a rule compares with.
fn bridge_of(exprs: &[Expr]) -> Option<String> {
    exprs.iter().find_map(|e| if let Expr::Cmp(_, b) = e { ifname_of(b) } else { None })
}

/// Every rule `fw` needs, in the order they are written.
pub fn rules(fw: &Firewall) -> Vec<Rule> {
    let mut out: Vec<Rule> = fw.isolated.iter().cloned().map(Rule::Isolate).collect();
    for br in &fw.internal {
        out.extend([Rule::InternalOut(br.clone()), Rule::InternalIn(br.clone())]);
    }
    for p in &fw.published {
        out.extend([Rule::Dnat(*p, true), Rule::Dnat(*p, false)]);
    }
    for o in &fw.outbound {
        out.extend([Rule::Masquerade(o.clone()), Rule::Hairpin(o.clone())]);
    }
    out.extend(fw.guard.addrs.iter().copied().map(Rule::GuardAddr));
    out.extend(fw.guard.ports.iter().copied().map(Rule::GuardPort));
    out.extend(fw.cut.iter().copied().map(Rule::Cut));
    out
}

/// The firewall a set of rules makes, when it is exactly what [`rules`]
/// writes for it; otherwise what is missing or extra, in words.
pub fn firewall_of(found: &[Rule]) -> Result<Firewall, String> {
    let mut fw = Firewall::default();
    for rule in found {
        match rule {
            Rule::Isolate(br) => fw.isolated.insert(br.clone()),
            Rule::InternalOut(br) => fw.internal.insert(br.clone()),
            Rule::Dnat(p, _) => fw.published.insert(*p),
            Rule::Masquerade(o) => fw.outbound.insert(o.clone()),
            Rule::GuardPort(p) => fw.guard.ports.insert(*p),
            Rule::GuardAddr(a) => fw.guard.addrs.insert(*a),
            Rule::Cut(vtep) => fw.cut.insert(*vtep),
            Rule::InternalIn(_) | Rule::Hairpin(_) => false,
        };
    }
    let mut want = rules(&fw);
    let mut have = found.to_vec();
    want.sort();
    have.sort();
    if want == have {
        return Ok(fw);
    }
    let missing: Vec<String> = want.iter().filter(|r| !have.contains(r)).map(|r| r.nft()).collect();
    let extra: Vec<String> = have
        .iter()
        .enumerate()
        .filter(|(i, r)| !want.contains(r) || have[..*i].contains(r))
        .map(|(_, r)| r.nft())
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("it lacks the rules {}", missing.join("; ")));
    }
    if !extra.is_empty() {
        why.push(format!("it holds the extra rules {}", extra.join("; ")));
    }
    Err(why.join(", and "))
}

/// Which of our rules `exprs` in `chain` is, if any.
pub fn recognize(chain: &str, exprs: &[Expr]) -> Option<Rule> {
    let br = |bytes: &Vec<u8>| ifname_of(bytes);
    let port = |bytes: &Vec<u8>| bytes.as_slice().try_into().ok().map(u16::from_be_bytes);
    let candidate = match (chain, exprs) {
        (
            FIREWALL_CHAIN,
            [
                Expr::Meta(MetaKey::Iifname),
                _,
                Expr::Meta(MetaKey::Nfproto),
                _,
                _,
                Expr::Cmp(_, ip),
                _,
                _,
                _,
                Expr::Cmp(_, p),
                _,
                _,
            ],
        ) => Rule::GuardAddr(SocketAddrV4::new(addr(ip)?, port(p)?)),
        (INPUT_CHAIN, [Expr::Meta(MetaKey::Iifname), _, _, _, _, Expr::Cmp(_, p), _, _]) => {
            Rule::GuardPort(port(p)?)
        }
        (INPUT_CHAIN, [_, _, _, Expr::Cmp(_, ip), ..]) => Rule::Cut(addr(ip)?),
        (FIREWALL_CHAIN, [Expr::Meta(MetaKey::Iifname), Expr::Cmp(_, b), _, Expr::Cmp(_, d), ..]) => {
            if d.len() == 16 { Rule::InternalOut(br(b)?) } else { Rule::Isolate(br(b)?) }
        }
        (FIREWALL_CHAIN, [Expr::Meta(MetaKey::Oifname), Expr::Cmp(_, b), ..]) => Rule::InternalIn(br(b)?),
        (POSTROUTING_CHAIN, [Expr::Ct(_), ..]) => {
            Rule::Hairpin(Outbound { bridge: bridge_of(exprs)?, subnet: saddr_of(exprs.get(5..)?)? })
        }
        (POSTROUTING_CHAIN, _) => {
            Rule::Masquerade(Outbound { bridge: bridge_of(exprs)?, subnet: saddr_of(exprs)? })
        }
        (
            PREROUTING_CHAIN | OUTPUT_CHAIN,
            [
                _,
                _,
                _,
                Expr::Cmp(_, host),
                _,
                Expr::Cmp(_, proto),
                _,
                Expr::Cmp(_, hport),
                _,
                Expr::Imm(_, ip),
                Expr::Imm(_, port),
                _,
            ],
        ) => {
            let p = Published {
                proto: match proto.as_slice() {
                    [6] => Proto::Tcp,
                    [17] => Proto::Udp,
                    _ => return None,
                },
                host_ip: addr(host)?,
                host_port: u16::from_be_bytes(hport.as_slice().try_into().ok()?),
                ip: addr(ip)?,
                port: u16::from_be_bytes(port.as_slice().try_into().ok()?),
            };
            Rule::Dnat(p, chain == PREROUTING_CHAIN)
        }
        _ => return None,
    };
    (candidate.exprs() == exprs).then_some(candidate)
}

fn addr(bytes: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from)
}

fn subnet(mask: &[u8], net: &[u8]) -> Option<Ipv4Net> {
    Ipv4Net::with_netmask(addr(net)?, addr(mask)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw() -> Firewall {
        let o = |b: &str, s: &str| Outbound { bridge: b.into(), subnet: s.parse().unwrap() };
        let p = Published {
            proto: Proto::Udp,
            host_ip: Ipv4Addr::new(172, 30, 0, 11),
            host_port: 5353,
            ip: Ipv4Addr::new(10, 1, 0, 2),
            port: 53,
        };
        Firewall {
            isolated: ["ovbr1".into(), "ovbr2".into()].into(),
            internal: ["ovbr2".into()].into(),
            outbound: [o("ovbr1", "10.1.0.0/16"), o("ovbr3", "10.3.16.0/20")].into(),
            published: [p, Published { proto: Proto::Tcp, ..p }].into(),
            guard: crate::model::Guard {
                ports: [2379, 9475].into(),
                addrs: ["172.30.0.254:2379".parse().unwrap(), "172.30.0.12:9475".parse().unwrap()].into(),
            },
            cut: [Ipv4Addr::new(172, 30, 0, 13)].into(),
        }
    }

    #[test]
    fn every_rule_is_recognized_from_its_expressions() {
        let all = rules(&fw());
        assert_eq!(all.len(), 2 + 2 + 4 + 4 + 2 + 2 + 1);
        for r in &all {
            assert_eq!(recognize(r.chain(), &r.exprs()).as_ref(), Some(r), "{}", r.nft());
        }
        assert_eq!(firewall_of(&all), Ok(fw()));
    }

    #[test]
    fn a_rule_changed_or_in_another_chain_is_not_ours() {
        for subnet in ["10.1.0.0/16", "10.1.16.0/20", "10.1.2.0/24"] {
            let r = Rule::Masquerade(Outbound { bridge: "ovbr1".into(), subnet: subnet.parse().unwrap() });
            let mut e = r.exprs();
            assert_eq!(recognize(POSTROUTING_CHAIN, &e), Some(r.clone()));
            assert_eq!(recognize(FIREWALL_CHAIN, &e), None);
            let last = e.len() - 1;
            e[last] = Expr::Drop;
            assert_eq!(recognize(POSTROUTING_CHAIN, &e), None);
        }
    }

    #[test]
    fn a_missing_half_is_reported_in_nft_words() {
        let mut all = rules(&fw());
        all.retain(|r| !matches!(r, Rule::Dnat(p, false) if p.proto == Proto::Tcp));
        let err = firewall_of(&all).unwrap_err();
        assert!(
            err.contains(
                "lacks the rules ip daddr 172.30.0.11 tcp dport 5353 counter dnat ip to 10.1.0.2:53"
            ),
            "{err}"
        );
        let mut twice = rules(&fw());
        twice.push(twice[0].clone());
        assert!(firewall_of(&twice).unwrap_err().contains("extra rules iifname \"ovbr1\""));
    }
}
