//! Regression tests for what the chaos soak (`ovchaos`, issue #15) found,
//! one test per finding, each reproducing it directly.

use std::time::{Duration, Instant};

use ovnet_tests::lab::poll;
use ovnet_tests::{Lab, LabOptions};

/// ovchaos seed 1, step 1 (a whole-cluster etcd outage): a container that
/// died while etcd was down kept its endpoint record, and `ovctl doctor`
/// reported its missing veth, for 10 s after etcd returned: the failed
/// release was only asked for again by the reconcile loop's resend.
#[test]
fn an_endpoint_whose_container_died_during_an_etcd_outage_is_released_once_etcd_returns() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.create_network(0, "-d overlay net").unwrap();
    let (c1, ip) = lab.connected(0, "net", "c1").unwrap();
    let key = format!("{}/endpoints/net/{ip}", lab.prefix);
    lab.etcd.stop();
    lab.delete_container(&c1);
    // The agent notices after 2 s; its release fails, etcd being down.
    poll("the release to fail", Duration::from_secs(20), || {
        lab.hosts[0].log().contains("releasing a dead endpoint failed").then_some(())
    })
    .unwrap();
    lab.etcd.restart().unwrap();
    let back = Instant::now();
    // The chaos soak's convergence budget.
    poll("the dead endpoint's record released", Duration::from_secs(3), || {
        (!lab.etcd_dump().ok()?.contains_key(&key)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let took = back.elapsed();
    let doctor = lab.ovctl(0, &["doctor"]).unwrap();
    assert!(
        doctor.status.success(),
        "doctor after the release:\n{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    eprintln!("released {took:?} after etcd returned");
}
