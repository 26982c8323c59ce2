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

/// A TCP proxy in front of etcd that, once, forwards a request containing
/// `needle` and then loses etcd's answer: it drops what etcd sends back and
/// closes the connection, as a member killed right after applying does.
struct LossyProxy {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    async fn start(upstream: String, needle: &'static [u8]) -> LossyProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (armed, cut) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let cut_seen = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (armed, cut) = (armed.clone(), cut.clone());
                let losing = Arc::new(AtomicBool::new(false));
                let back = losing.clone();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        if !back.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let hit = buf[..n].windows(needle.len()).any(|w| w == needle);
                        if hit && armed.swap(false, Ordering::SeqCst) {
                            losing.store(true, Ordering::SeqCst);
                            let _ = sw.write_all(&buf[..n]).await;
                            // etcd applies it; its answer is dropped; then the line goes dead.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            cut.store(true, Ordering::SeqCst);
                            down.abort();
                            return;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        LossyProxy { addr, cut: cut_seen }
    }
}

/// ovchaos (a leader killed during a connect): a write that etcd applied
/// but whose answer was lost was reported as "etcd is unreachable", so the
/// connect failed with quorum up and left an endpoint record without a veth
/// (doctor unclean) until the leak detector released it. Now the store reads
/// the key back after such a failure and counts an applied write as done.
#[tokio::test]
async fn a_network_create_whose_answer_is_lost_after_etcd_applied_it_succeeds() {
    use ovnet_ipam_store::{EtcdStore, NewNetwork, StoreConfig};
    let etcd = ovnet_tests::Etcd::start_local().unwrap();
    let upstream = etcd.endpoint().trim_start_matches("http://").to_string();
    let proxy = LossyProxy::start(upstream, br#""driver":"overlay""#).await;
    let s = EtcdStore::connect(StoreConfig {
        endpoints: vec![format!("http://{}", proxy.addr)],
        prefix: "/ovnet-lost".to_string(),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let req = NewNetwork::overlay("lost", 1450);
    let created = s.create_network(req).await;
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), "the proxy never lost an answer");
    let created = created.expect("etcd applied the create: it must not be reported as failed");
    assert_eq!(s.get_network("lost").await.unwrap().id, created.id);
}
