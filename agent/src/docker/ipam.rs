//! The `IpamDriver` half: a pool is an ovnet network's subnet, its gateway
//! the network's anycast gateway, and an address an ovnet endpoint of this
//! host's block.
//!
//! The design decision: RequestPool comes before CreateNetwork and may be
//! followed by a failure Docker only reports with ReleasePool, so it writes
//! nothing: for a network that does not exist yet it only picks the subnet
//! (remembered as pending), and CreateNetwork creates the network. The pool
//! id names the network: `<network>/<subnet>`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{ContainerRef, Error as StoreError, NetworkRecord, alloc, validate};
use serde_json::{Value, json};

use super::protocol::{AddressRequest, ReleasePool, RequestPool};
use super::{Plugin, given, locked};
use crate::dataplane::Dataplane;
use crate::error::AgentError;

/// The `--ipam-opt` (and `-o`) key naming the ovnet network.
pub const NETWORK_OPTION: &str = "network";

/// Docker's option on the RequestAddress of a network's gateway.
const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
const GATEWAY_TYPE: &str = "com.docker.network.gateway";

/// What to type, for the messages.
pub const HOW: &str =
    "docker network create -d ovnet --ipam-driver ovnet --ipam-opt network=NAME [--subnet CIDR] NAME";

/// The ovnet network named by options `opts` (`network=NAME`); any other
/// key is refused, naming `flag`.
pub fn network_option(opts: &BTreeMap<String, String>, flag: &str) -> Result<Option<String>, AgentError> {
    if let Some(key) = opts.keys().find(|k| k.as_str() != NETWORK_OPTION) {
        // `-o driver=` is taken out before (see `driver::DRIVER_OPTION`).
        let driver = if flag == "-o" { " and -o driver=overlay|bridge (a new network's driver)" } else { "" };
        return Err(AgentError::InvalidArgument(format!(
            "unknown option {flag} {key}: the ovnet driver knows only {flag} {NETWORK_OPTION}=NAME (the ovnet network){driver}"
        )));
    }
    let Some(name) = opts.get(NETWORK_OPTION) else { return Ok(None) };
    validate::network_name(name)?;
    Ok(Some(name.clone()))
}

/// `<network>/<subnet>`.
pub fn pool_id(network: &str, subnet: Ipv4Net) -> String {
    format!("{network}/{subnet}")
}

/// The network and subnet of a pool id.
pub fn parse_pool_id(id: &Option<String>) -> Result<(String, Ipv4Net), AgentError> {
    let bad = || AgentError::InvalidArgument(format!("pool {id:?} is not an ovnet pool"));
    let (name, subnet) = given(id).and_then(|id| id.split_once('/')).ok_or_else(bad)?;
    let subnet: Ipv4Net = subnet.parse().map_err(|_| bad())?;
    validate::network_name(name).map_err(|_| bad())?;
    Ok((name.to_string(), subnet))
}

/// The answer to RequestPool for `network`'s `subnet`.
fn pool_answer(network: &str, subnet: Ipv4Net) -> Value {
    let gateway = format!("{}/{}", alloc::gateway(subnet), subnet.prefix_len());
    json!({
        "PoolID": pool_id(network, subnet),
        "Pool": subnet.to_string(),
        "Data": {GATEWAY_TYPE: gateway},
    })
}

/// `--subnet` must agree with an existing network's subnet.
fn check_subnet(net: &NetworkRecord, asked: Option<Ipv4Net>) -> Result<(), AgentError> {
    match asked {
        Some(s) if s != net.subnet => Err(AgentError::InvalidArgument(format!(
            "--subnet {s} disagrees with ovnet network {} whose subnet is {}: use --subnet {} or leave --subnet out",
            net.name, net.subnet, net.subnet
        ))),
        _ => Ok(()),
    }
}

