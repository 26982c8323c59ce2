//! The `NetworkDriver` half: CreateNetwork creates or joins the ovnet
//! network, endpoints are made in Docker's steps by the shared endpoint
//! service.
//!
//! The design decision: every check that can refuse a call runs before
//! anything is written, so a refused `docker network create` leaves etcd
//! and the kernel as they were; calls for endpoints or networks that are
//! unknown or gone succeed, since Docker repeats them.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use ovnet_ipam_store::{Error as StoreError, NetworkRecord, NewNetwork, validate};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::engine::MIRROR_OPTION;
use super::ipam::{HOW, network_option};
use super::mapping::EndpointMapping;
use super::protocol::{CreateEndpoint, CreateNetwork, DeleteNetwork, EndpointCall, IpamData};
use super::{ADDRESS_SPACE, Plugin, docker_id, given, locked};
use crate::dataplane::Dataplane;
use crate::error::AgentError;
use crate::model::{VXLAN_OVERHEAD, veth_temp_name};

/// Docker's key for the `-o` pairs of `docker network create`.
const GENERIC: &str = "com.docker.network.generic";

/// The `-o` key choosing the driver of a new ovnet network:
/// `-o driver=bridge` makes a network of this host alone.
pub const DRIVER_OPTION: &str = "driver";

/// The `-o` pairs, as strings.
fn generic_options(
    options: &Option<BTreeMap<String, Value>>,
) -> Result<BTreeMap<String, String>, AgentError> {
    let Some(generic) = options.as_ref().and_then(|o| o.get(GENERIC)) else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = generic.as_object() else { return Ok(BTreeMap::new()) };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Ok((k.clone(), other.to_string())),
        })
        .collect()
}

/// The `-o` pairs without the mirror's mark, and whether it was there.
fn mirror_mark(mut opts: BTreeMap<String, String>) -> (BTreeMap<String, String>, bool) {
    let mirrored = opts.remove(MIRROR_OPTION).is_some();
    (opts, mirrored)
}

/// The option in which Docker passes `docker network create --internal`.
const INTERNAL: &str = "com.docker.network.internal";

/// The one IPv4 pool of a network, which must come from the ovnet IPAM driver.
fn ovnet_pool(r: &CreateNetwork) -> Result<Ipv4Net, AgentError> {
    if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(AgentError::InvalidArgument("ovnet networks carry IPv4 only: drop --ipv6".into()));
    }
    let pools: &[IpamData] = r.ipv4_data.as_deref().unwrap_or_default();
    let [pool] = pools else {
        return Err(AgentError::InvalidArgument(format!(
            "an ovnet network has exactly one IPv4 pool, not {}: {HOW}",
            pools.len()
        )));
    };
    if given(&pool.address_space) != Some(ADDRESS_SPACE) {
        return Err(AgentError::InvalidArgument(format!(
            "the ovnet network driver needs the ovnet IPAM driver (Docker's default IPAM knows nothing of ovnet's addresses): {HOW}"
        )));
    }
    given(&pool.pool).and_then(|p| p.parse().ok()).ok_or_else(|| {
        AgentError::InvalidArgument(format!("the network's pool {:?} is not an IPv4 CIDR", pool.pool))
    })
}

impl<D: Dataplane> Plugin<D> {
    pub(super) async fn create_network(&self, r: CreateNetwork) -> Result<Value, AgentError> {
        let id = docker_id(&r.network_id, "NetworkID")?;
        let (mut generic, mirrored) = mirror_mark(generic_options(&r.options)?);
        let driver = generic.remove(DRIVER_OPTION);
        if let Some(d) = &driver {
            validate::driver(d)?;
        }
        let named = network_option(&generic, "-o")?;
        let pool = ovnet_pool(&r)?;
        let pending = locked(&self.pending).get(&pool).cloned();
        let name = match (named, pending) {
            (Some(a), Some(b)) if a != b => {
                return Err(AgentError::InvalidArgument(format!(
                    "-o network={a} and --ipam-opt network={b} name different ovnet networks"
                )));
            }
            (Some(name), _) | (None, Some(name)) => name,
            (None, None) => {
                let networks = self.store.list_networks().await?;
                let net = networks.into_iter().find(|n| n.subnet == pool);
                net.map(|n| n.name).ok_or_else(|| {
                    AgentError::InvalidArgument(format!(
                        "name the ovnet network with --ipam-opt network=NAME: {HOW}"
                    ))
                })?
            }
        };
        let internal = r.options.as_ref().and_then(|o| o.get(INTERNAL)).is_some_and(|v| v == &json!(true));
        let net = self.create_or_join(&name, pool, driver, internal, !mirrored).await?;
        self.map_network(id, &net.name).await?;
        locked(&self.pending).remove(&pool);
        info!(docker_network = id, network = %net.name, subnet = %net.subnet, "docker network created");
        Ok(json!({}))
    }

