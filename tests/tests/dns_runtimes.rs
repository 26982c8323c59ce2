//! Names across hosts (#13) for container runtimes: Docker containers
//! (names and `--network-alias`es from the Engine API, dockerd's embedded
//! resolver forwarding to `--dns 169.254.53.53`) and podman containers
//! (`K8S_POD_NAME`, the `aliases` capability, resolv.conf from the CNI
//! result), beside a plain `ovctl` namespace, on different lab hosts.

use std::time::Duration;

use ovnet_tests::bench::docker::{synced_host, wait_mirrored};
use ovnet_tests::dns::getent;
use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::podman::{self, Podman};
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(20);

fn no_upstream(mut extra: Vec<String>) -> AgentOptions {
    extra.extend(["--resolv-conf".to_string(), "/dev/null".to_string()]);
    AgentOptions { extra_args: extra, ..Default::default() }
}

#[test]
fn docker_containers_resolve_names_and_aliases_across_hosts() {
    let opts = no_upstream(Vec::new());
    let mut lab = Lab::start_with(LabOptions { hosts: 3, ..Default::default() }, opts).unwrap();
    let d1 = synced_host(&mut lab, 0).unwrap();
    let mut d2 = synced_host(&mut lab, 1).unwrap();
    // h2's dockerd with the one setting of the README; h1's containers say
    // the same per container (`docker run --dns`).
    d2.stop_daemon().unwrap();
    d2.daemon_args = vec!["--dns".into(), "169.254.53.53".into()];
    d2.start_daemon().unwrap();
    lab.create_network(2, "-d overlay --subnet 10.75.0.0/16 blue").unwrap();
    wait_mirrored(&d1, "blue").unwrap();
    wait_mirrored(&d2, "blue").unwrap();
    let run = |d: &ovnet_tests::docker::Dockerd, name: &str, extra: &str| {
        d.run(&format!("run -d --name {name} --network blue {extra} {IMAGE} sleep 3600")).unwrap();
        let f = "{{with index .NetworkSettings.Networks \"blue\"}}{{.IPAddress}}{{end}}";
        d.docker_ok(&["inspect", "-f", f, name]).unwrap()
    };
    let web = run(&d1, "web", "--network-alias www --dns 169.254.53.53");
    let api = run(&d2, "api", "");
    assert!(
        web.parse::<std::net::Ipv4Addr>().is_ok() && api.parse::<std::net::Ipv4Addr>().is_ok(),
        "{web} {api}"
    );
    let plain = lab.container("plain").unwrap();
    let plain_ip = lab.ovctl_ok(2, &["network", "connect", "blue", &plain, "--name", "plain"]).unwrap();

    // From another host's Docker container, through Docker's embedded resolver.
    for name in ["web", "www", "web.blue"] {
        let what = format!("api (h2) to resolve {name}");
        let r = poll(&what, CONVERGE, || {
            let out = d2.docker(&["exec", "api", "nslookup", name]).ok()?;
            String::from_utf8_lossy(&out.stdout).contains(&web).then_some(())
        });
        if let Err(e) = r {
            panic!("{e}\n{}", lab.logs());
        }
    }
    let out = d2.docker(&["exec", "api", "ping", "-c1", "-W2", "web"]).unwrap();
    assert!(out.status.success(), "ping web from api: {}", String::from_utf8_lossy(&out.stdout));
    let out = d1.docker_ok(&["exec", "web", "nslookup", "plain"]).unwrap();
    assert!(out.contains(&plain_ip), "a Docker container finds an ovctl one: {out}");
    // And a plain namespace finds Docker containers by name and alias.
    for name in ["web", "www", "api.blue"] {
        poll(&format!("plain to resolve {name}"), CONVERGE, || getent(&plain, name)).unwrap();
    }
    assert_eq!(getent(&plain, "www").as_deref(), Some(web.as_str()));
    assert_eq!(getent(&plain, "api").as_deref(), Some(api.as_str()));
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ctl(2, "network inspect blue").unwrap()).unwrap();
    let e = inspect["endpoints"].as_array().unwrap().iter().find(|e| e["ip"] == web.as_str()).cloned();
    let e = e.unwrap();
    assert_eq!(e["name"], "web");
    assert!(e["aliases"].as_array().unwrap().contains(&"www".into()), "{e}");

    // Gone with its container.
    d1.run("rm -f web").unwrap();
    poll("web gone", CONVERGE, || getent(&plain, "web").is_none().then_some(())).unwrap();
    assert_eq!(lab.panics(), 0);
}

#[test]
fn podman_containers_resolve_names_and_aliases_across_hosts() {
    let dir = tempfile::Builder::new().prefix("ovdns").tempdir().unwrap();
    let opts = no_upstream(podman::agent_args(dir.path()));
    let lab = Lab::start_with(LabOptions { hosts: 2, ..Default::default() }, opts).unwrap();
    let pods: Vec<Podman> = (0..2)
        .map(|i| {
            Podman::start(&lab, i, dir.path(), &podman::conf_dir(dir.path(), &lab.hosts[i].name)).unwrap()
        })
        .collect();
    lab.create_network(0, "-d overlay --subnet 10.76.0.0/16 blue").unwrap();
    let conflist = podman::conf_dir(dir.path(), &lab.hosts[1].name).join("blue.conflist");
    poll("the conflist", CONVERGE, || conflist.exists().then_some(())).unwrap();
    let run = |p: &Podman, name: &str, extra: &[&str]| {
        let args =
            [&["run", "-d", "--name", name, "--network", "blue", "--cap-add", "NET_RAW"], extra].concat();
        p.ok(&[&args[..], &[IMAGE, "sleep", "3600"]].concat()).unwrap();
        p.ip(name, "blue").unwrap()
    };
    let web = run(&pods[0], "web", &["--network-alias", "www"]);
    let api = run(&pods[1], "api", &[]);
    assert!(
        web.parse::<std::net::Ipv4Addr>().is_ok() && api.parse::<std::net::Ipv4Addr>().is_ok(),
        "{web} {api}"
    );

    // podman wrote the CNI result's DNS into the container's resolv.conf.
    let conf = pods[1].ok(&["exec", "api", "cat", "/etc/resolv.conf"]).unwrap();
    assert!(conf.contains("nameserver 10.76.0.1") && conf.contains("blue"), "{conf}");
    for name in ["web", "www", "web.blue"] {
        let r = poll(&format!("api (h2) to resolve {name}"), CONVERGE, || {
            let out = pods[1].output(&["exec", "api", "nslookup", name]).ok()?;
            String::from_utf8_lossy(&out.stdout).contains(&web).then_some(())
        });
        if let Err(e) = r {
            panic!("{e}\n{}", lab.logs());
        }
    }
    assert!(pods[1].ping("api", "web"), "ping web by name");
    drop(pods);
    assert_eq!(lab.panics(), 0);
}
