use ovnet_ipam_store::*;
#[tokio::main]
async fn main() {
    let s = EtcdStore::connect(StoreConfig { endpoints: vec!["http://127.0.0.1:23790".into()], ..Default::default() }).await.unwrap();
    let (rev, _) = s.snapshot().await.unwrap();
    let mut w = s.watch(rev + 1).await.unwrap();
    println!("watching");
    let t = std::time::Instant::now();
    let r = w.next().await;
    println!("{:?} after {:?}", r, t.elapsed());
    let t = std::time::Instant::now();
    println!("{:?} after {:?}", s.list_networks().await, t.elapsed());
    let t = std::time::Instant::now();
    println!("{:?} after {:?}", s.watch(1).await.err(), t.elapsed());
}
