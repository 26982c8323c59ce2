//! Simulated hosts and endpoints for the scale scenario, written straight
//! into etcd through the ipam-store API.
//!
//! Hosts register exactly as agents do (a lease each, then `register_host`),
//! so the real agent sees them alive; networks are made with
//! `create_network`. Blocks and endpoints are the store's own record types
//! written in batched transactions (100 puts each, under etcd's default
//! limit of 128 operations): allocating 10,000 addresses one transaction at a
//! time would measure etcd, not the agent. Simulated VTEPs are addresses in
//! [`SIM_RANGE`], which the scenario blackholes in the underlay namespace, so
//! nothing sent toward them ever leaves the lab.

use std::net::Ipv4Addr;

use anyhow::Context;
use etcd_client::{Txn, TxnOp};
use ipnet::Ipv4Net;
use ovnet_ipam_store::{
    AliveRecord, BlockRecord, EndpointRecord, EtcdStore, HostRecord, Mac, NetworkRecord, NewNetwork,
    RECORD_VERSION, StoreConfig, encode, now_secs,
};

/// Where simulated VTEPs live: outside the lab's underlay /24, routed into
/// the underlay namespace and dropped there.
pub const SIM_RANGE: &str = "172.31.0.0/16";
/// Simulated hosts' leases outlive any run; nobody renews them.
const LEASE_TTL: i64 = 3600;
/// Puts per transaction.
const BATCH: usize = 100;
/// Block size of the simulated networks: 16 addresses, 1,000 hosts fit a /16.
const BLOCK_PREFIX: u8 = 28;
/// Registrations in flight at once.
const PARALLEL: usize = 64;

/// One network: which simulated hosts hold endpoints, and how many each.
#[derive(Clone, Debug)]
pub struct NetPlan {
    pub name: String,
    pub first_host: usize,
    pub hosts: usize,
    pub per_host: usize,
}

/// Every simulated host and network.
#[derive(Clone, Debug)]
pub struct Layout {
    pub hosts: usize,
    pub networks: Vec<NetPlan>,
}

impl Layout {
    /// One network, `per_host` endpoints on each of `hosts` hosts.
    pub fn one_network(hosts: usize, per_host: usize) -> Layout {
        Layout { hosts, networks: vec![NetPlan { name: "scale".into(), first_host: 0, hosts, per_host }] }
    }

    /// `networks` networks, each on its own `hosts_per_net` hosts with `per_host` endpoints each.
    pub fn many_networks(networks: usize, hosts_per_net: usize, per_host: usize) -> Layout {
        let plans = (0..networks)
            .map(|n| NetPlan {
                name: format!("s{n}"),
                first_host: n * hosts_per_net,
                hosts: hosts_per_net,
                per_host,
            })
            .collect();
        Layout { hosts: networks * hosts_per_net, networks: plans }
    }

    pub fn endpoints(&self) -> usize {
        self.networks.iter().map(|n| n.hosts * n.per_host).sum()
    }

    /// The FDB entries (one per endpoint plus one flood entry per host and
    /// network) and neighbour entries the real agent must program.
    pub fn expected(&self) -> (usize, usize) {
        let floods: usize = self.networks.iter().map(|n| n.hosts).sum();
        (self.endpoints() + floods, self.endpoints())
    }
}

pub fn sim_host(k: usize) -> String {
    format!("sim{k:04}")
}

/// Simulated host `k`'s VTEP in [`SIM_RANGE`] (k < 62,500).
pub fn sim_vtep(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, (k / 250) as u8, (k % 250 + 1) as u8)
}

/// Connects to the lab's etcd (call inside the underlay namespace).
pub async fn connect(endpoint: String, prefix: String) -> anyhow::Result<EtcdStore> {
    let cfg = StoreConfig { endpoints: vec![endpoint], prefix, ..StoreConfig::default() };
    EtcdStore::connect(cfg).await.context("connecting to the lab's etcd")
}

