//! The names the DNS server answers, built from one cluster snapshot, and
//! the pure answer to one query.
//!
//! The design decision: scope by the querier's source address. A query is
//! answered from the networks whose subnet holds its source address only
//! (aardvark-dns does the same), whatever address it was sent to, so a
//! container never learns a name of a network it is not on. Names of a
//! network's own domain (`NAME.NETWORK`) that do not exist are NXDOMAIN;
//! everything else is for the host's resolvers (`Outcome::Forward`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use ovnet_ipam_store::{ClusterState, validate};

/// Answers carry TTL 0: a disconnect is seen at the next lookup.
const TTL: u32 = 0;

/// One network's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetZone {
    /// The network's name in lower case: its DNS domain.
    pub domain: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Name or alias -> addresses (sorted).
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Address -> the endpoint's name.
    pub reverse: BTreeMap<Ipv4Addr, String>,
}

/// Every network's names, for endpoints on hosts that are alive (and this one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub nets: Vec<NetZone>,
}

impl Zone {
    /// Builds the zone from a snapshot; `me` is this host (its endpoints
    /// count even before its liveness key is seen). Names that are not DNS
    /// labels (a record written by hand) are left out.
    pub fn build(state: &ClusterState, me: &str) -> Zone {
        let nets = state
            .networks
            .values()
            .map(|net| {
                let mut z = NetZone {
                    domain: net.name.to_ascii_lowercase(),
                    subnet: net.subnet,
                    gateway: net.gateway,
                    names: BTreeMap::new(),
                    reverse: BTreeMap::new(),
                };
                let alive = |host: &str| host == me || state.alive.contains_key(host);
                for ep in state.endpoints_of(&net.name).filter(|e| alive(&e.host)) {
                    let name = ep.dns_name().filter(|n| validate::dns_label(n).is_ok());
                    let aliases = ep.aliases.iter().filter(|a| validate::dns_label(a).is_ok());
                    let labels: BTreeSet<&String> = name.iter().chain(aliases).collect();
                    for label in labels {
                        z.names.entry(label.clone()).or_default().push(ep.ip);
                    }
                    if let Some(name) = name {
                        z.reverse.insert(ep.ip, name);
                    }
                }
                z.names.values_mut().for_each(|ips| ips.sort());
                z
            })
            .collect();
        Zone { nets }
    }

    /// The networks a querier at `src` is on.
    fn scope(&self, src: IpAddr) -> impl Iterator<Item = &NetZone> {
        self.nets.iter().filter(move |n| matches!(src, IpAddr::V4(v4) if n.subnet.contains(&v4)))
    }
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Answer it with this message.
    Answer(Message),
    /// Ask the host's resolvers.
    Forward,
}

/// The answer to `query` from a querier at `src`; `turn` rotates the
/// addresses of a name held by several endpoints (round robin).
pub fn answer(zone: &Zone, query: &Message, src: IpAddr, turn: usize) -> Outcome {
    let Some(q) = query.queries.first() else {
        return Outcome::Answer(reply(query, ResponseCode::FormErr));
    };
    let qname = q.name().to_ascii().to_ascii_lowercase();
    let qname = qname.trim_end_matches('.');
    if let Some(ip) = arpa_v4(qname) {
        return reverse(zone, query, src, ip);
    }
    let Some(found) = lookup(zone, qname, src) else {
        return Outcome::Forward;
    };
    let Some(mut ips) = found else {
        return Outcome::Answer(reply(query, ResponseCode::NXDomain));
    };
    let mut msg = reply(query, ResponseCode::NoError);
    if q.query_type() == RecordType::A {
        let n = ips.len();
        ips.rotate_left(turn % n.max(1));
        let name = q.name().clone();
        msg.answers =
            ips.into_iter().map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))).collect();
    }
    Outcome::Answer(msg)
}

