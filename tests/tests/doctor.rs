//! `ovctl doctor` in the lab: clean after a clean setup; reports an FDB
//! entry, a neighbour entry and an MTU broken by hand; clean again once the
//! agent has repaired them.
//!
//! Determinism: a running agent repairs hand-made breakage within
//! milliseconds (netlink events wake it), so a doctor run after breaking
//! things could find them repaired already. Instead the host's agent is
//! frozen (SIGSTOP) while things are broken, and `ovctl doctor` talks to a
//! second instance of the very same API service (`AgentService` with the real
//! netlink dataplane in the host's namespace and the real etcd), served from
//! this test on a socket of its own, with no reconcile loop behind it. The
//! doctor's whole path (RPC, fresh etcd snapshot, kernel dump, diagnosis,
//! rendering, exit code) is the product's; only the repairs are held back.
//! Then the agent is thawed (SIGCONT), the test polls until the kernel is
//! right again, and `ovctl doctor` against the real agent exits 0.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ovnet_agent::api::AgentService;
use ovnet_agent::config::Listen;
use ovnet_agent::dataplane::{Dataplane, NetlinkDataplane};
use ovnet_agent::desired::HostContext;
use ovnet_agent::endpoint::Endpoints;
use ovnet_agent::metrics::Metrics;
use ovnet_agent::netns::block_on_in_netns;
use ovnet_agent::run::{bind, serve_api};
use ovnet_ipam_store::{EtcdStore, StoreConfig};
use ovnet_tests::lab::{bin_dir, poll};
use ovnet_tests::netns::run;
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);

/// The API of host `i`'s agent served from this process, without the loop.
struct Standby {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Standby {
    fn start(lab: &Lab, i: usize) -> anyhow::Result<Standby> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("standby.sock");
        let ns = PathBuf::from(lab.hosts[i].ns.path());
        let cfg = StoreConfig {
            endpoints: vec![lab.etcd.endpoint()],
            prefix: lab.prefix.clone(),
            ..StoreConfig::default()
        };
        let (node, vtep, listen) = (lab.hosts[i].name.clone(), lab.hosts[i].ip, Listen::Unix(socket.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up_tx, up_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let served = block_on_in_netns(&ns, move || async move {
                let service = match standby_service(cfg, node, vtep).await {
                    Ok(s) => s,
                    Err(e) => return up_tx.send(Err(format!("{e:#}"))).unwrap_or(()),
                };
                let listener = match bind(&listen).await {
                    Ok(l) => l,
                    Err(e) => return up_tx.send(Err(format!("{e:#}"))).unwrap_or(()),
                };
                let _ = up_tx.send(Ok(()));
                let _ = serve_api(listener, service, async {
                    let _ = stopped.await;
                })
                .await;
            });
            if let Err(e) = served {
                eprintln!("standby API: {e}");
            }
        });
        up_rx.recv_timeout(CONVERGE)?.map_err(anyhow::Error::msg)?;
        Ok(Standby { socket, stop: Some(stop), thread: Some(thread), _dir: dir })
    }

    fn ovctl(&self, args: &[&str]) -> Output {
        ovctl_at(&self.socket, args)
    }
}

async fn standby_service(
    cfg: StoreConfig,
    node: String,
    vtep: Ipv4Addr,
) -> anyhow::Result<AgentService<NetlinkDataplane>> {
    let store = EtcdStore::connect(cfg).await?;
    let dp = NetlinkDataplane::new()?;
    let underlay = dp.underlay(Some(vtep)).await?;
    let me = HostContext { node, vtep, underlay_mtu: underlay.mtu, control_plane: Default::default() };
    let (_, ready) = tokio::sync::watch::channel(Arc::new(ovnet_agent::reconcile::Ready::default()));
    let endpoints = Arc::new(Endpoints::new(store.clone(), dp.clone(), me, ready));
    Ok(AgentService::new(store, dp, endpoints, Metrics::new()))
}

