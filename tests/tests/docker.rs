//! Docker containers on ovnet: a real dockerd per lab host, driving the
//! agent's `ovnet` network and IPAM plugin.

use ovnet_tests::docker::docker_host;
use ovnet_tests::image::IMAGE;
use ovnet_tests::{Lab, LabOptions};

fn lab(hosts: usize) -> Lab {
    Lab::start(LabOptions { hosts, ..Default::default() }).unwrap()
}

#[test]
fn lab_dockerd_runs_containers() {
    let mut lab = lab(1);
    let d = docker_host(&mut lab, 0).unwrap();
    let out = d.docker_ok(&["run", "--rm", IMAGE, "hostname"]).unwrap();
    assert!(!out.is_empty());
    let hostname = d.docker_ok(&["info", "--format", "{{.Name}}"]).unwrap();
    assert_eq!(hostname, "h1");
}
