//! Isolation between networks, on hosts that route (`ip_forward=1`, as
//! Docker leaves them): a container cannot reach a container of another
//! network on its own host or on another, the agent's nftables table is what
//! stops it, and on the wire each network's VXLAN traffic carries only its own
//! VNI (a capture on the underlay bridge, read byte by byte).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::Ipv4Net;
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::netns::ping;
use ovnet_tests::pcap::{VxlanPacket, vxlan_packets};
use ovnet_tests::pings::{PingStream, PingTally};
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

/// `tcpdump -w` on the underlay bridge, stopped (SIGTERM, by its PID) on
/// `finish` or on drop.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing VXLAN on bridge `ul` and waits until tcpdump listens.
    fn start(lab: &Lab) -> anyhow::Result<Capture> {
        let dir = tempfile::Builder::new().prefix("ovcap").tempdir()?;
        let (file, log) = (dir.path().join("ul.pcap"), dir.path().join("tcpdump.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.underlay.name, "tcpdump", "-i", "ul", "-n", "-U", "-w"])
            .arg(&file)
            .args(["udp", "port", "4789"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting tcpdump (tests/setup.sh --test installs it)")?;
        let capture = Capture { child: Some(child), file, _dir: dir };
        poll("tcpdump to listen on ul", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).ok()?.contains("listening on").then_some(())
        })?;
        Ok(capture)
    }

    /// Waits (5 s at most) until the packets written so far satisfy `enough`
    /// (tcpdump may not have read the last ones yet, and does not on
    /// SIGTERM), stops tcpdump and returns the VXLAN packets it saw.
    fn finish(mut self, enough: impl Fn(&[VxlanPacket]) -> bool) -> anyhow::Result<Vec<VxlanPacket>> {
        let file = self.file.clone();
        let read = || vxlan_packets(&std::fs::read(&file)?);
        let _ = poll("the capture to catch up", Duration::from_secs(5), || {
            read().ok().filter(|p| enough(p)).map(|_| ())
        });
        self.stop();
        read()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs tcpdump: this PID is tcpdump's.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Packets dropped so far by host `i`'s rule for each bridge (`iifname`).
fn drops(lab: &Lab, i: usize) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = lab.hosts[i].ns.exec("nft", &["-j", "list", "table", "inet", "ovnet"])?;
    anyhow::ensure!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut by_bridge = BTreeMap::new();
    for rule in listing["nftables"].as_array().into_iter().flatten().filter_map(|o| o.get("rule")) {
        let expr = rule["expr"].as_array().context("a rule without expr")?;
        let bridge = expr[0]["match"]["right"].as_str().unwrap_or_default().to_string();
        let packets = expr.iter().find_map(|s| s["counter"]["packets"].as_u64()).unwrap_or(0);
        by_bridge.insert(bridge, packets);
    }
    Ok(by_bridge)
}

/// An `nft list` output with every counter's values taken out.
fn without_counts(listing: &str) -> String {
    let mut out = Vec::new();
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        out.push(w);
        if w == "packets" || w == "bytes" {
            words.next();
        }
    }
    out.join(" ")
}

/// The VNI and subnet of network `name`.
fn vni_and_subnet(lab: &Lab, name: &str) -> anyhow::Result<(u32, Ipv4Net)> {
    let v: serde_json::Value = serde_json::from_str(&lab.ctl(0, &format!("network inspect {name}"))?)?;
    let vni = v["vni"].as_u64().context("no vni")? as u32;
    Ok((vni, v["subnet"].as_str().context("no subnet")?.parse()?))
}

/// What a captured VXLAN packet is, given the networks' VNIs and subnets.
#[derive(Debug, PartialEq, Eq)]
enum Wire {
    /// IPv4 or ARP between two addresses of the VNI's own network.
    Own,
    /// From the VNI's own network to multicast or broadcast (IGMP of the
    /// gateway), or not IPv4/ARP at all (IPv6 link-local chatter).
    Local,
    /// An unknown VNI, or an address that is not its network's.
    Stray,
}

fn wire(p: &VxlanPacket, subnets: &BTreeMap<u32, Ipv4Net>) -> Wire {
    let Some(own) = subnets.get(&p.vni) else { return Wire::Stray };
    let (Some(src), Some(dst)) = (p.src, p.dst) else { return Wire::Local };
    let group = |a: Ipv4Addr| a.is_multicast() || a.is_broadcast();
    match (own.contains(&src), own.contains(&dst)) {
        (true, true) => Wire::Own,
        (true, false) if group(dst) => Wire::Local,
        _ => Wire::Stray,
    }
}

/// Ten pings from `from` to `to` that are expected to go unanswered: no
/// deadline that would keep ping sending until it gets replies.
fn unanswered(from: &str, to: &str) -> Child {
    Command::new("ip")
        .args(["netns", "exec", from, "ping", "-n", "-q", "-c", "10", "-i", "0.05", "-W", "1", to])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ping")
}

fn finish_unanswered(child: Child) -> anyhow::Result<PingTally> {
    let out = child.wait_with_output()?;
    ovnet_tests::pings::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Counted pings from `from` to `to`: `count` at 50 ms.
fn stream(from: &str, to: &str, count: u64) -> anyhow::Result<PingStream> {
    PingStream::start(from, to, Duration::from_millis(50), count)
}

#[test]
fn networks_are_isolated_on_one_host_and_across_hosts() {
    let mut lab = Lab::start(LabOptions { hosts: 2, ..Default::default() }).unwrap();
    for h in &lab.hosts {
        assert_eq!(h.ns.sysctl_get("net.ipv4.ip_forward").unwrap(), "1", "{} must route", h.name);
    }
    lab.create_network(0, "-d overlay --subnet 10.81.0.0/16 red").unwrap();
    lab.create_network(1, "-d overlay --subnet 10.82.0.0/16 blue").unwrap();
    let (r1, r1_ip) = lab.connected(0, "red", "r1").unwrap();
    let (r2, r2_ip) = lab.connected(1, "red", "r2").unwrap();
    let (b1, b1_ip) = lab.connected(0, "blue", "b1").unwrap();
    let (b2, b2_ip) = lab.connected(1, "blue", "b2").unwrap();
    for (from, to) in [(&r1, &r2_ip), (&b1, &b2_ip)] {
        poll("the network's own pings to pass", Duration::from_secs(10), || ping(from, to).then_some(()))
            .unwrap();
    }

    let capture = Capture::start(&lab).unwrap();
    let inside = [stream(&r1, &r2_ip, 40).unwrap(), stream(&b2, &b1_ip, 40).unwrap()];
    let across = [
        unanswered(&r1, &b1_ip), // same host h1, red -> blue
        unanswered(&b1, &r1_ip), // same host h1, blue -> red
        unanswered(&r1, &b2_ip), // h1 red -> h2 blue
        unanswered(&b2, &r1_ip), // h2 blue -> h1 red
        unanswered(&r2, &b1_ip), // h2 red -> h1 blue
    ];
    let inside: Vec<PingTally> = inside.into_iter().map(|s| s.finish().unwrap()).collect();
    let across: Vec<PingTally> = across.into_iter().map(|c| finish_unanswered(c).unwrap()).collect();
    let subnets =
        BTreeMap::from([vni_and_subnet(&lab, "red").unwrap(), vni_and_subnet(&lab, "blue").unwrap()]);
    let own = |packets: &[VxlanPacket], vni: u32| {
        packets.iter().filter(|p| p.vni == vni && wire(p, &subnets) == Wire::Own).count()
    };
    let packets = capture.finish(|p| subnets.keys().all(|vni| own(p, *vni) >= 80)).unwrap();

    for t in &inside {
        assert_eq!(t.lost(), 0, "a network's own pings were lost: {t:?}");
    }
    for t in &across {
        assert_eq!(t.received, 0, "a ping crossed from one network into another: {t:?}");
    }
    // Dropped by the agent's table, on the host that would have routed them.
    let bridges: Vec<String> = subnets.keys().map(|vni| format!("ovbr{vni}")).collect();
    let (h1, h2) = (drops(&lab, 0).unwrap(), drops(&lab, 1).unwrap());
    for (host, dropped) in [("h1", &h1), ("h2", &h2)] {
        for b in &bridges {
            assert!(dropped.get(b).is_some_and(|n| *n > 0), "{host} dropped nothing from {b}: {dropped:?}");
        }
    }

    // On the wire: each network's packets only under its own VNI.
    let verdicts: Vec<Wire> = packets.iter().map(|p| wire(p, &subnets)).collect();
    let strays: Vec<&VxlanPacket> =
        packets.iter().zip(&verdicts).filter(|(_, v)| **v == Wire::Stray).map(|(p, _)| p).collect();
    assert!(strays.is_empty(), "{} packets under another network's VNI: {strays:?}", strays.len());
    for (vni, subnet) in &subnets {
        let n = own(&packets, *vni);
        assert!(n >= 80, "the pings of {subnet} are not on the wire under VNI {vni}: {n} packets");
    }

    record(&Outcome {
        category: "security".into(),
        test: "networks_are_isolated_on_one_host_and_across_hosts".into(),
        scenario: "2 routing hosts (ip_forward=1), networks red and blue with a container of each on each \
                   host; pings inside each network and from each network into the other on one host and \
                   across hosts, tcpdump on the underlay bridge"
            .into(),
        held: format!(
            "no cross-network echo request answered (dropped by table inet ovnet on both hosts), every \
             in-network one answered; of {} VXLAN packets captured, none carried an address of another \
             network ({} between a network's own addresses under its own VNI)",
            packets.len(),
            subnets.keys().map(|vni| own(&packets, *vni)).sum::<usize>()
        ),
        pings_sent: inside.iter().map(|t| t.sent).sum(),
        pings_lost: inside.iter().map(PingTally::lost).sum(),
        operations: across.iter().map(|t| t.sent).sum(),
        duplicates: strays.len() as u64,
        panics: lab.panics(),
    })
    .unwrap();
}

#[test]
fn a_deleted_firewall_table_is_restored_and_other_tables_are_left_alone() {
    let opts = AgentOptions { resync_interval: Some(1), ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 1, ..Default::default() }, opts).unwrap();
    lab.create_network(0, "-d overlay --subnet 10.83.0.0/16 red").unwrap();
    lab.create_network(0, "-d overlay --subnet 10.84.0.0/16 blue").unwrap();
    let (r1, _) = lab.connected(0, "red", "r1").unwrap();
    let (_b1, b1_ip) = lab.connected(0, "blue", "b1").unwrap();
    let h1 = &lab.hosts[0].ns;
    let nft = |args: &[&str]| {
        let out = h1.exec("nft", args).unwrap();
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ours = without_counts(&nft(&["list", "table", "inet", "ovnet"]));
    assert_eq!(ours.matches(r#"oifname "ovbr*""#).count(), 2, "{ours}");
    nft(&["add table inet mine; add chain inet mine c { type filter hook forward priority 10; }"]);
    nft(&["add rule inet mine c counter accept"]);
    let mine = || nft(&["list", "table", "inet", "mine"]).replace(char::is_numeric, "");
    let mine_before = mine();
    assert!(!ping(&r1, &b1_ip), "red reached blue with the table in place");

    // With the agent frozen, the table deleted by hand: the host routes red into blue.
    lab.pause_agent(0).unwrap();
    nft(&["delete", "table", "inet", "ovnet"]);
    let routed = poll("red to reach blue without the table", Duration::from_secs(10), || {
        ping(&r1, &b1_ip).then_some(())
    });
    lab.resume_agent(0).unwrap();
    routed.unwrap();
    let restored = |what: &str| {
        let started = Instant::now();
        poll(what, Duration::from_secs(10), || {
            let out = h1.exec("nft", &["list", "table", "inet", "ovnet"]).ok()?;
            (without_counts(&String::from_utf8_lossy(&out.stdout)) == ours).then_some(started.elapsed())
        })
        .unwrap()
    };
    restored("the table back after the agent resumed");
    assert!(!ping(&r1, &b1_ip), "red reached blue after the table came back");

    // Deleted under a running agent: the next resync puts it back.
    nft(&["delete", "table", "inet", "ovnet"]);
    let took = restored("the table back after a resync");
    assert!(!ping(&r1, &b1_ip), "red reached blue after the table came back");
    assert_eq!(mine(), mine_before, "the agent touched another table");
    assert!(lab.hosts[0].log().contains("nft 'add table inet ovnet;"), "the repair is not logged");

    record(&Outcome {
        category: "security".into(),
        test: "a_deleted_firewall_table_is_restored_and_other_tables_are_left_alone".into(),
        scenario: "table inet ovnet deleted by hand twice (once under a frozen agent, which let red reach \
                   blue), another table of the host's present; resync every 1 s"
            .into(),
        held: format!(
            "the table came back as it was both times (the second within {:.1} s), red could not reach \
             blue again, the other table was untouched",
            took.as_secs_f64()
        ),
        operations: 2,
        panics: lab.panics(),
        ..Default::default()
    })
    .unwrap();
}

/// Table `inet ovnet` flagged `owner` by an `nft -i` session in a host's
/// namespace: while the session lives, nobody else can change or delete the
/// table, so the agent's writes fail (EPERM). Ends the session (by its PID)
/// on drop.
struct OwnedTable {
    child: Child,
}

impl OwnedTable {
    fn hold(ns: &ovnet_tests::Netns) -> anyhow::Result<OwnedTable> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().context("nft's stdin")?;
        stdin.write_all(b"delete table inet ovnet\nadd table inet ovnet { flags owner; }\n")?;
        // The session lives as long as its stdin is open: keep it in the child.
        child.stdin = Some(stdin);
        let held = OwnedTable { child };
        poll("nft to own table inet ovnet", Duration::from_secs(10), || {
            let out = ns.exec("nft", &["list", "table", "inet", "ovnet"]).ok()?;
            String::from_utf8_lossy(&out.stdout).contains("owner").then_some(())
        })?;
        Ok(held)
    }
}

impl Drop for OwnedTable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn connect_waits_and_is_refused_while_the_firewall_cannot_be_written() {
    let opts = AgentOptions { metrics: true, resync_interval: Some(1), ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 1, ..Default::default() }, opts).unwrap();
    let owned = OwnedTable::hold(&lab.hosts[0].ns).unwrap();
    lab.create_network(0, "-d overlay --subnet 10.85.0.0/16 red").unwrap();
    let c1 = lab.container("c1").unwrap();

    let out = lab.ovctl(0, &["network", "connect", "red", &c1]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "connected to a bridge without isolation: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("not isolated") && err.contains("not permitted"), "{err}");
    let veths: Vec<String> = lab.links(0).unwrap().into_iter().filter(|l| l.starts_with("ovve")).collect();
    assert!(veths.is_empty(), "a veth was left: {veths:?}");
    let (code, body) = lab.http_get(0, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not isolated"), "{body}");
    let doctor = lab.ovctl(0, &["doctor"]).unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(!doctor.status.success() && report.contains("firewall"), "{report}");

    // The table free again: the agent writes it, and the connect goes through.
    drop(owned);
    poll("/readyz to say ready", Duration::from_secs(15), || {
        (lab.http_get(0, "/readyz").ok()?.0 == 200).then_some(())
    })
    .unwrap();
    lab.ovctl_ok(0, &["network", "connect", "red", &c1]).unwrap();
}
