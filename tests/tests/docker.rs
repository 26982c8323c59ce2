//! Docker containers on ovnet: a real dockerd (with Docker's defaults:
//! iptables on, FORWARD policy DROP) per lab host, driving the agent's
//! `ovnet` network and IPAM plugin.

use std::time::Duration;

use ovnet_tests::docker::{Dockerd, docker_host};
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

fn lab(hosts: usize) -> Lab {
    Lab::start(LabOptions { hosts, ..Default::default() }).unwrap()
}

/// `docker network create` of ovnet network `name` on `d`, with `extra`
/// flags (e.g. `--subnet CIDR`).
fn create(d: &Dockerd, name: &str, extra: &str) {
    d.run(&format!("network create -d ovnet --ipam-driver ovnet --ipam-opt network={name} {extra} {name}"))
        .unwrap();
}

/// The subnet of docker network `name` on `d`.
fn subnet(d: &Dockerd, name: &str) -> String {
    d.docker_ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", name]).unwrap()
}

/// Starts a container that sleeps on `network`; returns its address.
fn sleeper(d: &Dockerd, name: &str, network: &str) -> String {
    d.run(&format!("run -d --name {name} --network {network} {IMAGE} sleep 3600")).unwrap();
    address(d, name, network)
}

fn address(d: &Dockerd, name: &str, network: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    d.docker_ok(&["inspect", "-f", &format, name]).unwrap()
}

/// One ping from container `name` to `ip`.
fn pings(d: &Dockerd, name: &str, ip: &str) -> bool {
    d.docker(&["exec", name, "ping", "-c1", "-W1", ip]).map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn docker_containers_on_two_hosts_reach_each_other() {
    let mut lab = lab(2);
    let d1 = docker_host(&mut lab, 0).unwrap();
    let d2 = docker_host(&mut lab, 1).unwrap();
    create(&d1, "demo", "");
    create(&d2, "demo", &format!("--subnet {}", subnet(&d1, "demo")));
    let a = sleeper(&d1, "ca", "demo");
    let b = sleeper(&d2, "cb", "demo");
    poll("a reaches b across hosts", Duration::from_secs(10), || pings(&d1, "ca", &b).then_some(())).unwrap();
    assert!(pings(&d2, "cb", &a), "b reaches a");
    let mtu = d1.docker_ok(&["exec", "ca", "cat", "/sys/class/net/eth0/mtu"]).unwrap();
    assert_eq!(mtu, "1450", "underlay 1500 - 50");
}