/// `Some(Some(ips))` for a name of ours, `Some(None)` for a name in the
/// domain of a network (ours to deny), `None` for any other name.
fn lookup(zone: &Zone, qname: &str, src: IpAddr) -> Option<Option<Vec<Ipv4Addr>>> {
    let collect = |nets: &mut dyn Iterator<Item = &NetZone>, label: &str| {
        let ips: BTreeSet<Ipv4Addr> = nets.filter_map(|n| n.names.get(label)).flatten().copied().collect();
        (!ips.is_empty()).then(|| ips.into_iter().collect::<Vec<_>>())
    };
    if !qname.contains('.') {
        return collect(&mut zone.scope(src), qname).map(Some);
    }
    // Anything under a network's domain is ours (`web.blue.blue`, which a
    // resolver's search list makes, too): found or NXDOMAIN, never forwarded.
    let net =
        zone.nets.iter().find(|n| qname.strip_suffix(n.domain.as_str()).is_some_and(|p| p.ends_with('.')))?;
    let label = &qname[..qname.len() - net.domain.len() - 1];
    if label.contains('.') {
        return Some(None);
    }
    Some(collect(&mut zone.scope(src).filter(|n| n.domain == net.domain), label))
}

fn reverse(zone: &Zone, query: &Message, src: IpAddr, ip: Ipv4Addr) -> Outcome {
    let mut in_scope = zone.scope(src).filter(|n| n.subnet.contains(&ip)).peekable();
    if in_scope.peek().is_none() {
        return Outcome::Forward;
    }
    let found = in_scope.find_map(|n| n.reverse.get(&ip).map(|name| format!("{name}.{}.", n.domain)));
    let Some(target) = found.and_then(|t| Name::from_ascii(t).ok()) else {
        return Outcome::Answer(reply(query, ResponseCode::NXDomain));
    };
    let mut msg = reply(query, ResponseCode::NoError);
    if let Some(q) = query.queries.first().filter(|q| q.query_type() == RecordType::PTR) {
        msg.answers.push(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(target))));
    }
    Outcome::Answer(msg)
}

