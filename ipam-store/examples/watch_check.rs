use ovnet_ipam_store::*;
#[tokio::main]
async fn main() {
    let s = EtcdStore::connect(StoreConfig { endpoints: vec!["http://127.0.0.1:23790".into()], ..Default::default() }).await.unwrap();
    let (rev, _) = s.snapshot().await.unwrap();
    let mut w = s.watch(rev + 1).await.unwrap();
    let s2 = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        s2.client().put("/ovnet/x", "y", None).await.unwrap();
    });
    let t = std::time::Instant::now();
    println!("{:?} after {:?}", w.next().await, t.elapsed());
    // keep-alive on idle connection for 10s, then a request
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    println!("{:?}", s.list_networks().await);
}
