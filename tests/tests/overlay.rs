//! Multi-host overlay in the lab: real etcd, real agents, real namespaces.

use std::time::Duration;

use ovnet_tests::lab::poll;
use ovnet_tests::netns::{Netns, ping};
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);

fn wait_ping(lab: &Lab, from: &str, ip: &str) {
    if let Err(e) = poll(&format!("{from} to ping {ip}"), CONVERGE, || ping(from, ip).then_some(())) {
        panic!("{e}\n{}", lab.logs());
    }
}

fn vni(lab: &Lab, network: &str) -> u64 {
    let out = lab.ovctl_ok(0, &["network", "inspect", network]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["vni"].as_u64().unwrap()
}

fn mac_of(ip: &str) -> String {
    let octets: Vec<String> = ip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect();
    format!("02:42:{}", octets.join(":"))
}

#[test]
fn network_appears_everywhere_and_containers_ping_all_pairs() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    let id = lab.ovctl_ok(1, &["network", "create", "-d", "overlay", "demo"]).unwrap();
    assert_eq!(id.len(), 16, "prints the network id: {id:?}");
    let vni = vni(&lab, "demo");
    let (br, vx) = (format!("ovbr{vni}"), format!("ovvx{vni}"));
    for i in 0..3 {
        poll("bridge and VXLAN device on every host within a second", Duration::from_secs(1), || {
            let links = lab.links(i).ok()?;
            (links.contains(&br) && links.contains(&vx)).then_some(())
        })
        .unwrap();
    }
    let cs: Vec<(String, String)> =
        (0..3).map(|i| lab.connected(i, "demo", &format!("c{}", i + 1)).unwrap()).collect();
    for (a, (ns, _)) in cs.iter().enumerate() {
        for (b, (_, ip)) in cs.iter().enumerate() {
            if a != b {
                wait_ping(&lab, ns, ip);
            }
        }
        // Every container reaches the anycast gateway on its own host.
        wait_ping(&lab, ns, "10.128.0.1");
        // Its interface has no IPv6 address, so connecting it sent no DAD,
        // router solicitation or MLD multicast to flood to the other hosts.
        let out = Netns::borrowed(ns).exec("ip", &["-6", "-o", "addr", "show", "dev", "eth0"]).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "eth0 in {ns} has IPv6 addresses");
    }

    let hosts: Vec<serde_json::Value> =
        serde_json::from_str(&lab.ctl(2, "host ls --format json").unwrap()).unwrap();
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    assert!(hosts.iter().all(|h| h["alive"] == true), "{hosts:?}");
    let table = lab.ctl(0, "host ls").unwrap();
    for h in ["h1", "h2", "h3"] {
        assert!(table.contains(h), "{table}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(2, "network inspect demo").unwrap()).unwrap();
    assert_eq!(inspect["endpoints"].as_array().unwrap().len(), 3, "{inspect}");
    assert_eq!(inspect["subnet"], "10.128.0.0/16");
    assert_eq!(inspect["blocks"].as_object().unwrap().len(), 3, "one block per host: {inspect}");
    // Each host: a flood entry toward each other host, FDB + neigh for the two remote containers.
    for i in 0..3 {
        let fdb = lab.fdb(i).unwrap();
        assert_eq!(fdb.iter().filter(|e| e.contains("00:00:00:00:00:00")).count(), 2, "{fdb:?}");
        assert_eq!(fdb.len(), 4, "{fdb:?}");
        assert_eq!(lab.neigh(i).unwrap().len(), 2);
        // IPv4 only: neither device has an IPv6 address (no link-local, so no
        // DAD, router solicitations or MLD reports flooded to the peers).
        for dev in [&br, &vx] {
            let out = lab.hosts[i].ns.exec("ip", &["-6", "-o", "addr", "show", "dev", dev]).unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{dev} on host {i} has IPv6 addresses");
        }
        // No second GRO pass after decapsulation (read with the ethtool binary,
        // independent of the agent's own encoding of the request).
        let out = lab.hosts[i].ns.exec("ethtool", &["-k", &vx]).unwrap();
        let features = String::from_utf8_lossy(&out.stdout);
        assert!(features.contains("generic-receive-offload: off"), "{vx} on host {i}: {features}");
    }
}

#[test]
fn a_second_network_is_isolated_from_the_first() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    lab.ctl(0, "network create -d overlay red").unwrap();
    lab.ctl(0, "network create -d overlay blue").unwrap();
    let (r1, r1_ip) = lab.connected(0, "red", "r1").unwrap();
    let (_r2, r2_ip) = lab.connected(1, "red", "r2").unwrap();
    let (b1, b1_ip) = lab.connected(0, "blue", "b1").unwrap();
    let (_b2, b2_ip) = lab.connected(1, "blue", "b2").unwrap();
    assert!(r1_ip.starts_with("10.128.") && b1_ip.starts_with("10.129."), "{r1_ip} {b1_ip}");
    wait_ping(&lab, &r1, &r2_ip);
    wait_ping(&lab, &b1, &b2_ip);
    for (from, to) in [(&r1, &b1_ip), (&r1, &b2_ip), (&b1, &r1_ip), (&b1, &r2_ip)] {
        assert!(!ping(from, to), "{from} reached {to} on another network");
    }
}

