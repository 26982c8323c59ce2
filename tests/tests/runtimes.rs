//! Docker and podman containers on one ovnet network: a dockerd on h1 and
//! h2 (the `ovnet` Docker plugin), podman on h3 (the `ovnet` CNI plugin),
//! every container reaching every other across hosts.

use std::time::Duration;

use ovnet_tests::docker::{Dockerd, docker_host};
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::podman::{self, Podman};
use ovnet_tests::{Lab, LabOptions};

/// Starts a Docker container that sleeps on `network`; returns its address.
fn docker_sleeper(d: &Dockerd, name: &str, network: &str) -> String {
    d.run(&format!("run -d --name {name} --network {network} {IMAGE} sleep 3600")).unwrap();
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    d.docker_ok(&["inspect", "-f", &format, name]).unwrap()
}

/// A container somewhere: pings from it with one-second deadlines.
enum Ctr<'a> {
    Docker(&'a Dockerd, &'static str),
    Podman(&'a Podman, &'static str),
}

impl Ctr<'_> {
    fn ping(&self, ip: &str) -> bool {
        match self {
            Ctr::Docker(d, name) => {
                d.docker(&["exec", name, "ping", "-c1", "-W1", ip]).is_ok_and(|o| o.status.success())
            }
            Ctr::Podman(p, name) => p.ping(name, ip),
        }
    }

    fn name(&self) -> String {
        match self {
            Ctr::Docker(d, name) => format!("docker {name} on {}", d.host),
            Ctr::Podman(p, name) => format!("podman {name} on {}", p.host),
        }
    }
}

#[test]
fn docker_on_two_hosts_and_podman_on_a_third_all_reach_each_other() {
    // Declared in reverse order of teardown: containers go first, the
    // directory of the conflists last.
    let dir = tempfile::Builder::new().prefix("ovrt").tempdir().unwrap();
    let opts = AgentOptions { extra_args: podman::agent_args(dir.path()), ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 3, ..Default::default() }, opts).unwrap();
    lab.create_network(0, "demo").unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(0, "network inspect demo").unwrap()).unwrap();
    let subnet = inspect["subnet"].as_str().unwrap().to_string();
    let d1 = docker_host(&mut lab, 0).unwrap();
    let d2 = docker_host(&mut lab, 1).unwrap();
    let conf_dir = podman::conf_dir(dir.path(), "h3");
    let p3 = Podman::start(&lab, 2, dir.path(), &conf_dir).unwrap();
    for d in [&d1, &d2] {
        let create = format!(
            "network create -d ovnet --ipam-driver ovnet --ipam-opt network=demo --subnet {subnet} demo"
        );
        d.run(&create).unwrap();
    }
    let conflist = conf_dir.join("demo.conflist");
    poll("h3's conflist", Duration::from_secs(10), || conflist.exists().then_some(())).unwrap();

    let ip1 = docker_sleeper(&d1, "w1", "demo");
    let ip2 = docker_sleeper(&d2, "w2", "demo");
    p3.run("p3", "demo").unwrap();
    let ip3 = p3.ip("p3", "demo").unwrap();
    let all = [(Ctr::Docker(&d1, "w1"), ip1), (Ctr::Docker(&d2, "w2"), ip2), (Ctr::Podman(&p3, "p3"), ip3)];
    for (from, _) in &all {
        for (to, ip) in &all {
            if from.name() == to.name() {
                continue;
            }
            let what = format!("{} to reach {} at {ip}", from.name(), to.name());
            poll(&what, Duration::from_secs(10), || from.ping(ip).then_some(())).unwrap();
        }
    }
    let mtu = p3.ok(&["exec", "p3", "cat", "/sys/class/net/eth0/mtu"]).unwrap();
    let docker_mtu = d1.docker_ok(&["exec", "w1", "cat", "/sys/class/net/eth0/mtu"]).unwrap();
    assert_eq!((mtu.as_str(), docker_mtu.as_str()), ("1450", "1450"), "underlay 1500 - 50 for both runtimes");
    assert_eq!(lab.panics(), 0);
}
