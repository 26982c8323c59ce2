//! The store's watch against a real etcd: a watcher far behind is caught up
//! in chunks, and a watch resumed after any chunk sees every change exactly
//! once (the batch revision is the last event's, not the response header's).

use std::collections::BTreeMap;

use ovnet_ipam_store::{EtcdStore, WatchEvent};
use ovnet_tests::Etcd;

async fn store(etcd: &Etcd) -> EtcdStore {
    etcd.store().await
}

/// 2,500 revisions behind; the stream is dropped after every first response
/// and resumed from the batch's revision + 1.
#[tokio::test]
async fn watch_resumed_after_a_partial_catch_up_sees_every_change_once() {
    const CHANGES: usize = 2_500;
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let (start, _) = s.snapshot().await.unwrap();
    let mut c = s.client();
    for i in 0..CHANGES {
        c.put(format!("/ovnet-test/x/{i:05}"), format!("{i}"), None).await.unwrap();
    }
    let (end, _) = s.snapshot().await.unwrap();
    assert_eq!(end - start, CHANGES as i64);

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut from = start + 1;
    let mut watches = 0;
    while from <= end {
        watches += 1;
        assert!(watches <= CHANGES, "no progress from revision {from}");
        let mut w = s.watch(from).await.unwrap();
        let batch = w.next().await.unwrap().expect("a batch");
        for ev in &batch.events {
            let WatchEvent::Put { key, .. } = ev else { panic!("unexpected {ev:?}") };
            *seen.entry(key.clone()).or_default() += 1;
        }
        assert!(batch.revision >= from, "batch revision {} before {from}", batch.revision);
        from = batch.revision + 1;
        drop(w);
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "seen more than once: {twice:?}");
    assert_eq!(seen.len(), CHANGES, "{} changes missed", CHANGES - seen.len());
    assert!(watches > 1, "etcd sent all {CHANGES} changes in one response: nothing tested");
}

/// A snapshot larger than etcd-client's default 4 MiB message limit, and
/// longer than one page: every key comes back, in order, at one revision.
#[tokio::test]
async fn snapshot_past_4_mib_and_many_pages_lists_everything() {
    let etcd = Etcd::start_local().unwrap();
    let s = store(&etcd).await;
    let mut c = s.client();
    let big = vec![b'x'; 300 * 1024];
    for i in 0..20 {
        c.put(format!("/ovnet-test/big/{i:02}"), big.clone(), None).await.unwrap();
    }
    let many = 2 * ovnet_ipam_store::store::SNAPSHOT_PAGE as usize + 7;
    let mut txn_ops = Vec::new();
    for i in 0..many {
        txn_ops.push(etcd_client::TxnOp::put(format!("/ovnet-test/many/{i:05}"), "v", None));
        if txn_ops.len() == 100 || i + 1 == many {
            c.txn(etcd_client::Txn::new().and_then(std::mem::take(&mut txn_ops))).await.unwrap();
        }
    }
    let (revision, kvs) = s.snapshot().await.unwrap();
    let (now, _) = s.snapshot().await.unwrap();
    assert_eq!(revision, now);
    assert_eq!(kvs.len(), 20 + many);
    let keys: Vec<&String> = kvs.iter().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "keys out of order or repeated");
}
