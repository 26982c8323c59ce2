//! Bad input: each is refused with an error naming the problem, a non-zero
//! exit, and nothing written to etcd or the kernel.

use ovnet_tests::{Lab, LabOptions};

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap()
}

/// Runs `ovctl COMMAND` on host 1 and checks it fails with `expect` in its
/// message while etcd, the host's kernel and the named containers stay as they were.
fn refused(lab: &Lab, command: &str, expect: &str) {
    let args: Vec<&str> = command.split_whitespace().collect();
    // The addresses of every lab container named in the command.
    let containers = || -> Vec<String> {
        args.iter()
            .filter(|a| a.starts_with("ovl"))
            .map(|ns| {
                ovnet_tests::netns::ip(&["-n", ns, "-br", "addr"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default()
            })
            .collect()
    };
    let etcd_before = lab.etcd_dump().unwrap();
    let kernel_before = lab.kernel(0).unwrap();
    let ns_before = containers();
    let out = lab.ovctl(0, &args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ovctl {command} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "ovctl {command}: expected {expect:?} in the error, got: {stderr}"
    );
    assert!(!stderr.contains("Status {"), "a debug dump instead of a message: {stderr}");
    assert_eq!(lab.etcd_dump().unwrap(), etcd_before, "ovctl {command} wrote to etcd");
    assert_eq!(lab.kernel(0).unwrap(), kernel_before, "ovctl {command} changed the kernel");
    assert_eq!(containers(), ns_before, "ovctl {command} changed the container");
}

#[test]
fn invalid_cidr() {
    let lab = lab();
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/33 n", "10.0.0.0/33");
    refused(&lab, "network create -d overlay --subnet banana n", "banana");
    refused(&lab, "network create -d overlay --subnet 10.1.2.3/16 n", "10.1.0.0/16");
}

#[test]
fn subnet_overlapping_another_network() {
    let lab = lab();
    lab.create_network(0, "-d overlay --subnet 10.60.0.0/16 a").unwrap();
    refused(&lab, "network create -d overlay --subnet 10.60.4.0/24 b", "overlaps");
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/8 b", "overlaps");
}

#[test]
fn vni_taken_or_out_of_range() {
    let lab = lab();
    lab.create_network(0, "-d overlay --vni 5000 a").unwrap();
    refused(&lab, "network create -d overlay --vni 5000 b", "VNI 5000");
    refused(&lab, "network create -d overlay --vni 0 b", "0 is not in 1..=16777215");
    refused(&lab, "network create -d overlay --vni 16777216 b", "16777216 is not in 1..=16777215");
}

#[test]
fn duplicate_name() {
    let lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    refused(&lab, "network create -d overlay a", "already exists");
}

#[test]
fn unsupported_driver() {
    let lab = lab();
    refused(&lab, "network create -d macvlan a", "supported drivers: overlay");
}

#[test]
fn unknown_network() {
    let mut lab = lab();
    let c = lab.container("c").unwrap();
    refused(&lab, &format!("network connect nope {c}"), "nope");
    refused(&lab, "network inspect nope", "nope");
    refused(&lab, "network rm nope", "nope");
    refused(&lab, &format!("network disconnect nope {c}"), "nope");
}

#[test]
fn unknown_netns() {
    let lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    refused(&lab, &format!("network connect a ovl{}-ghost", lab.id), "does not exist");
    refused(&lab, "network connect a /proc/self/status", "not a network namespace");
}

#[test]
fn address_exhausted() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay --subnet 10.70.0.0/30 tiny").unwrap();
    let (_c1, ip) = lab.connected(0, "tiny", "c1").unwrap();
    assert_eq!(ip, "10.70.0.2", "a /30 has one address besides the gateway");
    let c2 = lab.container("c2").unwrap();
    refused(&lab, &format!("network connect tiny {c2}"), "no free address");
}

#[test]
fn network_in_use_cannot_be_removed() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    let (c, _) = lab.connected(0, "a", "c").unwrap();
    refused(&lab, "network rm a", "endpoint");
    lab.ctl(0, &format!("network disconnect a {c}")).unwrap();
    lab.ctl(0, "network rm a").unwrap();
    ovnet_tests::lab::poll("devices of the removed network gone", std::time::Duration::from_secs(10), || {
        lab.links(0).ok()?.is_empty().then_some(())
    })
    .unwrap();
}

#[test]
fn namespace_already_connected() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    let (c, _) = lab.connected(0, "a", "c").unwrap();
    refused(&lab, &format!("network connect a {c}"), "already connected");
    // The same namespace by its path.
    refused(&lab, &format!("network connect a /run/netns/{c}"), "already connected");
}
