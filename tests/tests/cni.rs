//! The `ovnet` CNI plugin: real podman (CNI backend) on lab hosts using the
//! conflists the agents keep in their `--cni-conf-dir`, and the plugin
//! binary run by hand as a runtime would, for bad input and for a DEL while
//! the agent is down.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ovnet_tests::image::IMAGE;
use ovnet_tests::lab::{AgentOptions, bin_dir, poll};
use ovnet_tests::podman::{self, Podman};
use ovnet_tests::{Lab, LabOptions};
use serde_json::{Value, json};

/// A lab whose agents keep conflists, with a podman per host. Fields drop
/// in order: the containers go (a CNI DEL each) while the agents still run.
struct PodLab {
    pods: Vec<Podman>,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl PodLab {
    fn start(hosts: usize) -> PodLab {
        let dir = tempfile::Builder::new().prefix("ovcni").tempdir().unwrap();
        let opts = AgentOptions { extra_args: podman::agent_args(dir.path()), ..Default::default() };
        let lab = Lab::start_with(LabOptions { hosts, ..Default::default() }, opts).unwrap();
        let pods = (0..hosts)
            .map(|i| Podman::start(&lab, i, dir.path(), &conf_dir_of(&dir, &lab, i)).unwrap())
            .collect();
        PodLab { pods, lab, dir }
    }

    /// Host `i`'s conflist of `network`.
    fn conflist(&self, i: usize, network: &str) -> PathBuf {
        conf_dir_of(&self.dir, &self.lab, i).join(format!("{network}.conflist"))
    }
}

fn conf_dir_of(dir: &tempfile::TempDir, lab: &Lab, i: usize) -> PathBuf {
    podman::conf_dir(dir.path(), &lab.hosts[i].name)
}

/// The endpoint records in etcd (all networks).
fn endpoints(lab: &Lab) -> Vec<Value> {
    let dump = lab.etcd_dump().unwrap();
    let prefix = format!("{}/endpoints/", lab.prefix);
    dump.iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .collect()
}

/// Host `i`'s veths of ours.
fn veths(lab: &Lab, i: usize) -> Vec<String> {
    lab.links(i).unwrap().into_iter().filter(|l| l.starts_with("ovve") || l.starts_with("ovtp")).collect()
}

fn underlay_mtu(lab: &Lab, i: usize) -> u64 {
    let link = lab.hosts[i].ns.json("ip", &["link", "show", "eth0"]).unwrap();
    link[0]["mtu"].as_u64().unwrap()
}

#[test]
fn podman_containers_on_two_hosts_ping_and_leave_nothing_behind() {
    let mut pl = PodLab::start(2);
    pl.lab.create_network(0, "demo").unwrap();
    conflists_are_ovctls(&pl, "demo");
    let (lab, pods) = (&pl.lab, &pl.pods);

    let id_a = pods[0].run("a", "demo").unwrap();
    let id_b = pods[1].run("b", "demo").unwrap();
    let (ip_a, ip_b) = (pods[0].ip("a", "demo").unwrap(), pods[1].ip("b", "demo").unwrap());
    assert!(ip_a.starts_with("10.") && ip_b.starts_with("10.") && ip_a != ip_b, "{ip_a} {ip_b}");
    poll("a reaches b", Duration::from_secs(10), || pods[0].ping("a", &ip_b).then_some(())).unwrap();
    poll("b reaches a", Duration::from_secs(10), || pods[1].ping("b", &ip_a).then_some(())).unwrap();
    let mtu = pods[0].ok(&["exec", "a", "cat", "/sys/class/net/eth0/mtu"]).unwrap();
    assert_eq!(mtu, (underlay_mtu(lab, 0) - 50).to_string(), "MTU inside = underlay - 50");

    let eps = endpoints(lab);
    let ep_a = eps.iter().find(|e| e["container"]["id"] == json!(id_a)).expect("a's endpoint in etcd");
    assert_eq!((&ep_a["container"]["runtime"], &ep_a["container"]["name"]), (&json!("cni"), &json!("a")));
    assert_eq!((&ep_a["ip"], &ep_a["host"]), (&json!(ip_a), &json!("h1")));
    assert_eq!(veths(lab, 0).len(), 1);
    fixed_addresses(&pods[1], &ip_b);

    let sandbox = pods[0].ok(&["inspect", "--format", "{{.NetworkSettings.SandboxKey}}", "a"]).unwrap();
    assert!(Path::new(&sandbox).exists(), "{sandbox}");
    pods[0].ok(&["rm", "-f", "-t", "0", "a"]).unwrap();
    let eps = endpoints(lab);
    assert!(!eps.iter().any(|e| e["container"]["id"] == json!(id_a) || e["ip"] == json!(ip_a)), "{eps:?}");
    assert_eq!(veths(lab, 0), Vec::<String>::new(), "no veth left on h1");
    assert!(!Path::new(&sandbox).exists(), "the container's namespace is gone");
    assert!(eps.iter().any(|e| e["container"]["id"] == json!(id_b)), "b untouched");
    pods[1].ok(&["rm", "-f", "-t", "0", "b"]).unwrap();
    assert_eq!(endpoints(lab), Vec::<Value>::new());
    assert_eq!(veths(lab, 1), Vec::<String>::new());

    rm_while_the_agent_is_down(&mut pl);
    pl.lab.ctl(1, "network rm demo").unwrap();
    for i in 0..2 {
        let file = pl.conflist(i, "demo");
        poll("the conflist removed with the network", Duration::from_secs(10), || {
            (!file.exists()).then_some(())
        })
        .unwrap();
    }
    assert_eq!(pl.lab.panics(), 0);
}

/// Every host's conflist of `network` is there, names its agent, and is
/// what `ovctl network conflist` prints.
fn conflists_are_ovctls(pl: &PodLab, network: &str) {
    for (i, host) in pl.lab.hosts.iter().enumerate() {
        let file = pl.conflist(i, network);
        let text = poll("the conflist on every host", Duration::from_secs(10), || {
            std::fs::read_to_string(&file).ok()
        })
        .unwrap();
        let printed = pl.lab.ovctl_ok(i, &["network", "conflist", network]).unwrap();
        assert_eq!(text.trim(), printed, "ovctl prints the same");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["plugins"][0]["agent"], format!("unix://{}", host.socket.display()));
    }
}