    /// The ovnet network `name` with subnet `pool`, created when missing
    /// (with `driver`, `-o driver=`, default overlay; a bridge network
    /// belongs to this host) and `create` (not for the mirror's networks:
    /// it only mirrors). An existing network must be usable here and of
    /// the driver asked for, if any, and internal or not as asked.
    async fn create_or_join(
        &self,
        name: &str,
        pool: Ipv4Net,
        driver: Option<String>,
        internal: bool,
        create: bool,
    ) -> Result<NetworkRecord, AgentError> {
        let node = &self.endpoints.host().node;
        let joined = |net: NetworkRecord| -> Result<NetworkRecord, AgentError> {
            if let Some(d) = driver.as_deref().filter(|d| *d != net.driver.as_str()) {
                return Err(AgentError::InvalidArgument(format!(
                    "ovnet network {name} exists with driver {}: drop -o {DRIVER_OPTION}={d}",
                    net.driver
                )));
            }
            if net.internal != internal {
                return Err(AgentError::InvalidArgument(format!(
                    "ovnet network {name} is {}internal: create the docker network {} --internal",
                    if net.internal { "" } else { "not " },
                    if net.internal { "with" } else { "without" }
                )));
            }
            net.check_usable_on(node)?;
            Ok(net)
        };
        match self.store.get_network(name).await {
            Ok(net) if net.subnet == pool => joined(net),
            Ok(net) => Err(AgentError::InvalidArgument(format!(
                "--subnet {pool} disagrees with ovnet network {name} whose subnet is {}: use --subnet {} or leave --subnet out",
                net.subnet, net.subnet
            ))),
            Err(StoreError::NetworkNotFound(_)) if !create => Err(AgentError::NotFound(format!(
                "ovnet network {name} is gone (removed while its docker network was being made); the mirror does not make it again"
            ))),
            Err(StoreError::NetworkNotFound(_)) => {
                let mtu = self.endpoints.host().underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
                let req = NewNetwork {
                    name: name.to_string(),
                    driver: driver.clone().unwrap_or_else(|| "overlay".into()),
                    host: Some(node.clone()),
                    subnet: Some(pool),
                    vni: None,
                    block_prefix: None,
                    mtu,
                    internal,
                };
                match self.store.create_network(req).await {
                    Ok(net) => {
                        info!(network = %net.name, driver = %net.driver, subnet = %net.subnet, vni = net.vni, "network created for docker");
                        Ok(net)
                    }
                    // Created meanwhile, by another host's docker perhaps.
                    Err(StoreError::NetworkExists(_)) => joined(self.store.get_network(name).await?),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets the docker network; the ovnet network stays (other hosts use it).
    pub(super) async fn delete_network(&self, r: DeleteNetwork) -> Result<Value, AgentError> {
        let id = docker_id(&r.network_id, "NetworkID")?;
        self.unmap_network(id).await?;
        Ok(json!({}))
    }

    pub(super) async fn create_endpoint(&self, r: CreateEndpoint) -> Result<Value, AgentError> {
        let net_id = docker_id(&r.network_id, "NetworkID")?;
        let ep_id = docker_id(&r.endpoint_id, "EndpointID")?;
        let iface = r.interface.unwrap_or_default();
        if given(&iface.mac_address).is_some() {
            return Err(AgentError::InvalidArgument(
                "ovnet derives a container's MAC address from its IP address: drop --mac-address".into(),
            ));
        }
        if given(&iface.address_ipv6).is_some() {
            return Err(AgentError::InvalidArgument("ovnet networks carry IPv4 only: drop --ipv6".into()));
        }
        let network = self.network_of(net_id).await?.ok_or_else(|| {
            AgentError::NotFound(format!(
                "docker network {net_id} is not an ovnet network on host {}",
                self.node()
            ))
        })?;
        let addr: Ipv4Net = given(&iface.address).and_then(|a| a.parse().ok()).ok_or_else(|| {
            AgentError::InvalidArgument(format!(
                "the endpoint has no IPv4 address from the ovnet IPAM driver: {HOW}"
            ))
        })?;
        let (ep, net) = self.record(&network, addr.addr()).await?.ok_or_else(|| {
            AgentError::NotFound(format!(
                "address {} of network {network} was not handed out by ovnet on host {}",
                addr.addr(),
                self.node()
            ))
        })?;
        // The veth and the mapping side by side; a failure undoes both.
        let mapping = EndpointMapping { network, ip: ep.ip };
        let (plumbed, mapped) =
            tokio::join!(self.endpoints.plumb_here(&ep, &net), self.map_endpoint(ep_id, mapping));
        let failure = match (plumbed, mapped) {
            (Ok(spec), Ok(())) => return Ok(json!({"Interface": {"MacAddress": spec.mac.to_string()}})),
            (Err(e), _) | (Ok(_), Err(e)) => e,
        };
        if let Err(e) = self.endpoints.unplumb(&ep).await {
            warn!(error = %e, "removing the veth of a failed CreateEndpoint");
        }
        if let Err(e) = self.unmap_endpoint(ep_id).await {
            warn!(error = %e, "removing the mapping of a failed CreateEndpoint");
        }
        Err(failure)
    }

    /// Answers with the container end and the gateway; the sandbox path is
    /// written to the endpoint record meanwhile (nothing waits for it).
    pub(super) async fn join(&self, r: EndpointCall) -> Result<Value, AgentError> {
        let ep_id = docker_id(&r.endpoint_id, "EndpointID")?;
        let sandbox = given(&r.sandbox_key)
            .ok_or_else(|| AgentError::InvalidArgument("Join without a SandboxKey".into()))?
            .to_string();
        let m = self
            .endpoint_of(ep_id)
            .await?
            .ok_or_else(|| AgentError::NotFound(format!("docker endpoint {ep_id} is not known to ovnet")))?;
        let (ep, net) = self.record(&m.network, m.ip).await?.ok_or_else(|| {
            AgentError::NotFound(format!("the ovnet endpoint {} of network {} is gone", m.ip, m.network))
        })?;
        let answer = json!({
            "InterfaceName": {"SrcName": veth_temp_name(&ep.id), "DstPrefix": "eth"},
            "Gateway": net.gateway.to_string(),
            "DisableGatewayService": false,
        });
        let endpoints = self.endpoints.clone();
        tokio::spawn(async move {
            match endpoints.settle(&ep, &sandbox).await {
                Ok(()) => info!(network = %ep.network, ip = %ep.ip, sandbox, "docker endpoint joined"),
                Err(e) => warn!(error = %e, ip = %ep.ip, "recording the sandbox of a docker endpoint"),
            }
        });
        Ok(answer)
    }

    /// Deletes the endpoint's veth; its address stays until ReleaseAddress.
    pub(super) async fn delete_endpoint(&self, r: EndpointCall) -> Result<Value, AgentError> {
        let ep_id = docker_id(&r.endpoint_id, "EndpointID")?;
        let Some(m) = self.endpoint_of(ep_id).await? else { return Ok(json!({})) };
        let unplumbed = async {
            match self.record(&m.network, m.ip).await {
                Ok(Some((ep, _))) => self.endpoints.unplumb(&ep).await,
                Ok(None) | Err(AgentError::Store(StoreError::NetworkNotFound(_))) => Ok(()),
                Err(e) => Err(e),
            }
        };
        let (unplumbed, unmapped) = tokio::join!(unplumbed, self.unmap_endpoint(ep_id));
        unplumbed.and(unmapped)?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::protocol::parse;

    #[test]
    fn a_network_needs_one_ovnet_pool() {
        let net = |body: &str| parse::<CreateNetwork>(body.as_bytes()).unwrap();
        let ok =
            net(r#"{"IPv4Data":[{"AddressSpace":"ovnet","Pool":"10.55.0.0/16","Gateway":"10.55.0.1/16"}]}"#);
        assert_eq!(ovnet_pool(&ok).unwrap(), "10.55.0.0/16".parse::<Ipv4Net>().unwrap());
        for (body, want) in [
            (
                r#"{"IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"172.18.0.0/16"}]}"#,
                "--ipam-driver ovnet",
            ),
            (r#"{"IPv4Data":[]}"#, "exactly one IPv4 pool, not 0"),
            (
                r#"{"IPv4Data":[{"AddressSpace":"ovnet","Pool":"10.55.0.0/16"}],"IPv6Data":[{"Pool":"fd00::/64"}]}"#,
                "IPv4 only",
            ),
            (r#"{"IPv4Data":[{"AddressSpace":"ovnet","Pool":"nope"}]}"#, "not an IPv4 CIDR"),
        ] {
            let e = ovnet_pool(&net(body)).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn generic_options_are_the_o_pairs() {
        let net = parse::<CreateNetwork>(
            br#"{"Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"network":"demo","n":1}}}"#,
        )
        .unwrap();
        let opts = generic_options(&net.options).unwrap();
        assert_eq!(opts.get("network").map(String::as_str), Some("demo"));
        assert_eq!(opts.get("n").map(String::as_str), Some("1"));
        assert!(generic_options(&None).unwrap().is_empty());
    }

    #[test]
    fn the_mirror_mark_is_taken_off_before_the_options_are_checked() {
        let net = parse::<CreateNetwork>(
            br#"{"Options":{"com.docker.network.generic":{"network":"demo","ovnet.mirrored":"true"}}}"#,
        )
        .unwrap();
        let opts = generic_options(&net.options).unwrap();
        assert!(network_option(&opts, "-o").is_err(), "the mark is no user option");
        let (opts, mirrored) = mirror_mark(opts);
        assert!(mirrored);
        assert_eq!(network_option(&opts, "-o").unwrap().as_deref(), Some("demo"));
        let user = BTreeMap::from([("network".to_string(), "demo".to_string())]);
        assert_eq!(mirror_mark(user.clone()), (user, false));
    }
}
