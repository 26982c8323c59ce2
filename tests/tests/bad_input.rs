//! Bad input: each is refused with an error naming the problem, a non-zero
//! exit, and nothing written to etcd or the kernel. Each test records how
//! many commands it saw refused in the reliability report.

use std::cell::Cell;
use std::process::{Child, Command, Stdio};

use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

fn lab() -> Lab {
    Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap()
}

thread_local! {
    /// Commands refused so far by this test's thread.
    static REFUSED: Cell<u64> = const { Cell::new(0) };
}

/// Runs `ovctl COMMAND` on host 1 and checks it fails with `expect` in its
/// message while etcd, the host's kernel and the named containers stay as they were.
fn refused(lab: &Lab, command: &str, expect: &str) {
    refused_args(lab, &command.split_whitespace().collect::<Vec<_>>(), expect)
}

/// `refused` with the arguments given one by one (for empty ones or spaces).
fn refused_args(lab: &Lab, args: &[&str], expect: &str) {
    let command = format!("{args:?}");
    // The addresses of every lab container named in the command.
    let containers = || -> Vec<String> {
        args.iter()
            .filter_map(|a| a.strip_prefix("/run/netns/").or(Some(a)))
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
    let out = lab.ovctl(0, args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ovctl {command} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "ovctl {command}: expected {expect:?} in the error, got: {stderr}"
    );
    assert!(!stderr.contains("Status {"), "a debug dump instead of a message: {stderr}");
    assert!(!stderr.contains("panicked"), "ovctl panicked: {stderr}");
    assert_eq!(lab.etcd_dump().unwrap(), etcd_before, "ovctl {command} wrote to etcd");
    assert_eq!(lab.kernel(0).unwrap(), kernel_before, "ovctl {command} changed the kernel");
    assert_eq!(containers(), ns_before, "ovctl {command} changed the container");
    REFUSED.with(|n| n.set(n.get() + 1));
}

/// Records the test's row once its assertions passed: every refused
/// command is an operation, and no agent may have panicked.
fn report(lab: &Lab, test: &str, scenario: &str) {
    assert_eq!(lab.panics(), 0, "an agent panicked:\n{}", lab.logs());
    record(&Outcome {
        category: "bad input".into(),
        test: test.into(),
        scenario: scenario.into(),
        held: "each refused with a message naming the problem and a non-zero exit; etcd, the host's \
               kernel and the containers unchanged"
            .into(),
        operations: REFUSED.with(Cell::get),
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn invalid_cidr() {
    let lab = lab();
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/33 n", "10.0.0.0/33");
    refused(&lab, "network create -d overlay --subnet banana n", "banana");
    refused(&lab, "network create -d overlay --subnet 10.1.2.3/16 n", "10.1.0.0/16");
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/7 n", "between /8 and /30");
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/31 n", "between /8 and /30");
    report(
        &lab,
        "invalid_cidr",
        "network create with a /33, a word, host bits set, a /7 and a /31 as --subnet",
    );
}

#[test]
fn subnet_overlapping_another_network() {
    let lab = lab();
    lab.create_network(0, "-d overlay --subnet 10.60.0.0/16 a").unwrap();
    refused(&lab, "network create -d overlay --subnet 10.60.4.0/24 b", "overlaps");
    refused(&lab, "network create -d overlay --subnet 10.0.0.0/8 b", "overlaps");
    report(&lab, "subnet_overlapping_another_network", "network create inside and around an existing subnet");
}

#[test]
fn vni_taken_or_out_of_range() {
    let lab = lab();
    lab.create_network(0, "-d overlay --vni 5000 a").unwrap();
    refused(&lab, "network create -d overlay --vni 5000 b", "VNI 5000");
    refused(&lab, "network create -d overlay --vni 0 b", r#"invalid --vni "0": must be from 1 to 16777215"#);
    refused(
        &lab,
        "network create -d overlay --vni 16777216 b",
        r#"invalid --vni "16777216": must be from 1 to 16777215"#,
    );
    refused(&lab, "network create -d overlay --vni 4294967296 b", "4294967296");
    refused(&lab, "network create -d overlay --vni -1 b", "-1");
    refused(&lab, "network create -d overlay --vni x b", "invalid digit");
    report(&lab, "vni_taken_or_out_of_range", "network create with a used VNI, 0, 2^24, 2^32, -1 and a word");
}

#[test]
fn invalid_network_names() {
    let mut lab = lab();
    let long: &'static str = "n".repeat(65).leak();
    let create = |name: &'static str| vec!["network", "create", "-d", "overlay", "--", name];
    for (name, why) in [
        ("", "it is empty"),
        (long, "it is longer than 64 characters"),
        ("-a", "it must start with a letter or digit"),
        (".a", "it must start with a letter or digit"),
        ("a/b", "it contains a character other than"),
        ("a b", "it contains a character other than"),
        ("a\tb", "it contains a character other than"),
        ("blå", "it contains a character other than"),
        ("a:b", "it contains a character other than"),
    ] {
        refused_args(&lab, &create(name), &format!("invalid network name {name:?}: {why}"));
    }
    // Names that cannot exist are refused as such by every command.
    let c = lab.container("c").unwrap();
    for args in [
        vec!["network", "inspect", "a/b"],
        vec!["network", "rm", ""],
        vec!["network", "rm", "a/b"],
        vec!["network", "connect", "../x", &c],
        vec!["network", "disconnect", "", &c],
    ] {
        refused_args(&lab, &args, "invalid network name");
    }
    report(
        &lab,
        "invalid_network_names",
        "network names empty, 65 characters, starting with - or ., with / space tab å or :, in create, \
         inspect, rm, connect and disconnect",
    );
}

#[test]
fn mtu_out_of_range() {
    let lab = lab();
    for mtu in ["0", "67", "9001", "65536"] {
        refused(&lab, &format!("network create -d overlay --mtu {mtu} n"), &format!("invalid MTU {mtu}"));
    }
    // The lab's underlay has MTU 1500, so VXLAN leaves 1450.
    refused(&lab, "network create -d overlay --mtu 1451 n", "at most 1450");
    refused(&lab, "network create -d overlay --mtu 4294967296 n", "4294967296");
    refused(&lab, "network create -d overlay --mtu -1 n", "-1");
    report(
        &lab,
        "mtu_out_of_range",
        "network create with MTU 0, 67, 9001, 65536, 1451 (> underlay - 50), 2^32, -1",
    );
}

#[test]
fn block_prefix_shorter_than_the_subnet_or_too_long() {
    let lab = lab();
    let with = |subnet: &str, len: &str| {
        format!("network create -d overlay --subnet {subnet} --block-prefix {len} n")
    };
    refused(&lab, &with("10.80.0.0/16", "8"), "invalid block prefix /8 for subnet 10.80.0.0/16");
    refused(&lab, &with("10.80.0.0/16", "15"), "its prefix must be /16 or longer");
    refused(&lab, &with("10.80.0.0/24", "23"), "its prefix must be /24 or longer");
    refused(&lab, &with("10.80.0.0/16", "31"), "/30 or shorter");
    refused(&lab, &with("10.80.0.0/16", "33"), r#"invalid --block-prefix "33": must be from 1 to 32"#);
    refused(&lab, &with("10.80.0.0/16", "0"), r#"invalid --block-prefix "0": must be from 1 to 32"#);
    // Without --subnet the agent picks a /16: a /12 block cannot fit it.
    refused(&lab, "network create -d overlay --block-prefix 12 n", "/16 or longer");
    report(
        &lab,
        "block_prefix_shorter_than_the_subnet_or_too_long",
        "network create with blocks /8 and /15 of a /16, /23 of a /24, /31, /33, /0, and /12 of the picked /16",
    );
}

#[test]
fn duplicate_name() {
    let lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    refused(&lab, "network create -d overlay a", "already exists");
    refused(&lab, "network create -d overlay --subnet 10.99.0.0/16 --vni 9999 a", "already exists");
    report(&lab, "duplicate_name", "network create of an existing name, with and without other settings");
}

#[test]
fn unsupported_driver() {
    let lab = lab();
    refused(&lab, "network create -d macvlan a", "supported drivers: overlay");
    refused_args(&lab, &["network", "create", "-d", "", "a"], "supported drivers: overlay");
    report(&lab, "unsupported_driver", "network create -d macvlan and an empty driver");
}

#[test]
fn unknown_network() {
    let mut lab = lab();
    let c = lab.container("c").unwrap();
    refused(&lab, &format!("network connect nope {c}"), "nope");
    refused(&lab, "network inspect nope", "nope");
    refused(&lab, "network rm nope", "nope");
    refused(&lab, &format!("network disconnect nope {c}"), "nope");
    report(&lab, "unknown_network", "connect, inspect, rm and disconnect of a network that does not exist");
}

#[test]
fn unknown_netns() {
    let lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    refused(&lab, &format!("network connect a ovl{}-ghost", lab.id), "does not exist");
    refused(&lab, "network connect a /proc/self/status", "not a network namespace");
    report(&lab, "unknown_netns", "connect to a namespace name that does not exist and to a /proc file");
}

/// A process started by a test inside a container namespace, killed (by
/// its PID) and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(ns: &str) -> Sleeper {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting sleep");
        Sleeper(child)
    }

    /// `/proc/PID/ns/net` (`ip netns exec` execs sleep, so the PID is its),
    /// once the process is inside.
    fn netns(&self, ns: &str) -> String {
        let path = format!("/proc/{}/ns/net", self.0.id());
        let want =
            std::fs::metadata(format!("/run/netns/{ns}")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        ovnet_tests::lab::poll(
            "the process to enter its namespace",
            std::time::Duration::from_secs(5),
            || {
                let ino = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                (ino.ok() == want.as_ref().ok().copied()).then_some(())
            },
        )
        .unwrap();
        path
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn paths_that_are_not_network_namespaces() {
    let lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "not a namespace").unwrap();
    let (file, dir_path) = (file.to_string_lossy().to_string(), dir.path().to_string_lossy().to_string());
    for (path, why) in [
        (file.as_str(), "is not a network namespace"),
        (dir_path.as_str(), "is not a network namespace"),
        ("/proc/self/ns/mnt", "is not a network namespace"),
        ("/proc/self/ns/uts", "is not a network namespace"),
        // Another process's: opening it may be denied, the answer is the same.
        ("/proc/1/ns/mnt", "is not a network namespace (it is a mnt namespace)"),
        ("/dev/null", "is not a network namespace"),
        ("/nonexistent/ns", "does not exist"),
        ("relative/ns", "must be an absolute path"),
        ("/proc/self/ns/net", "the host's own network namespace"),
    ] {
        refused(&lab, &format!("network connect a {path}"), why);
    }
    refused_args(&lab, &["network", "connect", "a", ""], "empty");
    // The agent's log is a file here: plain text, no colour codes.
    assert!(!lab.hosts[0].log().contains('\x1b'), "ANSI escapes in the log:\n{}", lab.hosts[0].log());
    report(
        &lab,
        "paths_that_are_not_network_namespaces",
        "connect to a regular file, a directory, /proc/self/ns/mnt and uts, /proc/1/ns/mnt, /dev/null, a missing path, a \
         relative path, an empty name, and the host's own namespace (/proc/self/ns/net: the agent's)",
    );
}

#[test]
fn address_exhausted() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay --subnet 10.70.0.0/30 tiny").unwrap();
    let (_c1, ip) = lab.connected(0, "tiny", "c1").unwrap();
    assert_eq!(ip, "10.70.0.2", "a /30 has one address besides the gateway");
    let c2 = lab.container("c2").unwrap();
    refused(&lab, &format!("network connect tiny {c2}"), "no free address");
    report(&lab, "address_exhausted", "connect to a /30 network whose one address is taken");
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
    report(&lab, "network_in_use_cannot_be_removed", "network rm while a container is connected");
}

#[test]
fn namespace_already_connected() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    let (c, _) = lab.connected(0, "a", "c").unwrap();
    refused(&lab, &format!("network connect a {c}"), "already connected");
    // The same namespace by its path, and through a process inside it.
    refused(&lab, &format!("network connect a /run/netns/{c}"), "already connected");
    let sleeper = Sleeper::start(&c);
    refused(&lab, &format!("network connect a {}", sleeper.netns(&c)), "already connected");
    refused(&lab, &format!("network connect --ip 10.128.0.50 a {c}"), "already connected");
    report(
        &lab,
        "namespace_already_connected",
        "connect of a connected namespace again by name, by /run/netns path, by /proc/PID/ns/net, with --ip",
    );
}

#[test]
fn dns_names_invalid_or_taken() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay a").unwrap();
    let web = lab.container("web").unwrap();
    lab.ovctl_ok(0, &["network", "connect", "a", &web, "--name", "web", "--alias", "www"]).unwrap();
    let c = lab.container("c").unwrap();
    refused(&lab, &format!("network connect --name web a {c}"), r#"name "web" is taken on network "a""#);
    for (flags, expect) in [
        ("--name Web", r#"invalid DNS name "Web": only lower-case letters"#),
        ("--name=-web", "must not start or end with '-'"),
        ("--name web.a", "only lower-case letters, digits and '-'"),
        ("--alias a_b", r#"invalid DNS name "a_b""#),
        (&format!("--name {}", "x".repeat(64)), "longer than 63 characters"),
    ] {
        refused(&lab, &format!("network connect {flags} a {c}"), expect);
    }
    refused_args(
        &lab,
        &["network", "connect", "--alias", "", "a", &c],
        r#"invalid DNS name "": it is empty"#,
    );
    report(
        &lab,
        "dns_names_invalid_or_taken",
        "connect with --name or --alias in upper case, with a leading '-', a dot, an '_', 64 characters, empty; and a --name another endpoint of the network has",
    );
}

#[test]
fn disconnecting_what_is_not_connected() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    lab.create_network(0, "-d overlay a").unwrap();
    lab.create_network(0, "-d overlay b").unwrap();
    let idle = lab.container("idle").unwrap();
    let (on_b, _) = lab.connected(0, "b", "onb").unwrap();
    let (on_h2, _) = lab.connected(1, "a", "onh2").unwrap();
    refused(
        &lab,
        &format!("network disconnect a {idle}"),
        &format!(r#"namespace "{idle}" is not connected to network "a" on host "h1""#),
    );
    refused(&lab, &format!("network disconnect a {on_b}"), r#"is not connected to network "a""#);
    refused(&lab, &format!("network disconnect a {on_h2}"), r#"on host "h2"; disconnect it there"#);
    refused(&lab, &format!("network disconnect a ovl{}-ghost", lab.id), r#"is not connected to network "a""#);
    refused(&lab, "network disconnect a /proc/self/ns/mnt", r#"is not connected to network "a""#);
    // Disconnected once, the second is refused.
    lab.ctl(0, &format!("network disconnect b {on_b}")).unwrap();
    refused(&lab, &format!("network disconnect b {on_b}"), r#"is not connected to network "b""#);
    report(
        &lab,
        "disconnecting_what_is_not_connected",
        "disconnect of an unconnected namespace, one on another network, one connected on another host, a \
         missing namespace, a non-namespace path, and one already disconnected",
    );
}

/// Endpoint records written to etcd by hand that name devices not ours: the
/// host's `eth0`, another network's VXLAN device. They are logged and
/// skipped; a disconnect of the namespace they name and the reconcile loop
/// leave both devices as they were.
#[test]
fn records_naming_devices_not_ours_are_skipped() {
    let mut lab = lab();
    lab.create_network(0, "-d overlay --subnet 10.86.0.0/16 red").unwrap();
    lab.create_network(0, "-d overlay --subnet 10.87.0.0/16 blue").unwrap();
    lab.connected(0, "red", "r1").unwrap();
    lab.connected(0, "blue", "b1").unwrap();
    let blue: serde_json::Value = serde_json::from_str(&lab.ctl(0, "network inspect blue").unwrap()).unwrap();
    let vni = blue["vni"].as_u64().expect("blue's VNI");
    let (blue_vx, blue_br) = (format!("ovvx{vni}"), format!("ovbr{vni}"));
    let evil = lab.container("evil").unwrap();
    let other = lab.container("other").unwrap();
    let h1 = lab.hosts[0].ns.name.clone();
    let link = |name: &str| {
        let out = ovnet_tests::netns::ip(&["-n", &h1, "-d", "link", "show", name]).unwrap();
        // Without the bridge port's running timers.
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().filter(|l| !l.contains("timer")).collect::<Vec<_>>().join("\n")
    };
    let (eth0_before, vx_before) = (link("eth0"), link(&blue_vx));
    assert!(eth0_before.contains("state UP") && vx_before.contains(&format!("master {blue_br}")));
    let record = |ip: &str, netns: &str, host_ifname: &str| {
        format!(
            r#"{{"v":1,"id":"x{ip}","network":"red","host":"h1","netns":"/run/netns/{netns}","ip":"{ip}","mac":"02:42:0a:56:c8:01","ifname":"eth0","host_ifname":"{host_ifname}","created_at":1}}"#
        )
    };
    lab.etcd_put("endpoints/red/10.86.200.1", record("10.86.200.1", &evil, "eth0").as_bytes()).unwrap();
    lab.etcd_put("endpoints/red/10.86.200.2", record("10.86.200.2", &other, &blue_vx).as_bytes()).unwrap();
    // The agent has read both records once a connect went through.
    lab.connected(0, "red", "r2").unwrap();
    let out = lab.ovctl(0, &["network", "disconnect", "red", &evil]).unwrap();
    assert!(!out.status.success(), "disconnect of a skipped record succeeded");
    // A connect waits for a reconcile pass that has seen both records.
    lab.connected(0, "red", "r3").unwrap();
    assert_eq!(link("eth0"), eth0_before, "the host's eth0 was changed");
    assert_eq!(link(&blue_vx), vx_before, "blue's VXLAN device was changed");
    REFUSED.with(|r| r.set(r.get() + 1));
    report(
        &lab,
        "records_naming_devices_not_ours_are_skipped",
        "endpoint records in etcd naming eth0 and blue's VXLAN device; disconnect of the namespace one names",
    );
}