/// Fixed addresses: `podman run --ip` (podman passes it in the `ips`
/// capability the conflist declares) and `IP=` in `CNI_ARGS` (podman
/// passes its environment's on).
fn fixed_addresses(pod: &Podman, beside: &str) {
    let net = beside.rsplit_once('.').map(|(net, _)| net.to_string()).unwrap();
    let (by_flag, by_args) = (format!("{net}.200"), format!("{net}.201"));
    let run = |name: &str, ip: Option<&str>| {
        let mut args = vec!["run", "-d", "--name", name, "--network", "demo"];
        args.extend(ip.map(|ip| ["--ip", ip]).iter().flatten());
        args.extend([IMAGE, "sleep", "3600"]);
        pod.command(&args)
    };
    let out = run("d1", Some(&by_flag)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("d2", None).env("CNI_ARGS", format!("IP={by_args}")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pod.ip("d1", "demo").unwrap(), by_flag);
    assert_eq!(pod.ip("d2", "demo").unwrap(), by_args);
    let inside = pod.ok(&["exec", "d1", "ip", "-4", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(inside.contains(&format!("{by_flag}/")), "{inside}");
    pod.ok(&["rm", "-f", "-t", "0", "d1", "d2"]).unwrap();
}

/// `podman rm -f` while h1's agent is down: podman logs the failed DEL
/// (code 11) and removes the container anyway; once the agent is back,
/// nothing of it is left.
fn rm_while_the_agent_is_down(pl: &mut PodLab) {
    let id = pl.pods[0].run("c", "demo").unwrap();
    pl.lab.kill_agent(0);
    pl.pods[0].output(&["rm", "-f", "-t", "0", "c"]).unwrap();
    pl.lab.start_agent(0).unwrap();
    let lab = &pl.lab;
    poll("c's endpoint released", Duration::from_secs(15), || {
        (!endpoints(lab).iter().any(|e| e["container"]["id"] == json!(id))).then_some(())
    })
    .unwrap();
    poll("c's veth gone", Duration::from_secs(15), || veths(lab, 0).is_empty().then_some(())).unwrap();
    assert_eq!(pl.pods[0].ok(&["ps", "-a", "--format", "{{.Names}}"]).unwrap(), "", "c removed");
}

/// Runs the plugin binary as a runtime would: `env` and `stdin`; returns
/// whether it exited 0 and the JSON it printed (Null for nothing).
fn plugin(env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let mut child = Command::new(bin_dir().join("ovnet"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (out.status.success(), value)
}

fn conf(lab: &Lab, network: &str) -> String {
    json!({"cniVersion": "1.0.0", "name": network, "type": "ovnet",
           "agent": format!("unix://{}", lab.hosts[0].socket.display())})
    .to_string()
}

#[test]
fn bad_plugin_input_is_a_cni_error_and_changes_nothing() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.create_network(0, "demo").unwrap();
    let ns = lab.container("c1").unwrap();
    let netns = format!("/run/netns/{ns}");
    let good =
        [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "ctr1"), ("CNI_NETNS", &netns), ("CNI_IFNAME", "eth0")];
    let without = |key: &str| good.iter().copied().filter(|(k, _)| *k != key).collect::<Vec<_>>();
    let (etcd_before, kernel_before) = (lab.etcd_dump().unwrap(), lab.kernel(0).unwrap());
    let missing_ns = [
        ("CNI_NETNS", "/run/netns/ovnet-no-such-ns"),
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "x"),
        ("CNI_IFNAME", "eth0"),
    ];
    let old = conf(&lab, "demo").replace("1.0.0", "0.2.0");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u64, &'a str);
    let cases: Vec<Case> = vec![
        ("garbage stdin", good.to_vec(), "garbage".into(), 6, "cannot decode"),
        ("empty stdin", good.to_vec(), String::new(), 6, "cannot decode"),
        ("unknown network", good.to_vec(), conf(&lab, "nope"), 100, "nope"),
        ("no CNI_NETNS", without("CNI_NETNS"), conf(&lab, "demo"), 4, "CNI_NETNS is not set"),
        (
            "no CNI_CONTAINERID",
            without("CNI_CONTAINERID"),
            conf(&lab, "demo"),
            4,
            "CNI_CONTAINERID is not set",
        ),
        ("no CNI_COMMAND", without("CNI_COMMAND"), conf(&lab, "demo"), 4, "CNI_COMMAND is not set"),
        ("old version", good.to_vec(), old, 1, "0.2.0"),
        ("no such namespace", missing_ns.to_vec(), conf(&lab, "demo"), 101, "ovnet-no-such-ns"),
    ];
    for (what, env, stdin, code, words) in cases {
        let (ok, out) = plugin(&env, &stdin);
        assert!(!ok, "{what}: exit 0");
        assert_eq!(out["code"].as_u64(), Some(code), "{what}: {out}");
        let text = format!("{} {}", out["msg"], out["details"]);
        assert!(text.contains(words), "{what}: {out}");
        assert!(out["cniVersion"].is_string(), "{what}: {out}");
    }
    assert_eq!(lab.etcd_dump().unwrap(), etcd_before, "etcd unchanged");
    assert_eq!(lab.kernel(0).unwrap(), kernel_before, "kernel unchanged");
    let links = ovnet_tests::Netns::borrowed(&ns).json("ip", &["link", "show"]).unwrap();
    assert_eq!(links.len(), 1, "only lo in the container: {links:?}");

    let (ok, out) = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert!(ok);
    assert_eq!(
        out,
        json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]})
    );
}

