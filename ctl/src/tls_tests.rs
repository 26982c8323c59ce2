//! Whole commands against a fake agent served over TCP with TLS: what works,
//! and the message and exit code of every way the handshake can fail.

use std::path::PathBuf;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::*;

/// A CA and certificates it signed, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("temp dir") };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf("ca", "agent", &["127.0.0.1"]);
        pki.leaf("ca", "client", &["ovctl"]);
        pki.leaf("other-ca", "stranger", &["ovctl"]);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("pem")
    }

    fn ca(&self, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(self.path(&format!("{name}.crt")), params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn leaf(&self, ca: &str, name: &str, sans: &[&str]) {
        let ca_key =
            rcgen::KeyPair::from_pem(&String::from_utf8(self.read(&format!("{ca}.key"))).unwrap()).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Same subject and key as the CA file: rcgen signs by name and key.
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(sans).unwrap().signed_by(&key, &issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// A fake agent on 127.0.0.1 with TLS (`client_ca`: clients must present a
/// certificate it signed), or in plain text; returns the port.
async fn serve_tcp(pki: &Pki, tls: bool, client_ca: Option<&str>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut server = tonic::transport::Server::builder();
    if tls {
        let mut cfg =
            ServerTlsConfig::new().identity(Identity::from_pem(pki.read("agent.crt"), pki.read("agent.key")));
        if let Some(ca) = client_ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(pki.read(&format!("{ca}.crt"))));
        }
        server = server.tls_config(cfg).expect("tls config");
    }
    let router = server.add_service(AgentServer::new(Fake::default()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    port
}

async fn refused(host: &str, args: &[&str]) -> CtlError {
    match ovctl(host, args).await.0 {
        Ok(()) => panic!("{args:?} worked"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn tls_with_the_right_ca_works_for_tcp_and_https() {
    let pki = Pki::new();
    let port = serve_tcp(&pki, true, None).await;
    let ca = pki.arg("ca.crt");
    let out = ok(&format!("tcp://127.0.0.1:{port}"), &["version", "--tls-ca", &ca]).await;
    assert!(out.contains("9.9.9"), "{out}");
    let out = ok(&format!("https://127.0.0.1:{port}"), &["network", "ls", "--tls-ca", &ca]).await;
    assert!(out.contains("blue"), "{out}");
}

#[tokio::test]
async fn client_certificates_when_the_agent_asks() {
    let pki = Pki::new();
    let port = serve_tcp(&pki, true, Some("ca")).await;
    let host = format!("tcp://127.0.0.1:{port}");
    let (ca, cert, key) = (pki.arg("ca.crt"), pki.arg("client.crt"), pki.arg("client.key"));
    ok(&host, &["host", "ls", "--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]).await;

    let e = refused(&host, &["host", "ls", "--tls-ca", &ca]).await;
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("client certificate: pass --tls-cert and --tls-key"), "{e}");

    let (cert, key) = (pki.arg("stranger.crt"), pki.arg("stranger.key"));
    let e = refused(&host, &["host", "ls", "--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]).await;
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("is --tls-cert signed by the CA of its --tls-client-ca?"), "{e}");
}

#[tokio::test]
async fn a_wrong_ca_or_a_wrong_protocol_is_exit_3_with_a_hint() {
    let pki = Pki::new();
    let port = serve_tcp(&pki, true, None).await;
    let host = format!("tcp://127.0.0.1:{port}");
    let e = refused(&host, &["version", "--tls-ca", &pki.arg("other-ca.crt")]).await;
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("does not verify against --tls-ca"), "{e}");

    let e = refused(&host, &["version"]).await;
    assert_eq!(e.exit_code(), 3, "plain text to a TLS port: {e}");
    assert!(e.to_string().starts_with(&format!("cannot reach ovagent at {host}: ")), "{e}");

    let plain = serve_tcp(&pki, false, None).await;
    let e = refused(&format!("tcp://127.0.0.1:{plain}"), &["version", "--tls-ca", &pki.arg("ca.crt")]).await;
    assert_eq!(e.exit_code(), 3, "TLS to a plain port: {e}");
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
}

#[tokio::test]
async fn bad_tls_flags_are_usage_errors_before_dialing() {
    let pki = Pki::new();
    let (ca, cert, key) = (pki.arg("ca.crt"), pki.arg("client.crt"), pki.arg("client.key"));
    let other_key = pki.arg("agent.key");
    let tcp = "tcp://127.0.0.1:1";
    let cases: [(&str, Vec<&str>, &str); 7] = [
        (
            tcp,
            vec!["--tls-ca", "/nonexistent/ca.crt"],
            "reading --tls-ca /nonexistent/ca.crt: No such file or directory",
        ),
        (tcp, vec!["--tls-ca", &key], "does not hold a PEM certificate"),
        (tcp, vec!["--tls-ca", &ca, "--tls-cert", &cert], "--tls-cert needs --tls-key"),
        (
            tcp,
            vec!["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &other_key],
            "does not belong to the certificate",
        ),
        ("unix:///run/x.sock", vec!["--tls-ca", &ca], "not to the unix socket"),
        ("http://127.0.0.1:1", vec!["--tls-ca", &ca], "is plain text"),
        ("https://127.0.0.1:1", vec![], "needs --tls-ca"),
    ];
    for (host, flags, want) in cases {
        let args: Vec<&str> = ["version"].into_iter().chain(flags).collect();
        let (result, out) = ovctl(host, &args).await;
        let e = result.expect_err("refused");
        assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        assert!(e.to_string().contains(want), "{args:?}: {e}");
        assert_eq!(out, "", "nothing printed, nothing dialed");
    }
}
