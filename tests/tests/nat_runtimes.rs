//! Published ports of real runtimes (#12): Docker's `-p` on a lab dockerd
//! (Docker's defaults: iptables on, FORWARD policy DROP, bridge netfilter)
//! and podman's `-p` through the CNI plugin's `portMappings` capability,
//! each reached from a namespace outside the cluster and gone with the
//! container.

use std::time::Duration;

use ovnet_tests::docker::docker_host;
use ovnet_tests::echo::OUTSIDE_IP;
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::netns::Netns;
use ovnet_tests::podman::{self, Podman};
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

fn outside(lab: &Lab) -> Netns {
    ovnet_tests::echo::outside(lab).unwrap()
}

/// A web server answering `hello-ovnet` on port 80, for `sh -c`.
const WEB: &str = "mkdir -p /www && echo hello-ovnet > /www/index.html && exec httpd -f -p 80 -h /www";

/// `GET /` of `url` from namespace `ns`: the body, if any came.
fn get(ns: &Netns, url: &str) -> Option<String> {
    let out = ns.exec("curl", &["-s", "--max-time", "2", url]).ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The DNAT rules of host `i`'s table.
fn dnat_rules(lab: &Lab, i: usize) -> usize {
    let out = lab.hosts[i].ns.exec("nft", &["list", "table", "inet", "ovnet"]).unwrap();
    String::from_utf8_lossy(&out.stdout).matches(" dnat ip to ").count()
}

#[test]
fn docker_run_p_8080_80_is_reached_from_outside() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let out = outside(&lab);
    let d = docker_host(&mut lab, 0).unwrap();
    d.run("network create -d ovnet --ipam-driver ovnet --ipam-opt network=demo demo").unwrap();
    let args = ["run", "-d", "--name", "web", "-p", "8080:80", "--network", "demo", IMAGE, "sh", "-c", WEB];
    d.docker_ok(&args).unwrap();
    let body = poll("the published port from outside", Duration::from_secs(15), || {
        get(&out, &format!("http://{}:8080/", lab.hosts[0].ip))
    })
    .unwrap();
    assert_eq!(body, "hello-ovnet");
    let inspect = lab.ctl(0, "network inspect demo").unwrap();
    assert!(inspect.contains("\"8080:80/tcp\""), "{inspect}");
    // The container reaches outside through dockerd's FORWARD policy DROP too.
    let _server = ovnet_tests::echo::Echo::start(&out.path(), 8000).unwrap();
    let seen = poll("the container to reach outside", Duration::from_secs(10), || {
        let out = d.docker(&["exec", "web", "sh", "-c", &format!("nc {OUTSIDE_IP} 8000 </dev/null")]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    })
    .unwrap();
    assert_eq!(seen, lab.hosts[0].ip.to_string());

    // Docker's --internal makes an internal ovnet network: no way out.
    d.run("network create -d ovnet --ipam-driver ovnet --ipam-opt network=sealed --internal sealed").unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(0, "network inspect sealed").unwrap()).unwrap();
    assert_eq!(inspect["internal"], true, "{inspect}");
    d.run(&format!("run -d --name cut --network sealed {IMAGE} sleep 3600")).unwrap();
    let cut =
        d.docker(&["exec", "cut", "sh", "-c", &format!("nc -w 2 {OUTSIDE_IP} 8000 </dev/null")]).unwrap();
    assert!(String::from_utf8_lossy(&cut.stdout).trim().is_empty(), "an internal container reached outside");
    // Docker never asks an internal network for external connectivity:
    // -p there publishes nothing (as with Docker's own internal bridges).
    let before = dnat_rules(&lab, 0);
    d.run(&format!("run -d --name cutp -p 9090:80 --network sealed {IMAGE} sleep 60")).unwrap();
    assert_eq!(dnat_rules(&lab, 0), before, "-p on an internal network published a port");
    d.run("rm -f cut cutp").unwrap();

    d.run("rm -f web").unwrap();
    poll("the DNAT rules to go", Duration::from_secs(10), || (dnat_rules(&lab, 0) == 0).then_some(()))
        .unwrap();
    assert_eq!(get(&out, &format!("http://{}:8080/", lab.hosts[0].ip)), None);
    record(&Outcome {
        category: "fault".into(),
        test: "docker_run_p_8080_80_is_reached_from_outside".into(),
        scenario:
            "docker run -p 8080:80 on an ovnet network of a lab dockerd (FORWARD policy DROP); GET from a \
                   namespace outside the cluster; the container calls out; docker network create --internal, a container \
                   there calls out, -p there; docker rm"
                .into(),
        held: "the page came through h1's address, the container reached outside as h1; the internal network \
               is internal in etcd, its container reached nothing and its -p published nothing; the DNAT rules went \
               with the container"
            .into(),
        operations: 6,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn podman_run_p_through_cni_is_reached_from_outside() {
    let dir = tempfile::Builder::new().prefix("ovcni").tempdir().unwrap();
    let opts = AgentOptions { extra_args: podman::agent_args(dir.path()), ..Default::default() };
    let lab = Lab::start_with(LabOptions { hosts: 1, ..Default::default() }, opts).unwrap();
    let out = outside(&lab);
    lab.create_network(0, "demo").unwrap();
    let conf = podman::conf_dir(dir.path(), &lab.hosts[0].name).join("demo.conflist");
    poll("the conflist", Duration::from_secs(10), || std::fs::read_to_string(&conf).ok()).unwrap();
    let pod = Podman::start(&lab, 0, dir.path(), &podman::conf_dir(dir.path(), &lab.hosts[0].name)).unwrap();
    let args = ["run", "-d", "--name", "web", "--network", "demo", "-p", "8081:80", IMAGE, "sh", "-c", WEB];
    pod.ok(&args).unwrap();
    let url = format!("http://{}:8081/", lab.hosts[0].ip);
    let body = poll("the published port from outside", Duration::from_secs(15), || get(&out, &url)).unwrap();
    assert_eq!(body, "hello-ovnet");
    pod.ok(&["rm", "-f", "web"]).unwrap();
    poll("the DNAT rules to go", Duration::from_secs(10), || (dnat_rules(&lab, 0) == 0).then_some(()))
        .unwrap();
    assert_eq!(get(&out, &url), None);
    record(&Outcome {
        category: "fault".into(),
        test: "podman_run_p_through_cni_is_reached_from_outside".into(),
        scenario: "podman run -p 8081:80 with the ovnet CNI plugin (portMappings capability); GET from a \
                   namespace outside the cluster; podman rm"
            .into(),
        held: "the page came through h1's address and the DNAT rules went with the container".into(),
        operations: 2,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}
