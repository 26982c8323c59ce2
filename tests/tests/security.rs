//! Security in the lab: the gRPC API over TLS (with and without client
//! certificates), the refusal of a plain-text API off loopback, bad TLS
//! flags stopping the agent before it binds, the socket's mode, and agents
//! against an etcd that wants TLS client certificates or a password.
//!
//! `ovctl` runs in the underlay namespace, so it reaches the agents as a
//! remote operator would: over the lab's network, at the hosts' addresses.
//! Certificates come from throw-away CAs (`ovnet_tests::pki`), with the lab's
//! IP addresses in their SANs.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ovnet_tests::lab::{bin_dir, poll};
use ovnet_tests::pki::{CertFiles, Pki};
use ovnet_tests::report::{Outcome, record};
use ovnet_tests::{Lab, LabOptions};

const CONVERGE: Duration = Duration::from_secs(10);
/// Where agents serve the API over TCP (each host namespace has its own ports).
const API_PORT: u16 = 7443;

/// `ovctl ARGS` inside namespace `ns`, untouched by the caller's OVNET_* variables.
fn ovctl_in(ns: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(bin_dir().join("ovctl")).args(["--timeout", "5"]).args(args);
    for var in ["OVNET_HOST", "OVNET_CTL_TLS_CA", "OVNET_CTL_TLS_CERT", "OVNET_CTL_TLS_KEY"] {
        cmd.env_remove(var);
    }
    cmd.output().unwrap_or_else(|e| panic!("running ovctl: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks `out` failed with exit code `code` and `want` in its message.
fn failed(out: &Output, code: i32, want: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout {:?}, stderr {}", out.stdout, stderr(out));
    assert!(stderr(out).contains(want), "expected {want:?} in: {}", stderr(out));
    assert!(!stderr(out).contains("Status {"), "a debug dump: {}", stderr(out));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// CA `ca` with the agent's certificate (host h1's address and loopback),
/// a client certificate for the operator, and a stranger signed by CA `other`.
struct ApiPki {
    pki: Pki,
    ca: PathBuf,
    other: PathBuf,
    agent: CertFiles,
    operator: CertFiles,
    stranger: CertFiles,
}

impl ApiPki {
    fn new(lab: &Lab) -> ApiPki {
        let mut pki = Pki::new().unwrap();
        let ca = pki.ca("ca").unwrap();
        let other = pki.ca("other").unwrap();
        let agent = pki.leaf("ca", "agent", &[&lab.hosts[0].ip.to_string(), "127.0.0.1"]).unwrap();
        let operator = pki.leaf("ca", "operator", &["operator"]).unwrap();
        let stranger = pki.leaf("other", "stranger", &["operator"]).unwrap();
        ApiPki { pki, ca, other, agent, operator, stranger }
    }
}

/// The log of host `i` written after byte `mark`.
fn log_since(lab: &Lab, i: usize, mark: usize) -> String {
    lab.hosts[i].log().get(mark..).unwrap_or_default().to_string()
}

/// Starts host `i`'s agent with `args` and `env` and checks it exits
/// non-zero having logged `want`; returns what it logged.
fn exits_non_zero(lab: &mut Lab, i: usize, args: &[&str], env: &[(&str, &str)], want: &str) -> String {
    let mark = lab.hosts[i].log().len();
    lab.spawn_agent(i, args, env).unwrap();
    let status = lab.wait_agent_exit(i, CONVERGE).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", lab.logs()));
    let log = log_since(lab, i, mark);
    assert!(!status.success(), "{args:?} exited 0:\n{log}");
    assert!(log.contains(want), "{args:?}: expected {want:?} in:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

/// `exits_non_zero`, and the agent never got as far as starting to serve.
fn refuses_to_start(lab: &mut Lab, i: usize, args: &[&str], env: &[(&str, &str)], want: &str) {
    let log = exits_non_zero(lab, i, args, env, want);
    assert!(!log.contains("ovagent starting"), "{args:?} got as far as binding:\n{log}");
}

#[test]
fn api_over_tls_with_client_certificates() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let p = ApiPki::new(&lab);
    lab.kill_agent(0);
    let listen = format!("tcp://{}:{API_PORT}", lab.hosts[0].ip);
    let (cert, key, ca) = (path(&p.agent.cert), path(&p.agent.key), path(&p.ca));
    let args = ["--listen", &listen, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca];
    lab.spawn_agent(0, &args, &[]).unwrap();
    let ul = lab.underlay.name.clone();
    let (op_cert, op_key) = (path(&p.operator.cert), path(&p.operator.key));
    let good = |host: &str, rest: &[&str]| -> Output {
        let flags = ["-H", host, "--tls-ca", ca, "--tls-cert", op_cert, "--tls-key", op_key];
        ovctl_in(&ul, &[&flags[..], rest].concat())
    };
    let tcp = listen.clone();
    poll("the agent to answer over TLS", CONVERGE, || {
        good(&tcp, &["version"]).status.success().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let mut operations = 1;

    // With the right CA and a client certificate, everything works, over
    // tcp:// and https:// alike.
    let out = good(&tcp, &["network", "create", "-d", "overlay", "sec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c1 = lab.container("c1").unwrap();
    let out = good(&tcp, &["network", "connect", "sec", &c1]);
    assert!(out.status.success(), "{}", stderr(&out));
    let https = format!("https://{}:{API_PORT}", lab.hosts[0].ip);
    let out = good(&https, &["network", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("sec"), "{}", stderr(&out));
    operations += 3;

    // Refused: no client certificate, one from another CA, a wrong CA, plain text.
    let out = ovctl_in(&ul, &["-H", &tcp, "--tls-ca", ca, "network", "ls"]);
    failed(&out, 3, "client certificate: pass --tls-cert and --tls-key");
    let (s_cert, s_key) = (path(&p.stranger.cert), path(&p.stranger.key));
    let out =
        ovctl_in(&ul, &["-H", &tcp, "--tls-ca", ca, "--tls-cert", s_cert, "--tls-key", s_key, "host", "ls"]);
    failed(&out, 3, "is --tls-cert signed by the CA of its --tls-client-ca?");
    let out = ovctl_in(
        &ul,
        &["-H", &tcp, "--tls-ca", path(&p.other), "--tls-cert", op_cert, "--tls-key", op_key, "version"],
    );
    failed(&out, 3, "does not verify against --tls-ca");
    let out = ovctl_in(&ul, &["-H", &tcp, "network", "rm", "sec"]);
    failed(&out, 3, &format!("cannot reach ovagent at {tcp}"));
    operations += 4;

    // None of the refused commands changed anything.
    let out = good(&tcp, &["network", "inspect", "sec"]);
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["endpoints"].as_array().map(Vec::len), Some(1), "{detail}");
    operations += 1;

    let held = "TLS with client certificates works over tcp:// and https://; no client \
                certificate, a foreign one, a wrong CA and plain text exit 3 and change nothing";
    let outcome = Outcome {
        category: "security".into(),
        test: "api_over_tls_with_client_certificates".into(),
        scenario: "agent serves the API on its underlay address with --tls-cert/--tls-key/--tls-client-ca; \
                   ovctl from another namespace"
            .into(),
        held: held.into(),
        operations,
        panics: lab.panics(),
        ..Default::default()
    };
    assert_eq!(outcome.panics, 0, "{}", lab.logs());
    record(&outcome).unwrap();
}

#[test]
fn api_over_tls_without_client_ca_needs_only_the_ca() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let p = ApiPki::new(&lab);
    lab.kill_agent(0);
    let listen = format!("tcp://{}:{API_PORT}", lab.hosts[0].ip);
    let args = ["--listen", &listen, "--tls-cert", path(&p.agent.cert), "--tls-key", path(&p.agent.key)];
    lab.spawn_agent(0, &args, &[]).unwrap();
    let ul = lab.underlay.name.clone();
    let ca = path(&p.ca);
    poll("the agent to answer over TLS", CONVERGE, || {
        ovctl_in(&ul, &["-H", &listen, "--tls-ca", ca, "version"]).status.success().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let out = ovctl_in(&ul, &["-H", &listen, "--tls-ca", ca, "host", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("h1"), "{}", stderr(&out));

    // A plain-text client gets nothing; a wrong CA is refused; a client
    // certificate nobody asked for does no harm.
    failed(&ovctl_in(&ul, &["-H", &listen, "host", "ls"]), 3, &format!("cannot reach ovagent at {listen}"));
    let http = listen.replace("tcp://", "http://");
    failed(&ovctl_in(&ul, &["-H", &http, "host", "ls"]), 3, "cannot reach ovagent");
    failed(&ovctl_in(&ul, &["-H", &listen, "--tls-ca", path(&p.other), "version"]), 3, "does not verify");
    let (op_cert, op_key) = (path(&p.operator.cert), path(&p.operator.key));
    let out = ovctl_in(
        &ul,
        &["-H", &listen, "--tls-ca", ca, "--tls-cert", op_cert, "--tls-key", op_key, "version"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let outcome = Outcome {
        category: "security".into(),
        test: "api_over_tls_without_client_ca_needs_only_the_ca".into(),
        scenario: "agent serves the API with --tls-cert/--tls-key only".into(),
        held: "ovctl with --tls-ca works; plain tcp:// and http:// and a wrong CA exit 3".into(),
        operations: 6,
        panics: lab.panics(),
        ..Default::default()
    };
    assert_eq!(outcome.panics, 0, "{}", lab.logs());
    record(&outcome).unwrap();
}

#[test]
fn plain_api_off_loopback_needs_insecure() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    lab.kill_agent(0);
    let listen = format!("tcp://{}:{API_PORT}", lab.hosts[0].ip);
    let want = format!("refusing to serve the API in plain text on {}:{API_PORT}", lab.hosts[0].ip);
    refuses_to_start(&mut lab, 0, &["--listen", &listen], &[], &want);
    refuses_to_start(&mut lab, 0, &["--listen", &format!("tcp://0.0.0.0:{API_PORT}")], &[], "not a loopback");

    lab.spawn_agent(0, &["--listen", &listen, "--insecure"], &[]).unwrap();
    let ul = lab.underlay.name.clone();
    poll("the --insecure agent to answer", CONVERGE, || {
        ovctl_in(&ul, &["-H", &listen, "version"]).status.success().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));

    let outcome = Outcome {
        category: "security".into(),
        test: "plain_api_off_loopback_needs_insecure".into(),
        scenario: "agent told to serve plain TCP on its underlay address and on 0.0.0.0".into(),
        held: "it exits non-zero naming the address before binding; with --insecure it serves".into(),
        operations: 3,
        panics: lab.panics(),
        ..Default::default()
    };
    assert_eq!(outcome.panics, 0, "{}", lab.logs());
    record(&outcome).unwrap();
}

#[test]
fn bad_api_tls_flags_stop_the_agent_before_binding() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let p = ApiPki::new(&lab);
    let other_key = p.pki.leaf("ca", "other-agent", &["127.0.0.1"]).unwrap().key;
    lab.kill_agent(0);
    // A node name of its own: anything it wrote to etcd would show.
    let listen = format!("tcp://{}:{API_PORT}", lab.hosts[0].ip);
    let (cert, key) = (path(&p.agent.cert), path(&p.agent.key));
    let base = ["--node-name", "h9", "--listen", &listen];
    let missing = p.pki.path("missing.crt");
    let cases: [(Vec<&str>, String); 5] = [
        (
            vec!["--tls-cert", path(&missing), "--tls-key", key],
            format!("reading --tls-cert {}: No such file", missing.display()),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", path(&other_key)],
            "does not belong to the certificate in --tls-cert".into(),
        ),
        (vec!["--tls-cert", key, "--tls-key", key], "does not hold a PEM certificate".into()),
        (vec!["--tls-cert", cert], "--tls-cert needs --tls-key".into()),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", path(&missing)],
            "reading --tls-client-ca".into(),
        ),
    ];
    let mut operations = 0;
    for (flags, want) in &cases {
        refuses_to_start(&mut lab, 0, &[&base[..], flags].concat(), &[], want);
        operations += 1;
    }
    let socket = p.pki.path("h9.sock");
    let unix = format!("unix://{}", socket.display());
    let flags = ["--node-name", "h9", "--listen", &unix, "--tls-cert", cert, "--tls-key", key];
    refuses_to_start(&mut lab, 0, &flags, &[], "not to the unix socket");
    assert!(!socket.exists(), "a refused agent bound {}", socket.display());
    let dump = lab.etcd_dump().unwrap();
    assert!(dump.keys().all(|k| !k.contains("h9")), "a refused agent wrote to etcd: {dump:?}");

    let outcome = Outcome {
        category: "security".into(),
        test: "bad_api_tls_flags_stop_the_agent_before_binding".into(),
        scenario: "missing cert, key of another cert, key as cert, cert without key, missing client CA, TLS on a unix socket".into(),
        held: "each exits non-zero naming the flag and file; nothing bound, nothing written to etcd".into(),
        operations: operations + 1,
        panics: lab.panics(),
        ..Default::default()
    };
    record(&outcome).unwrap();
}

#[test]
fn api_socket_is_mode_0660() {
    let mut lab = Lab::start(LabOptions { hosts: 1, ..Default::default() }).unwrap();
    let socket = lab.hosts[0].socket.clone();
    let mode = |p: &Path| {
        let meta = std::fs::symlink_metadata(p).unwrap();
        assert!(meta.file_type().is_socket(), "{} is not a socket", p.display());
        meta.permissions().mode() & 0o7777
    };
    assert_eq!(mode(&socket), 0o660);
    // After a crash the stale socket is replaced, again with mode 0660.
    lab.kill_agent(0);
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    lab.start_agent(0).unwrap();
    assert_eq!(mode(&socket), 0o660);
    // A clean stop removes it.
    lab.stop_agent(0).unwrap();
    assert!(!socket.exists(), "the socket outlived a clean stop");

    let outcome = Outcome {
        category: "security".into(),
        test: "api_socket_is_mode_0660".into(),
        scenario: "agent started, killed and restarted over its stale socket, stopped".into(),
        held: "the API socket is mode 0660 each time and gone after a clean stop".into(),
        operations: 3,
        panics: lab.panics(),
        ..Default::default()
    };
    record(&outcome).unwrap();
}

#[path = "security/etcd.rs"]
mod etcd;
