//! Whole commands against a fake agent served over a Unix socket, and
//! against addresses where nothing listens.

use std::sync::{Arc, Mutex};

use clap::Parser;
use ovnet_proto as pb;
use ovnet_proto::agent_server::{Agent as AgentApi, AgentServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::*;

/// Answers from canned data, or with `fail` to every call, or never.
#[derive(Default)]
struct Fake {
    fail: Option<Status>,
    hang: bool,
    /// Whether `doctor` reports a problem.
    broken: bool,
    created: Arc<Mutex<Vec<pb::CreateNetworkRequest>>>,
    connected: Arc<Mutex<Vec<pb::ConnectRequest>>>,
}

fn network(name: &str, id: &str, third: u8) -> pb::Network {
    pb::Network {
        id: id.into(),
        name: name.into(),
        driver: "overlay".into(),
        host: String::new(),
        subnet: format!("10.{third}.0.0/16"),
        gateway: format!("10.{third}.0.1"),
        vni: 4096 + u32::from(third),
        mtu: 1450,
        block_prefix: 24,
        internal: false,
    }
}

fn endpoint(netns: &str, ip: &str) -> pb::Endpoint {
    pb::Endpoint {
        id: format!("ep-{netns}"),
        network: "blue".into(),
        host: "node-a".into(),
        netns: netns.into(),
        ip: ip.into(),
        mac: "02:42:0a:80:00:02".into(),
        ifname: "eth0".into(),
        prefix_len: 16,
        gateway: "10.128.0.1".into(),
        ..Default::default()
    }
}

fn block(network: &str, cidr: &str, host: &str) -> pb::Block {
    pb::Block { network: network.into(), cidr: cidr.into(), host: host.into() }
}

impl Fake {
    async fn gate(&self) -> Result<(), Status> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.fail.clone().map_or(Ok(()), Err)
    }
}

#[tonic::async_trait]
impl AgentApi for Fake {
    async fn create_network(
        &self,
        r: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        self.gate().await?;
        let r = r.into_inner();
        let net = network(&r.name, "0123456789abcdef", 128);
        self.created.lock().unwrap().push(r);
        Ok(Response::new(net))
    }

    async fn list_networks(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        self.gate().await?;
        let networks =
            vec![network("red", "fedcba9876543210", 129), network("blue", "0123456789abcdef", 128)];
        Ok(Response::new(pb::ListNetworksResponse { networks }))
    }

