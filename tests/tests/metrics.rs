//! The metrics listener in the lab: values move with the cluster and the
//! kernel, `/healthz` and `/readyz` answer, and an idle agent is quiet.

use std::process::Command;
use std::time::Duration;

use ovnet_agent::metrics::sample;
use ovnet_tests::lab::{AgentOptions, poll};
use ovnet_tests::netns::run;
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);

fn value(lab: &Lab, i: usize, series: &str) -> f64 {
    let text = lab.scrape(i).unwrap_or_else(|e| panic!("scraping h{}: {e}\n{}", i + 1, lab.logs()));
    sample(&text, series).unwrap_or(0.0)
}

/// Polls host `i` until `series` satisfies `ok`.
fn wait_value(lab: &Lab, i: usize, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    poll(&format!("{series} on h{}", i + 1), CONVERGE, || Some(value(lab, i, series)).filter(|v| ok(*v)))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.scrape(i).unwrap_or_default()))
}

fn passes(lab: &Lab, i: usize) -> f64 {
    ["etcd", "netlink", "resync", "retry"]
        .iter()
        .map(|t| value(lab, i, &format!("ovnet_reconcile_passes_total{{trigger=\"{t}\"}}")))
        .sum()
}

fn mac_of(ip: &str) -> String {
    let octets: Vec<String> = ip.split('.').map(|o| format!("{:02x}", o.parse::<u8>().unwrap())).collect();
    format!("02:42:{}", octets.join(":"))
}

#[test]
fn metrics_move_with_the_cluster_and_the_kernel() {
    let agents =
        AgentOptions { metrics: true, resync_interval: Some(1), log_json: true, ..Default::default() };
    let mut lab = Lab::start_with(LabOptions { hosts: 2, ..Default::default() }, agents).unwrap();
    assert_eq!(lab.http_get(0, "/healthz").unwrap(), (200, "ok\n".to_string()));
    poll("h1 ready", CONVERGE, || {
        (lab.http_get(0, "/readyz").ok()? == (200, "ready\n".into())).then_some(())
    })
    .unwrap();
    wait_value(&lab, 0, "ovnet_hosts_alive", |v| v == 2.0);
    assert_eq!(value(&lab, 0, "ovnet_hosts"), 2.0);
    assert_eq!(value(&lab, 0, "ovnet_networks"), 0.0);
    assert_eq!(value(&lab, 0, "ovnet_etcd_connected"), 1.0);
    let passes_before = passes(&lab, 0);
    let timed_before = value(&lab, 0, "ovnet_event_to_kernel_seconds_count");

    // A network and a container on each host: the gauges follow, and the
    // etcd changes that reached the kernel were timed.
    lab.create_network(0, "-d overlay net").unwrap();
    lab.connected(0, "net", "c1").unwrap();
    let (_c2, ip2) = lab.connected(1, "net", "c2").unwrap();
    wait_value(&lab, 0, "ovnet_networks", |v| v == 1.0);
    wait_value(&lab, 0, "ovnet_endpoints{location=\"local\"}", |v| v == 1.0);
    wait_value(&lab, 0, "ovnet_endpoints{location=\"remote\"}", |v| v == 1.0);
    wait_value(&lab, 1, "ovnet_endpoints{location=\"local\"}", |v| v == 1.0);
    wait_value(&lab, 0, "ovnet_event_to_kernel_seconds_count", |v| v >= timed_before + 2.0);
    assert!(passes(&lab, 0) > passes_before);
    assert!(value(&lab, 0, "ovnet_reconcile_duration_seconds_count") >= passes(&lab, 0) - 1.0);
    let text = lab.scrape(0).unwrap();
    assert!(text.contains("ovnet_event_to_kernel_seconds_bucket{le=\"+Inf\"}"), "{text}");

    // Drift: an FDB entry deleted by hand is put back and counted as drift.
    let mac2 = mac_of(&ip2);
    poll("c2's FDB entry on h1", CONVERGE, || {
        lab.fdb(0).ok()?.iter().any(|e| e.contains(&mac2)).then_some(())
    })
    .unwrap();
    let vx = lab.links(0).unwrap().into_iter().find(|l| l.starts_with("ovvx")).unwrap();
    let h2 = lab.hosts[1].ip.to_string();
    let ns = lab.hosts[0].ns.name.clone();
    run(Command::new("bridge").args(["-n", &ns, "fdb", "del", &mac2, "dev", &vx, "dst", &h2, "self"]))
        .unwrap();
    wait_value(&lab, 0, "ovnet_drift_corrections_total{op=\"add_fdb\"}", |v| v >= 1.0);
    assert!(lab.fdb(0).unwrap().iter().any(|e| e.contains(&mac2)), "the entry is back");
    let log = lab.hosts[0].log();
    let repair = format!("bridge fdb append {mac2} dev {vx} dst {h2} self permanent");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let repairs = lines.iter().filter(|l| l["fields"]["message"] == repair.as_str()).count();
    assert_eq!(repairs, 2, "logged once when programmed, once when repaired:\n{log}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{log}");

    // Idle, with a pass every second: nothing is logged at info.
    let mark = lab.hosts[0].log().len();
    let resyncs = value(&lab, 0, "ovnet_reconcile_passes_total{trigger=\"resync\"}");
    wait_value(&lab, 0, "ovnet_reconcile_passes_total{trigger=\"resync\"}", |v| v >= resyncs + 3.0);
    let idle = lab.hosts[0].log()[mark..].to_string();
    assert!(!idle.contains("\"INFO\""), "an idle agent logged at info:\n{idle}");

    // etcd down: not ready, the connection gauge drops and errors count; back: ready.
    lab.etcd.stop();
    poll("h1 not ready without etcd", Duration::from_secs(20), || {
        let (code, body) = lab.http_get(0, "/readyz").ok()?;
        (code == 503 && body.contains("etcd is not reachable")).then_some(())
    })
    .unwrap();
    assert_eq!(value(&lab, 0, "ovnet_etcd_connected"), 0.0);
    assert!(value(&lab, 0, "ovnet_etcd_errors_total") >= 1.0);
    assert_eq!(lab.http_get(0, "/healthz").unwrap().0, 200, "still alive");
    lab.etcd.restart().unwrap();
    poll("h1 ready again", Duration::from_secs(20), || {
        (lab.http_get(0, "/readyz").ok()?.0 == 200).then_some(())
    })
    .unwrap();
    assert_eq!(value(&lab, 0, "ovnet_etcd_connected"), 1.0);
}