/// `d.c.b.a.in-addr.arpa` -> a.b.c.d.
fn arpa_v4(qname: &str) -> Option<Ipv4Addr> {
    let rest = qname.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    for (i, p) in parts.iter().rev().enumerate() {
        octets[i] = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// An empty response to `query` with `code`, authoritative, its question copied.
pub fn reply(query: &Message, code: ResponseCode) -> Message {
    let mut msg = Message::response(query.metadata.id, query.metadata.op_code);
    msg.metadata = Metadata::response_from_request(&query.metadata);
    msg.metadata.authoritative = true;
    msg.metadata.recursion_available = true;
    msg.metadata.response_code = code;
    msg.queries = query.queries.clone();
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{endpoint, network};
    use hickory_proto::op::Query;
    use ovnet_ipam_store::{AliveRecord, RECORD_VERSION};

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (name, subnet, vni) in [("blue", "10.1.0.0/16", 1), ("red", "10.2.0.0/16", 2)] {
            s.networks.insert(name.into(), network(name, vni, subnet));
        }
        for (net, ip, host, name, aliases) in [
            ("blue", [10, 1, 0, 2], "a", "web", vec!["www"]),
            ("blue", [10, 1, 1, 2], "b", "db", vec!["www"]),
            ("blue", [10, 1, 2, 2], "dead", "ghost", vec!["www"]),
            ("red", [10, 2, 0, 2], "a", "only-red", vec![]),
        ] {
            let mut e = endpoint(net, host, ip);
            e.name = name.into();
            e.aliases = aliases.into_iter().map(String::from).collect();
            s.insert_endpoint(e);
        }
        for h in ["a", "b"] {
            let rec =
                AliveRecord { v: RECORD_VERSION, name: h.into(), vtep: Ipv4Addr::LOCALHOST, started_at: 0 };
            s.alive.insert(h.into(), rec);
        }
        s
    }

    fn ask(zone: &Zone, name: &str, t: RecordType, src: [u8; 4], turn: usize) -> Outcome {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        answer(zone, &m, IpAddr::from(src), turn)
    }

    fn addrs(o: Outcome) -> Result<Vec<String>, String> {
        match o {
            Outcome::Answer(m) if m.metadata.response_code == ResponseCode::NoError => {
                Ok(m.answers.iter().map(|r| r.data.to_string()).collect())
            }
            Outcome::Answer(m) => Err(m.metadata.response_code.to_string()),
            Outcome::Forward => Err("forward".into()),
        }
    }

    #[test]
    fn names_aliases_and_network_domain() {
        let z = Zone::build(&state(), "a");
        let blue = [10, 1, 9, 9];
        assert_eq!(addrs(ask(&z, "web.", RecordType::A, blue, 0)), Ok(vec!["10.1.0.2".into()]));
        assert_eq!(addrs(ask(&z, "WEB.Blue.", RecordType::A, blue, 0)), Ok(vec!["10.1.0.2".into()]));
        assert_eq!(addrs(ask(&z, "www.", RecordType::A, blue, 0)).unwrap().len(), 2, "dead host left out");
        assert_eq!(addrs(ask(&z, "ghost.", RecordType::A, blue, 0)), Err("forward".into()));
        assert_eq!(addrs(ask(&z, "nope.blue.", RecordType::A, blue, 0)), Err("Non-Existent Domain".into()));
        assert_eq!(
            addrs(ask(&z, "web.blue.blue.", RecordType::A, blue, 0)),
            Err("Non-Existent Domain".into())
        );
        assert_eq!(addrs(ask(&z, "web.", RecordType::AAAA, blue, 0)), Ok(vec![]));
        assert_eq!(addrs(ask(&z, "example.com.", RecordType::A, blue, 0)), Err("forward".into()));
    }

    #[test]
    fn round_robin_rotates_the_first_address() {
        let z = Zone::build(&state(), "a");
        let first: BTreeSet<String> = (0..4)
            .map(|t| addrs(ask(&z, "www.", RecordType::A, [10, 1, 0, 9], t)).unwrap()[0].clone())
            .collect();
        assert_eq!(first.len(), 2);
    }

    #[test]
    fn scoped_by_source_address() {
        let z = Zone::build(&state(), "a");
        let red = [10, 2, 0, 9];
        assert_eq!(addrs(ask(&z, "web.", RecordType::A, red, 0)), Err("forward".into()));
        assert_eq!(addrs(ask(&z, "web.blue.", RecordType::A, red, 0)), Err("Non-Existent Domain".into()));
        assert_eq!(addrs(ask(&z, "only-red.", RecordType::A, red, 0)), Ok(vec!["10.2.0.2".into()]));
        assert_eq!(addrs(ask(&z, "only-red.", RecordType::A, [10, 1, 0, 9], 0)), Err("forward".into()));
        assert_eq!(addrs(ask(&z, "web.", RecordType::A, [127, 0, 0, 1], 0)), Err("forward".into()));
    }

    #[test]
    fn reverse_lookups() {
        let z = Zone::build(&state(), "a");
        let ptr = |name: &str, src| addrs(ask(&z, name, RecordType::PTR, src, 0));
        assert_eq!(ptr("2.0.1.10.in-addr.arpa.", [10, 1, 0, 9]), Ok(vec!["web.blue.".into()]));
        assert_eq!(ptr("3.0.1.10.in-addr.arpa.", [10, 1, 0, 9]), Err("Non-Existent Domain".into()));
        assert_eq!(ptr("2.0.1.10.in-addr.arpa.", [10, 2, 0, 9]), Err("forward".into()));
        assert_eq!(ptr("1.1.168.192.in-addr.arpa.", [10, 1, 0, 9]), Err("forward".into()));
    }
}