impl Drop for Standby {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ovctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("ovctl"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .output()
        .expect("running ovctl")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn mac_of(ip: &str) -> String {
    let octets: Vec<String> = ip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect();
    format!("02:42:{}", octets.join(":"))
}

/// MTU of `dev` in host `i`'s namespace.
fn mtu(lab: &Lab, i: usize, dev: &str) -> Option<u64> {
    lab.hosts[i].ns.json("ip", &["link", "show", dev]).ok()?.first()?["mtu"].as_u64()
}

#[test]
fn doctor_reports_what_was_broken_by_hand_and_the_agent_repairs_it() {
    let mut lab = Lab::start(LabOptions { hosts: 2, lease_ttl: 30, ..Default::default() }).unwrap();
    lab.create_network(0, "-d overlay net").unwrap();
    lab.connected(0, "net", "c1").unwrap();
    let (_c2, ip2) = lab.connected(1, "net", "c2").unwrap();
    let mac2 = mac_of(&ip2);
    let h2 = lab.hosts[1].ip.to_string();
    let vx = lab.links(0).unwrap().into_iter().find(|l| l.starts_with("ovvx")).unwrap();
    poll("c2's FDB and neighbour entries on h1", CONVERGE, || {
        let fdb = lab.fdb(0).ok()?.iter().any(|e| e == &format!("{vx} {mac2} {h2}"));
        let neigh = lab.neigh(0).ok()?.iter().any(|e| e == &format!("{vx} {ip2} {mac2}"));
        (fdb && neigh).then_some(())
    })
    .unwrap();

    // Clean: exit 0, and the JSON says so too.
    let clean = lab.ovctl(0, &["doctor"]).unwrap();
    assert!(clean.status.success(), "{}\n{}", text(&clean), lab.logs());
    assert!(text(&clean).contains("h1: no problems (etcd revision "), "{}", text(&clean));
    let json: serde_json::Value = serde_json::from_str(&lab.ctl(0, "doctor --format json").unwrap()).unwrap();
    assert_eq!(json["problems"], 0, "{json}");
    let areas: BTreeSet<&str> =
        json["findings"].as_array().unwrap().iter().filter_map(|f| f["area"].as_str()).collect();
    for area in ["link", "veth", "mtu", "vxlan-port", "checksum"] {
        assert!(areas.contains(area), "no {area} check in {json}");
    }

    // Break three things by hand while h1's agent is frozen.
    lab.pause_agent(0).unwrap();
    let ns = lab.hosts[0].ns.name.clone();
    run(Command::new("bridge").args(["-n", &ns, "fdb", "del", &mac2, "dev", &vx, "dst", &h2, "self"]))
        .unwrap();
    lab.hosts[0].ns.ip(&["neigh", "del", &ip2, "dev", &vx]).unwrap();
    lab.hosts[0].ns.ip(&["link", "set", &vx, "mtu", "1400"]).unwrap();

    let standby = Standby::start(&lab, 0).unwrap();
    let broken = standby.ovctl(&["doctor"]);
    let report = text(&broken);
    assert_eq!(broken.status.code(), Some(4), "{report}");
    for want in [
        format!("missing FDB entry {mac2} -> {h2} on {vx}"),
        format!("fix: bridge fdb append {mac2} dev {vx} dst {h2} self permanent"),
        format!("missing neighbour entry {ip2} lladdr {mac2} on {vx}"),
        format!("fix: ip neigh replace {ip2} lladdr {mac2} dev {vx} nud permanent"),
        format!("MTU of {vx} is 1400, etcd says 1450"),
        "ovctl: doctor found ".to_string(),
    ] {
        assert!(report.contains(&want), "doctor did not report {want:?}:\n{report}");
    }
    let json = standby.ovctl(&["doctor", "--format", "json"]);
    assert_eq!(json.status.code(), Some(4));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let problems: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "problem")
        .filter_map(|f| f["area"].as_str())
        .collect();
    for area in ["fdb", "neigh", "mtu"] {
        assert!(problems.contains(&area), "no {area} problem in {json}");
    }
    drop(standby);

    // Thawed, the agent repairs each (woken by the netlink events it missed).
    let mark = lab.hosts[0].log().len();
    lab.resume_agent(0).unwrap();
    poll("h1's kernel repaired", CONVERGE, || {
        let fdb = lab.fdb(0).ok()?.iter().any(|e| e == &format!("{vx} {mac2} {h2}"));
        let neigh = lab.neigh(0).ok()?.iter().any(|e| e == &format!("{vx} {ip2} {mac2}"));
        (fdb && neigh && mtu(&lab, 0, &vx) == Some(1450)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let repairs = lab.hosts[0].log()[mark..].to_string();
    for change in [
        format!("bridge fdb append {mac2}"),
        format!("ip neigh replace {ip2}"),
        format!("ip link set {vx} mtu 1450"),
    ] {
        assert_eq!(repairs.matches(&change).count(), 1, "{change:?} logged once:\n{repairs}");
    }
    let clean = lab.ovctl(0, &["doctor"]).unwrap();
    assert!(clean.status.success(), "{}\n{}", text(&clean), lab.logs());
}

/// `ovctl doctor --help` names every area a finding can have, the firewall
/// included: an area added to the agent without a line there fails here.
#[test]
fn doctor_help_lists_every_area() {
    let out = Command::new(bin_dir().join("ovctl")).args(["doctor", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for area in ovnet_agent::doctor::Area::ALL {
        let line = format!("  {}  ", area.as_str());
        assert!(help.lines().any(|l| l.starts_with(&line)), "{:?} is not listed in:\n{help}", area.as_str());
    }
}
