//! What the agent asks of the local dockerd, over the Docker Engine API
//! (`bollard`, on dockerd's unix socket): its `ovnet` networks, the
//! endpoints containers hold on them, and its event stream.
//!
//! The design decision: the client negotiates the API version when it
//! connects (dockerd 20.10 speaks 1.41 at most and refuses a client pinned
//! higher), and everything it returns is reduced to the few plain fields the
//! mirror and the janitor decide on, so their decisions stay pure functions
//! of plain data. Nothing here retries: the caller owns the backoff.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{EventMessageTypeEnum, Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, InspectNetworkOptions, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder,
};
use futures::{Stream, StreamExt};
use ovnet_ipam_store::NetworkRecord;

/// The driver name (network and IPAM) of ovnet's Docker plugin.
pub const DRIVER: &str = "ovnet";
/// The network option (`-o`, and `--ipam-opt`) that names the ovnet network
/// a docker network is a view of; without it, the docker network's own name
/// is used (the plugin's `ipam::NETWORK_OPTION`).
pub const NETWORK_OPTION: &str = "network";
/// The label the mirror puts on the docker networks it creates.
pub const MIRROR_LABEL: &str = "ovnet.mirror";
/// The `-o` the mirror gives the docker networks it makes: the plugin then
/// joins the ovnet network and never creates it, so a mirror pass that races
/// an `ovctl network rm` cannot bring the removed network back.
pub const MIRROR_OPTION: &str = "ovnet.mirrored";
/// dockerd's own socket, the default of `--docker-sync`.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// Seconds one API request may take before it fails.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// A docker network of driver `ovnet`, as the mirror needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The ovnet network it is a view of (for driver `ovnet`).
    pub ovnet: String,
}

/// A container's endpoint on an `ovnet` docker network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub network_id: String,
    /// The ovnet network of that docker network.
    pub ovnet: String,
    pub endpoint_id: String,
    pub container_id: String,
    /// Without Docker's leading `/`.
    pub container_name: String,
    pub ip: Option<Ipv4Addr>,
    /// `NetworkSettings.SandboxKey` (empty when the container went away
    /// between the listing and its inspection).
    pub sandbox_key: String,
    /// Its DNS aliases on this network (`--network-alias`), lower case,
    /// DNS labels only, sorted.
    pub aliases: Vec<String>,
}

/// What `endpoints` learns from inspecting a container.
#[derive(Default)]
struct Sandbox {
    key: String,
    aliases: BTreeMap<String, Vec<String>>,
}

/// Docker's aliases as ovnet stores them: lower case, DNS labels only
/// (Docker adds the short container id, which is one), sorted, once each.
pub fn dns_aliases(aliases: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = aliases
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .filter(|a| ovnet_ipam_store::validate::dns_label(a).is_ok())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What an event said changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A network was created or removed.
    Network { action: String, id: String },
    /// A container started, died or was removed.
    Container { action: String, id: String },
}