#[test]
fn add_check_del_and_a_del_while_the_agent_is_down() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.create_network(0, "demo").unwrap();
    let subnet: Value = serde_json::from_str(&lab.ctl(0, "network inspect demo").unwrap()).unwrap();
    let fixed = subnet["subnet"].as_str().unwrap().replace(".0.0/16", ".0.77");
    let ns = lab.container("c1").unwrap();
    let netns = format!("/run/netns/{ns}");
    let args = format!("IgnoreUnknown=1;K8S_POD_NAME=web;IP={fixed}");
    let env = |cmd: &'static str, id: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", args.as_str()),
        ]
    };
    let (ok, result) = plugin(&env("ADD", "ctr1"), &conf(&lab, "demo"));
    assert!(ok, "{result}");
    assert_eq!(result["ips"][0]["address"], format!("{fixed}/16"));
    assert_eq!(result["interfaces"][0]["sandbox"], netns.as_str());
    assert_eq!(result["interfaces"][0]["name"], "net1");
    let inside = ovnet_tests::Netns::borrowed(&ns).json("ip", &["-4", "addr", "show", "net1"]).unwrap();
    assert_eq!(inside[0]["addr_info"][0]["local"], fixed.as_str(), "the address is in the container");
    let eps = endpoints(&lab);
    assert_eq!((&eps[0]["container"]["id"], &eps[0]["container"]["name"]), (&json!("ctr1"), &json!("web")));

    let with_prev = conf(&lab, "demo").replace('}', &format!(r#","prevResult":{result}}}"#));
    assert_eq!(plugin(&env("CHECK", "ctr1"), &with_prev), (true, Value::Null));
    let (ok, out) = plugin(&env("CHECK", "other"), &with_prev);
    assert_eq!((ok, out["code"].as_u64()), (false, Some(102)));
    for _ in 0..2 {
        assert_eq!(
            plugin(&env("DEL", "ctr1"), &conf(&lab, "demo")),
            (true, Value::Null),
            "DEL is idempotent"
        );
    }
    assert_eq!(endpoints(&lab), Vec::<Value>::new());
    assert_eq!(veths(&lab, 0), Vec::<String>::new());

    // The agent is down for a DEL: try again later, and nothing leaks once it is back.
    let (ok, _) = plugin(&env("ADD", "ctr2"), &conf(&lab, "demo"));
    assert!(ok);
    lab.kill_agent(0);
    let (ok, out) = plugin(&env("DEL", "ctr2"), &conf(&lab, "demo"));
    assert_eq!((ok, out["code"].as_u64()), (false, Some(11)), "{out}");
    lab.delete_container(&ns);
    lab.start_agent(0).unwrap();
    poll("the dead endpoint released", Duration::from_secs(15), || endpoints(&lab).is_empty().then_some(()))
        .unwrap();
    assert_eq!(veths(&lab, 0), Vec::<String>::new());
    let gone = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "ctr2"), ("CNI_IFNAME", "net1")];
    assert_eq!(plugin(&gone, &conf(&lab, "demo")), (true, Value::Null), "a DEL after the agent released it");
    assert_eq!(lab.panics(), 0);
}