#[test]
fn disconnect_removes_entries_everywhere_and_frees_the_address() {
    let mut lab = Lab::start(LabOptions::default()).unwrap();
    lab.ctl(0, "network create -d overlay --subnet 10.50.0.0/24 net").unwrap();
    let (c1, _) = lab.connected(0, "net", "c1").unwrap();
    let (c2, ip2) = lab.connected(1, "net", "c2").unwrap();
    let mac2 = mac_of(&ip2);
    wait_ping(&lab, &c1, &ip2);
    for i in [0, 2] {
        poll("c2's entries on the others", CONVERGE, || {
            lab.fdb(i).ok()?.iter().any(|e| e.contains(&mac2)).then_some(())
        })
        .unwrap();
    }
    lab.ovctl_ok(1, &["network", "disconnect", "net", &c2]).unwrap();
    for i in [0, 2] {
        poll("c2's FDB and neighbour entries gone from the others", CONVERGE, || {
            let gone = !lab.fdb(i).ok()?.iter().any(|e| e.contains(&mac2))
                && !lab.neigh(i).ok()?.iter().any(|e| e.contains(&ip2));
            gone.then_some(())
        })
        .unwrap();
    }
    // h2 has no endpoints left: the others drop their flood entry toward it too.
    let h2 = lab.hosts[1].ip.to_string();
    poll("flood entry toward h2 gone", CONVERGE, || {
        (!lab.fdb(0).ok()?.iter().any(|e| e.ends_with(&h2))).then_some(())
    })
    .unwrap();
    assert!(!lab.links(1).unwrap().iter().any(|l| l.starts_with("ovve")), "veth removed");
    assert!(!ping(&c1, &ip2));
    // The freed address is handed out again, here to a new container on h2.
    let (_c3, ip3) = lab.connected(1, "net", "c3").unwrap();
    assert_eq!(ip3, ip2);
    let dump = lab.etcd_dump().unwrap();
    assert_eq!(dump.keys().filter(|k| k.contains("/endpoints/")).count(), 2, "{dump:?}");
}

#[test]
fn second_network_in_one_namespace_is_eth1_with_fixed_ip_and_no_second_default_route() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    lab.ctl(0, "network create -d overlay --subnet 10.91.0.0/16 front").unwrap();
    lab.ctl(0, "network create -d overlay --subnet 10.92.0.0/16 back").unwrap();
    let c = lab.container("multi").unwrap();
    assert_eq!(lab.ctl(0, &format!("network connect front {c}")).unwrap(), "10.91.0.2");
    assert_eq!(lab.ctl(0, &format!("network connect --ip 10.92.7.7 back {c}")).unwrap(), "10.92.7.7");
    let ns = ovnet_tests::Netns::borrowed(&c);
    let addrs = ns.json("ip", &["-4", "addr", "show"]).unwrap();
    let on = |ifname: &str| -> Vec<String> {
        addrs
            .iter()
            .filter(|l| l["ifname"] == ifname)
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
            .collect()
    };
    assert_eq!(on("eth0"), vec!["10.91.0.2/16"]);
    assert_eq!(on("eth1"), vec!["10.92.7.7/16"]);
    let routes = ns.json("ip", &["-4", "route", "show", "default"]).unwrap();
    assert_eq!(routes.len(), 1, "one default route: {routes:?}");
    assert_eq!(routes[0]["gateway"], "10.91.0.1");
    assert_eq!(routes[0]["dev"], "eth0");
    // Both networks work across hosts from the same namespace.
    let (_, front2) = lab.connected(1, "front", "f2").unwrap();
    let (_, back2) = lab.connected(1, "back", "b2").unwrap();
    wait_ping(&lab, &c, &front2);
    wait_ping(&lab, &c, &back2);
    // Disconnecting the second network leaves the first in place.
    lab.ctl(0, &format!("network disconnect back {c}")).unwrap();
    assert!(on("eth0").len() == 1 && ns.json("ip", &["link", "show", "eth1"]).is_err());
    wait_ping(&lab, &c, &front2);
}