    async fn inspect_network(
        &self,
        r: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::NetworkDetail>, Status> {
        self.gate().await?;
        Ok(Response::new(pb::NetworkDetail {
            network: Some(network(&r.into_inner().name, "0123456789abcdef", 128)),
            blocks: vec![
                block("blue", "10.128.0.0/24", "node-b"),
                block("blue", "10.128.1.0/24", "node-a"),
                block("blue", "10.128.2.0/24", "node-b"),
            ],
            endpoints: vec![endpoint("ns1", "10.128.0.2")],
        }))
    }

    async fn remove_network(
        &self,
        _: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn connect_endpoint(
        &self,
        r: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        self.gate().await?;
        let r = r.into_inner();
        let ip = if r.ip.is_empty() { "10.128.0.2".to_string() } else { r.ip.clone() };
        let ep = endpoint(&r.netns, &ip);
        self.connected.lock().unwrap().push(r);
        Ok(Response::new(ep))
    }

    async fn disconnect_endpoint(
        &self,
        r: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        self.gate().await?;
        let r = r.into_inner();
        let endpoint = (r.netns == "ns1").then(|| endpoint("ns1", "10.128.0.2"));
        Ok(Response::new(pb::DisconnectResponse { endpoint }))
    }

    async fn list_hosts(
        &self,
        _: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.gate().await?;
        let hosts = vec![
            pb::Host { name: "node-b".into(), vtep: String::new(), alive: false, blocks: vec![] },
            pb::Host {
                name: "node-a".into(),
                vtep: "192.0.2.1".into(),
                alive: true,
                blocks: vec![
                    block("blue", "10.128.1.0/24", "node-a"),
                    block("red", "10.129.0.0/24", "node-a"),
                ],
            },
        ];
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn remove_host(
        &self,
        r: Request<pb::RemoveHostRequest>,
    ) -> Result<Response<pb::RemoveHostResponse>, Status> {
        self.gate().await?;
        match r.into_inner().name.as_str() {
            "node-b" => Ok(Response::new(pb::RemoveHostResponse { blocks: 2, endpoints: 3 })),
            other => Err(Status::failed_precondition(format!("host \"{other}\" is alive"))),
        }
    }

    async fn version(&self, _: Request<pb::VersionRequest>) -> Result<Response<pb::VersionResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(pb::VersionResponse { version: "9.9.9".into(), node_name: "node-a".into() }))
    }

    async fn doctor(&self, _: Request<pb::DoctorRequest>) -> Result<Response<pb::DoctorReport>, Status> {
        self.gate().await?;
        use pb::finding::Severity;
        let finding = |severity: Severity, area: &str, message: &str, fix: &str| pb::Finding {
            severity: severity.into(),
            area: area.into(),
            message: message.into(),
            fix: fix.into(),
        };
        let mut findings = vec![finding(Severity::Ok, "mtu", "3 devices fit the underlay", "")];
        if self.broken {
            findings.insert(
                0,
                finding(
                    Severity::Problem,
                    "neigh",
                    "missing neighbour entry 10.128.1.2 lladdr 02:42:0a:80:01:02 on ovvx4096",
                    "ip neigh replace 10.128.1.2 lladdr 02:42:0a:80:01:02 dev ovvx4096 nud permanent",
                ),
            );
            findings.push(finding(Severity::Warning, "checksum", "cannot read the kernel version", ""));
        }
        Ok(Response::new(pb::DoctorReport { node_name: "node-a".into(), revision: 42, findings }))
    }
}

/// A fake agent on a fresh socket; keep the `TempDir` alive while in use.
fn serve(fake: Fake) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ovagent.sock");
    let listener = UnixListener::bind(&path).expect("bind fake agent");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(fake))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    (dir, format!("unix://{}", path.display()))
}

async fn ovctl(host: &str, args: &[&str]) -> (Result<(), CtlError>, String) {
    let argv = ["ovctl", "-H", host].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let mut out = String::new();
    let result = run(cli, &mut out).await;
    (result, out)
}

async fn ok(host: &str, args: &[&str]) -> String {
    let (result, out) = ovctl(host, args).await;
    if let Err(e) = result {
        panic!("{args:?}: {e}");
    }
    out
}