/// Registers every host, makes every network and writes its blocks and
/// endpoints. Returns the network records, in layout order.
pub async fn seed(store: &EtcdStore, layout: &Layout) -> anyhow::Result<Vec<NetworkRecord>> {
    register_hosts(store, layout.hosts).await?;
    let mut records = Vec::new();
    for plan in &layout.networks {
        let req = NewNetwork {
            name: plan.name.clone(),
            driver: "overlay".into(),
            host: None,
            subnet: None,
            vni: None,
            block_prefix: Some(BLOCK_PREFIX),
            mtu: 1450,
            internal: false,
        };
        let net = store.create_network(req).await.with_context(|| format!("creating {}", plan.name))?;
        let mut puts = Vec::new();
        for h in 0..plan.hosts {
            let block = block(&net, plan, h);
            puts.push((store.keys().block(&net.name, &block.cidr), encode(&block)));
            for j in 0..plan.per_host {
                let ep = endpoint(&net, plan, h, j);
                puts.push((store.keys().endpoint(&net.name, ep.ip), encode(&ep)));
            }
        }
        write(store, puts).await?;
        records.push(net);
    }
    Ok(records)
}

async fn register_hosts(store: &EtcdStore, n: usize) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for k in 0..n {
        let store = store.clone();
        set.spawn(async move {
            let (name, vtep) = (sim_host(k), sim_vtep(k));
            let lease = store.grant_lease(LEASE_TTL).await?;
            let host = HostRecord {
                v: RECORD_VERSION,
                name: name.clone(),
                vtep,
                registered_at: now_secs(),
                control: Vec::new(),
            };
            let alive = AliveRecord { v: RECORD_VERSION, name, vtep, started_at: now_secs() };
            store.register_host(&host, &alive, lease).await
        });
        while set.len() >= PARALLEL || (k + 1 == n && !set.is_empty()) {
            if let Some(done) = set.join_next().await {
                done.context("registration task")?.context("registering a simulated host")?;
            }
        }
    }
    Ok(())
}

async fn write(store: &EtcdStore, puts: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let mut client = store.client();
    for chunk in puts.chunks(BATCH) {
        let ops: Vec<TxnOp> = chunk.iter().map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None)).collect();
        client.txn(Txn::new().and_then(ops)).await.context("writing records")?;
    }
    Ok(())
}

/// The `h`-th host's block of `net`: the (h+1)-th block (the first holds the gateway).
fn block(net: &NetworkRecord, plan: &NetPlan, h: usize) -> BlockRecord {
    let size = 1u32 << (32 - u32::from(net.block_prefix));
    let base = u32::from(net.subnet.network()) + size * (h as u32 + 1);
    let cidr = Ipv4Net::new(Ipv4Addr::from(base), net.block_prefix).unwrap_or(net.subnet);
    BlockRecord { v: RECORD_VERSION, network: net.name.clone(), cidr, host: sim_host(plan.first_host + h) }
}

/// Endpoint `j` of host `h` of `net`: address `block + 2 + j`.
pub fn endpoint(net: &NetworkRecord, plan: &NetPlan, h: usize, j: usize) -> EndpointRecord {
    let block = block(net, plan, h);
    let ip = Ipv4Addr::from(u32::from(block.cidr.network()) + 2 + j as u32);
    EndpointRecord {
        v: RECORD_VERSION,
        id: format!("{}-{j}", block.host),
        network: net.name.clone(),
        host: block.host,
        netns: format!("/run/netns/sim-{j}"),
        ip,
        mac: Mac::endpoint(ip),
        ifname: "eth0".into(),
        host_ifname: format!("ovve{:x}", u32::from(ip) & 0xfffff),
        created_at: now_secs(),
        container: None,
        name: String::new(),
        aliases: Vec::new(),
        ports: Vec::new(),
    }
}

/// Writes one endpoint record, as a remote agent's `connect` would.
pub async fn put_endpoint(store: &EtcdStore, ep: &EndpointRecord) -> anyhow::Result<()> {
    let key = store.keys().endpoint(&ep.network, ep.ip);
    store.client().put(key, encode(ep), None).await.context("writing an endpoint")?;
    Ok(())
}

/// Keys and bytes (keys + values) under the lab's prefix: what the agent lists at start.
pub async fn size(store: &EtcdStore) -> anyhow::Result<(usize, usize)> {
    let (_, kvs) = store.snapshot().await.context("listing the prefix")?;
    Ok((kvs.len(), kvs.iter().map(|(k, v)| k.len() + v.len()).sum()))
}