impl<D: Dataplane> Plugin<D> {
    pub(super) async fn request_pool(&self, r: RequestPool) -> Result<Value, AgentError> {
        if r.v6 == Some(true) {
            return Err(AgentError::InvalidArgument("ovnet networks carry IPv4 only: drop --ipv6".into()));
        }
        if given(&r.sub_pool).is_some() {
            return Err(AgentError::InvalidArgument(
                "--ip-range is not supported: ovnet gives each host its own blocks of the subnet; drop --ip-range".into(),
            ));
        }
        let asked = match given(&r.pool) {
            Some(s) => Some(s.parse::<Ipv4Net>().map_err(|_| {
                AgentError::InvalidArgument(format!("invalid --subnet {s:?}: expected an IPv4 CIDR"))
            })?),
            None => None,
        };
        let name = network_option(&r.options.unwrap_or_default(), "--ipam-opt")?;
        let networks = self.store.list_networks().await?;
        let Some(name) = name else {
            // Without a name, --subnet may still name an existing network.
            if let Some(net) = networks.iter().find(|n| Some(n.subnet) == asked) {
                return Ok(pool_answer(&net.name, net.subnet));
            }
            return Err(AgentError::InvalidArgument(format!(
                "name the ovnet network with --ipam-opt {NETWORK_OPTION}=NAME: {HOW}"
            )));
        };
        if let Some(net) = networks.iter().find(|n| n.name == name) {
            check_subnet(net, asked)?;
            if asked.is_none() && self.endpoints.is_built(&net.name) {
                // Docker would ask again and again: it refuses a pool it did
                // not ask for that overlaps a route of the host.
                return Err(AgentError::InvalidArgument(format!(
                    "ovnet network {} ({}) is up on this host, and Docker refuses a pool it did not ask for \
                     when the host has a route into it: add --subnet {}",
                    net.name, net.subnet, net.subnet
                )));
            }
            return Ok(pool_answer(&net.name, net.subnet));
        }
        let existing: Vec<Ipv4Net> = networks.iter().map(|n| n.subnet).collect();
        let subnet = match asked {
            Some(s) => {
                validate::subnet(&s)?;
                if let Some(other) = alloc::overlapping(s, &existing)
                    && let Some(net) = networks.iter().find(|n| n.subnet == other)
                {
                    let network = net.name.clone();
                    return Err(StoreError::SubnetOverlap { subnet: s, network, other_subnet: other }.into());
                }
                s
            }
            None => alloc::pick_subnet(alloc::DEFAULT_POOL, alloc::DEFAULT_SUBNET_PREFIX, &existing)
                .ok_or_else(|| AgentError::InvalidArgument("no free subnet left: give --subnet".into()))?,
        };
        locked(&self.pending).insert(subnet, name.clone());
        Ok(pool_answer(&name, subnet))
    }

    pub(super) fn release_pool(&self, r: ReleasePool) -> Result<Value, AgentError> {
        if let Ok((name, subnet)) = parse_pool_id(&r.pool_id) {
            let mut pending = locked(&self.pending);
            if pending.get(&subnet) == Some(&name) {
                pending.remove(&subnet);
            }
        }
        Ok(json!({}))
    }

    pub(super) async fn request_address(&self, r: AddressRequest) -> Result<Value, AgentError> {
        let (network, subnet) = parse_pool_id(&r.pool_id)?;
        let ip = match given(&r.address) {
            Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                AgentError::InvalidArgument(format!("invalid address {s:?}: expected an IPv4 address"))
            })?),
            None => None,
        };
        let gateway = alloc::gateway(subnet);
        let opts = r.options.unwrap_or_default();
        if opts.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE) {
            if ip.is_some_and(|ip| ip != gateway) {
                return Err(AgentError::InvalidArgument(format!(
                    "the gateway of ovnet network {network} is {gateway}, on every host: drop --gateway"
                )));
            }
            return Ok(json!({"Address": format!("{gateway}/{}", subnet.prefix_len()), "Data": {}}));
        }
        let container = ContainerRef { runtime: "docker".into(), ..Default::default() };
        let (ep, net) = self.endpoints.reserve(&network, ip, container).await?;
        let answer = json!({"Address": format!("{}/{}", ep.ip, net.subnet.prefix_len()), "Data": {}});
        locked(&self.records).insert((network, ep.ip), (ep, net));
        Ok(answer)
    }

    /// Frees the address; an address, pool or network that is gone already is fine.
    pub(super) async fn release_address(&self, r: AddressRequest) -> Result<Value, AgentError> {
        let (network, subnet) = parse_pool_id(&r.pool_id)?;
        let Some(ip) = given(&r.address).and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
            return Ok(json!({}));
        };
        if ip == alloc::gateway(subnet) {
            return Ok(json!({}));
        }
        locked(&self.records).remove(&(network.clone(), ip));
        match self.endpoints.release_reserved(&network, ip).await {
            Ok(_) => Ok(json!({})),
            Err(AgentError::Store(StoreError::NetworkNotFound(_))) => Ok(json!({})),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_round_trip() {
        let subnet: Ipv4Net = "10.55.0.0/16".parse().unwrap();
        let id = pool_id("demo", subnet);
        assert_eq!(id, "demo/10.55.0.0/16");
        assert_eq!(parse_pool_id(&Some(id)).unwrap(), ("demo".to_string(), subnet));
        for bad in ["", "demo", "demo/nope", "/10.0.0.0/8", "a b/10.0.0.0/8"] {
            assert!(parse_pool_id(&Some(bad.to_string())).is_err(), "{bad}");
        }
        assert!(parse_pool_id(&None).is_err());
    }

    #[test]
    fn options_name_the_network_and_nothing_else() {
        let opts = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(network_option(&opts(&[]), "-o").unwrap(), None);
        assert_eq!(network_option(&opts(&[("network", "demo")]), "-o").unwrap(), Some("demo".into()));
        let e = network_option(&opts(&[("color", "blue")]), "-o").unwrap_err().to_string();
        assert!(e.contains("unknown option -o color"), "{e}");
        assert!(network_option(&opts(&[("network", "a/b")]), "-o").is_err());
    }

    #[test]
    fn the_gateway_is_announced_so_docker_spends_no_address() {
        let v = pool_answer("demo", "10.55.0.0/16".parse().unwrap());
        assert_eq!(v["Data"]["com.docker.network.gateway"], "10.55.0.1/16");
        assert_eq!(v["Pool"], "10.55.0.0/16");
    }
}