/// A connected, version-negotiated Engine API client.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to dockerd at `socket` and agrees on the API version.
    pub async fn connect(socket: &Path) -> Result<Engine, DockerError> {
        let path = socket.to_string_lossy();
        let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)?;
        let docker = docker.negotiate_version().await?;
        Ok(Engine { docker })
    }

    /// The API version in use, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// Every docker network of driver `ovnet`, and the names of all the
    /// others (a name the mirror must not take).
    pub async fn networks(&self) -> Result<Vec<DockerNetwork>, DockerError> {
        let list = self.docker.list_networks(None::<bollard::query_parameters::ListNetworksOptions>).await?;
        Ok(list
            .into_iter()
            .map(|n| {
                let name = n.name.unwrap_or_default();
                let ipam = n.ipam.as_ref().and_then(|i| i.options.as_ref());
                let ovnet = ovnet_of(&name, n.options.as_ref(), ipam);
                DockerNetwork {
                    id: n.id.unwrap_or_default(),
                    name,
                    driver: n.driver.unwrap_or_default(),
                    ovnet,
                }
            })
            .collect())
    }

    /// `docker network create -d ovnet --ipam-driver ovnet --ipam-opt
    /// network=N --subnet S -o network=N N`; its id, or `None` when a
    /// network of that name appeared meanwhile.
    pub async fn create_network(&self, net: &NetworkRecord) -> Result<Option<String>, DockerError> {
        let ipam = Ipam {
            driver: Some(DRIVER.into()),
            config: Some(vec![IpamConfig { subnet: Some(net.subnet.to_string()), ..Default::default() }]),
            options: Some(HashMap::from([(NETWORK_OPTION.to_string(), net.name.clone())])),
        };
        let req = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some(DRIVER.into()),
            ipam: Some(ipam),
            options: Some(HashMap::from([
                (NETWORK_OPTION.to_string(), net.name.clone()),
                (MIRROR_OPTION.to_string(), "true".to_string()),
            ])),
            labels: Some(HashMap::from([(MIRROR_LABEL.to_string(), "true".to_string())])),
            ..Default::default()
        };
        let created = self.docker.create_network(req).await?;
        // API 1.41 has no way for this client to ask for CheckDuplicate (the
        // CLI's default): dockerd makes a second network of the same name and
        // only warns. Someone else made it meanwhile, so ours goes again.
        if created.warning.contains("already exists") {
            self.docker.remove_network(&created.id).await?;
            return Ok(None);
        }
        Ok(Some(created.id))
    }

    /// `docker network rm ID`.
    pub async fn remove_network(&self, id: &str) -> Result<(), DockerError> {
        self.docker.remove_network(id).await
    }

    /// True when a container, running or not, is attached to the network
    /// (a container never started names it by name only, without its id).
    pub async fn network_in_use(&self, net: &DockerNetwork) -> Result<bool, DockerError> {
        let filters = HashMap::from([("network", vec![net.id.as_str(), net.name.as_str()])]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        Ok(!self.docker.list_containers(Some(opts)).await?.is_empty())
    }

    /// Every endpoint of a running container on an `ovnet` network, with the
    /// container's sandbox key.
    pub async fn endpoints(&self) -> Result<Vec<DockerEndpoint>, DockerError> {
        let filters = HashMap::from([("driver", vec![DRIVER])]);
        let opts = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let mut found = Vec::new();
        for n in self.docker.list_networks(Some(opts)).await? {
            let (Some(id), Some(name)) = (n.id, n.name) else { continue };
            let inspected = match self.docker.inspect_network(&id, None::<InspectNetworkOptions>).await {
                Ok(i) => i,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let ipam = inspected.ipam.as_ref().and_then(|i| i.options.as_ref());
            let ovnet = ovnet_of(&name, inspected.options.as_ref(), ipam);
            for (container_id, res) in inspected.containers.unwrap_or_default() {
                found.push(DockerEndpoint {
                    network_id: id.clone(),
                    ovnet: ovnet.clone(),
                    endpoint_id: res.endpoint_id.unwrap_or_default(),
                    container_id,
                    container_name: res.name.unwrap_or_default().trim_start_matches('/').to_string(),
                    ip: res.ipv4_address.as_deref().and_then(address_of),
                    sandbox_key: String::new(),
                    aliases: Vec::new(),
                });
            }
        }
        let mut seen: BTreeMap<String, Sandbox> = BTreeMap::new();
        for ep in &mut found {
            if !seen.contains_key(&ep.container_id) {
                let sandbox = self.sandbox(&ep.container_id).await?;
                seen.insert(ep.container_id.clone(), sandbox);
            }
            if let Some(s) = seen.get(&ep.container_id) {
                ep.sandbox_key = s.key.clone();
                ep.aliases = s.aliases.get(&ep.network_id).cloned().unwrap_or_default();
            }
        }
        Ok(found)
    }

    /// The container's `NetworkSettings.SandboxKey` (empty when it is gone)
    /// and its aliases by network id.
    async fn sandbox(&self, container: &str) -> Result<Sandbox, DockerError> {
        let settings = match self.docker.inspect_container(container, None::<InspectContainerOptions>).await {
            Ok(c) => c.network_settings,
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(e),
        };
        let Some(settings) = settings else {
            return Ok(Sandbox::default());
        };
        let aliases = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| Some((n.network_id?, dns_aliases(n.aliases.unwrap_or_default()))))
            .collect();
        Ok(Sandbox { key: settings.sandbox_key.unwrap_or_default(), aliases })
    }

    /// dockerd's events that can change a mirror or janitor pass, from now
    /// on: networks created or removed, containers started, dead or removed
    /// (not the connects, creates and stops in the middle of a `docker
    /// run`, which a pass would only slow down). The stream ends (or yields
    /// an error) when dockerd stops.
    pub fn events(&self) -> impl Stream<Item = Result<Event, DockerError>> + use<> {
        let filters = HashMap::from([("type", vec!["network", "container"])]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        self.docker.events(Some(opts)).filter_map(|m| async move {
            let m = match m {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let action = m.action.unwrap_or_default();
            let id = m.actor.and_then(|a| a.id).unwrap_or_default();
            match m.typ {
                Some(EventMessageTypeEnum::NETWORK) if matches!(action.as_str(), "create" | "destroy") => {
                    Some(Ok(Event::Network { action, id }))
                }
                Some(EventMessageTypeEnum::CONTAINER)
                    if matches!(action.as_str(), "start" | "die" | "destroy") =>
                {
                    Some(Ok(Event::Container { action, id }))
                }
                _ => None,
            }
        })
    }
}

/// The ovnet network a docker network of that name, network options and
/// IPAM options is a view of (`-o network=` or `--ipam-opt network=`, else
/// its own name).
pub fn ovnet_of(
    name: &str,
    options: Option<&HashMap<String, String>>,
    ipam_options: Option<&HashMap<String, String>>,
) -> String {
    [options, ipam_options]
        .into_iter()
        .flatten()
        .find_map(|o| o.get(NETWORK_OPTION).filter(|n| !n.is_empty()))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// The address of Docker's `10.1.0.5/24`.
fn address_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next().and_then(|a| a.parse().ok())
}

/// True for a 404 from dockerd (the object went away meanwhile).
pub fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// A `unix:///path` Docker socket flag value.
pub fn parse_socket(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => Err(format!("invalid Docker socket {s:?}: expected unix:///path, e.g. {DEFAULT_SOCKET}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ovnet_network_of_a_docker_network() {
        let opts = HashMap::from([(NETWORK_OPTION.to_string(), "demo".to_string())]);
        assert_eq!(ovnet_of("mydemo", Some(&opts), None), "demo");
        assert_eq!(ovnet_of("mydemo", None, Some(&opts)), "demo");
        assert_eq!(ovnet_of("demo", None, None), "demo");
        let empty = HashMap::from([(NETWORK_OPTION.to_string(), String::new())]);
        assert_eq!(ovnet_of("x", Some(&empty), None), "x");
    }

    #[test]
    fn the_docker_sync_flag() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::config::Config::try_parse_from([&["ovagent"], args].concat());
        assert_eq!(parse(&[]).unwrap().docker_sync, None);
        assert_eq!(
            parse(&["--docker-sync"]).unwrap().docker_sync,
            Some(PathBuf::from("/var/run/docker.sock"))
        );
        let own = parse(&["--docker-sync=unix:///tmp/d.sock"]).unwrap();
        assert_eq!(own.docker_sync, Some(PathBuf::from("/tmp/d.sock")));
        let e = parse(&["--docker-sync=tcp://127.0.0.1:2375"]).unwrap_err().to_string();
        assert!(e.contains("expected unix:///path"), "{e}");
    }

    #[test]
    fn addresses_and_sockets() {
        assert_eq!(address_of("10.1.0.5/24"), Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(address_of(""), None);
        assert_eq!(
            parse_socket("unix:///var/run/docker.sock").unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
        for bad in ["/var/run/docker.sock", "unix://rel", "tcp://1.2.3.4:2375"] {
            assert!(parse_socket(bad).unwrap_err().contains("unix:///path"), "{bad}");
        }
    }
}