#[tokio::test]
async fn network_create_sends_the_flags_and_prints_the_id() {
    let fake = Fake::default();
    let created = fake.created.clone();
    let (_dir, host) = serve(fake);
    let args = ["network", "create", "--subnet", "10.128.0.0/16", "--vni", "5000", "--mtu", "1400", "blue"];
    assert_eq!(ok(&host, &args).await, "0123456789abcdef\n");
    let req = created.lock().unwrap().pop().expect("request");
    assert_eq!(req.name, "blue");
    assert_eq!(req.driver, "overlay");
    assert_eq!(req.subnet, "10.128.0.0/16");
    assert_eq!((req.vni, req.block_prefix, req.mtu), (Some(5000), None, Some(1400)));

    let json = ok(&host, &["network", "create", "red", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "red");
    assert_eq!(v["vni"], 4224);
    assert_eq!(created.lock().unwrap().pop().unwrap().subnet, "");
}

#[tokio::test]
async fn network_ls_sorts_by_name() {
    let (_dir, host) = serve(Fake::default());
    let table = ok(&host, &["network", "ls"]).await;
    assert_eq!(
        table,
        "NAME   ID             DRIVER    HOST   SUBNET          GATEWAY      VNI    MTU\n\
         blue   0123456789ab   overlay   -      10.128.0.0/16   10.128.0.1   4224   1450\n\
         red    fedcba987654   overlay   -      10.129.0.0/16   10.129.0.1   4225   1450\n"
    );
    let json = ok(&host, &["network", "ls", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["id"], "0123456789abcdef");
    assert_eq!(v[1]["name"], "red");
}

#[tokio::test]
async fn network_inspect_is_json_with_blocks_by_host() {
    let (_dir, host) = serve(Fake::default());
    let text = ok(&host, &["network", "inspect", "blue"]).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["name"], "blue");
    assert_eq!(v["block_prefix"], 24);
    assert_eq!(
        v["blocks"],
        serde_json::json!({"node-a": ["10.128.1.0/24"], "node-b": ["10.128.0.0/24", "10.128.2.0/24"]})
    );
    assert_eq!(
        v["endpoints"],
        serde_json::json!([{"id": "ep-ns1", "host": "node-a", "netns": "ns1", "ip": "10.128.0.2",
                            "mac": "02:42:0a:80:00:02", "ifname": "eth0", "ports": []}])
    );
    assert!(text.starts_with("{\n  \"id\": \"0123456789abcdef\",\n  \"name\": \"blue\","), "{text}");
}

#[tokio::test]
async fn network_rm_connect_disconnect() {
    let fake = Fake::default();
    let connected = fake.connected.clone();
    let (_dir, host) = serve(fake);
    assert_eq!(ok(&host, &["network", "rm", "blue"]).await, "blue\n");
    let json = ok(&host, &["network", "rm", "blue", "--format", "json"]).await;
    assert_eq!(json, "{\n  \"name\": \"blue\"\n}\n");

    assert_eq!(ok(&host, &["network", "connect", "blue", "ns1"]).await, "10.128.0.2\n");
    let args = ["network", "connect", "--ip", "10.128.0.9", "blue", "ns2", "--format", "json"];
    let v: serde_json::Value = serde_json::from_str(&ok(&host, &args).await).unwrap();
    assert_eq!((v["ip"].as_str(), v["prefix_len"].as_u64()), (Some("10.128.0.9"), Some(16)));
    assert_eq!(v["gateway"], "10.128.0.1");
    assert_eq!(connected.lock().unwrap()[1].ip, "10.128.0.9");
    assert_eq!(connected.lock().unwrap()[0].ip, "");

    assert_eq!(ok(&host, &["network", "disconnect", "blue", "ns1"]).await, "10.128.0.2\n");
    assert_eq!(ok(&host, &["network", "disconnect", "blue", "gone"]).await, "");
    let json = ok(&host, &["network", "disconnect", "blue", "gone", "--format", "json"]).await;
    assert_eq!(json, "null\n");
}

#[tokio::test]
async fn host_ls_and_version() {
    let (_dir, host) = serve(Fake::default());
    assert_eq!(
        ok(&host, &["host", "ls"]).await,
        "NAME     VTEP        ALIVE   BLOCKS\n\
         node-a   192.0.2.1   yes     blue:10.128.1.0/24,red:10.129.0.0/24\n\
         node-b   -           no      -\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&host, &["host", "ls", "--format", "json"]).await).unwrap();
    assert_eq!(v[1]["vtep"], serde_json::Value::Null);
    assert_eq!(v[0]["blocks"][1], serde_json::json!({"network": "red", "cidr": "10.129.0.0/24"}));

    let text = ok(&host, &["version"]).await;
    let client = env!("CARGO_PKG_VERSION");
    assert_eq!(text, format!("Client version: {client}\nAgent version:  9.9.9\nAgent node:     node-a\n"));
}

#[tokio::test]
async fn host_rm_prints_what_it_removed_and_passes_refusals_on() {
    let (_dir, host) = serve(Fake::default());
    assert_eq!(ok(&host, &["host", "rm", "node-b"]).await, "node-b (blocks: 2, endpoints: 3)\n");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&host, &["host", "rm", "node-b", "--format", "json"]).await).unwrap();
    assert_eq!(v, serde_json::json!({"name": "node-b", "blocks": 2, "endpoints": 3}));
    let (result, _) = ovctl(&host, &["host", "rm", "node-a"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("is alive"), "{e}");
}

#[tokio::test]
async fn agent_statuses_are_exit_1_with_their_message() {
    let fake =
        Fake { fail: Some(Status::unavailable("cannot reach etcd at 192.0.2.9:2379")), ..Fake::default() };
    let (_dir, host) = serve(fake);
    let (result, out) = ovctl(&host, &["network", "ls"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert_eq!(e.to_string(), "cannot reach etcd at 192.0.2.9:2379");
    assert_eq!(out, "");
}

#[tokio::test]
async fn missing_socket_is_exit_3_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/nope.sock", dir.path().display());
    let (result, out) = ovctl(&host, &["host", "ls"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert_eq!(e.to_string(), format!("cannot reach ovagent at {host}: No such file or directory"));
    assert_eq!(out, "");

    let (result, out) = ovctl(&host, &["version", "--format", "json"]).await;
    assert_eq!(result.unwrap_err().exit_code(), 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["agent"], serde_json::Value::Null);
}

#[tokio::test]
async fn closed_tcp_port_is_exit_3() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let host = format!("tcp://127.0.0.1:{port}");
    let (result, out) = ovctl(&host, &["version"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert_eq!(e.to_string(), format!("cannot reach ovagent at {host}: Connection refused"));
    assert_eq!(out, format!("Client version: {}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(start_paused = true)]
async fn silent_agent_times_out_with_exit_3() {
    let fake = Fake { hang: true, ..Fake::default() };
    let (_dir, host) = serve(fake);
    let (result, _) = ovctl(&host, &["network", "ls", "--timeout", "5"]).await;
    let e = result.unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert_eq!(e.to_string(), format!("no answer from ovagent at {host} within 5s"));
}

#[tokio::test]
async fn completion_scripts_name_the_binary() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok("unix:///nonexistent", &["completion", shell]).await;
        assert!(script.contains("ovctl"), "{shell}");
        assert!(script.contains("disconnect"), "{shell}");
    }
}

#[tokio::test]
async fn doctor_exits_0_when_clean_and_4_with_the_list_otherwise() {
    let (_dir, host) = serve(Fake::default());
    let out = ok(&host, &["doctor"]).await;
    assert!(out.ends_with("\nnode-a: no problems (etcd revision 42)\n"), "{out}");

    let (_dir, host) = serve(Fake { broken: true, ..Fake::default() });
    let (result, out) = ovctl(&host, &["doctor"]).await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 4);
    assert_eq!(err.to_string(), "doctor found 1 problem on host \"node-a\"");
    assert!(out.contains("problem   neigh      missing neighbour entry 10.128.1.2"), "{out}");
    assert!(out.contains("fix: ip neigh replace 10.128.1.2"), "{out}");
    assert!(out.ends_with("node-a: 1 problem, 1 warning (etcd revision 42)\n"), "{out}");

    let (result, out) = ovctl(&host, &["doctor", "--format", "json"]).await;
    assert_eq!(result.unwrap_err().exit_code(), 4);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["problems"].as_u64(), v["warnings"].as_u64()), (Some(1), Some(1)));
    assert_eq!(v["findings"][0]["severity"], "problem");
    assert_eq!(v["findings"][0]["area"], "neigh");
    assert_eq!(v["findings"][1]["fix"], serde_json::Value::Null);
}

#[path = "tls_tests.rs"]
mod tls_tests;

#[tokio::test]
async fn network_conflist_names_this_agent() {
    let (_dir, host) = serve(Fake::default());
    let text = ok(&host, &["network", "conflist", "blue"]).await;
    assert_eq!(text, crate::cni::conf::conflist("blue", &host));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["name"].as_str(), v["plugins"][0]["agent"].as_str()), (Some("blue"), Some(host.as_str())));
    let fake = Fake { fail: Some(Status::not_found("network \"nope\" not found")), ..Default::default() };
    let (_dir, host) = serve(fake);
    let (result, out) = ovctl(&host, &["network", "conflist", "nope"]).await;
    assert_eq!(result.unwrap_err().to_string(), "network \"nope\" not found");
    assert_eq!(out, "");
}
