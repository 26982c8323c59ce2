//! Loading TLS files: good material builds, and each kind of bad file is
//! refused with the flag and path in the message.

use std::path::{Path, PathBuf};

use super::*;

/// A CA, a certificate it signed for 127.0.0.1, and an unrelated key, as files.
struct Material {
    dir: tempfile::TempDir,
}

impl Material {
    fn new() -> Material {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let m = Material { dir };
        std::fs::write(m.path("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(m.path("a.crt"), cert.pem()).unwrap();
        std::fs::write(m.path("a.key"), key.serialize_pem()).unwrap();
        std::fs::write(m.path("other.key"), other.serialize_pem()).unwrap();
        std::fs::write(m.path("garbage"), "not a certificate\n").unwrap();
        m
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn api(&self, cert: &str, key: &str, ca: Option<&str>) -> ApiTlsFiles {
        ApiTlsFiles { cert: self.path(cert), key: self.path(key), client_ca: ca.map(|c| self.path(c)) }
    }
}

fn err(r: Result<impl Sized, String>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

#[test]
fn good_material_builds() {
    let m = Material::new();
    server_config(&m.api("a.crt", "a.key", None)).unwrap();
    server_config(&m.api("a.crt", "a.key", Some("ca.crt"))).unwrap();
    etcd_config(&EtcdTlsFiles { ca: m.path("ca.crt"), identity: None }).unwrap();
    etcd_config(&EtcdTlsFiles { ca: m.path("ca.crt"), identity: Some((m.path("a.crt"), m.path("a.key"))) })
        .unwrap();
}

#[test]
fn missing_or_wrong_files_are_named() {
    let m = Material::new();
    let e = err(server_config(&m.api("nope.crt", "a.key", None)));
    assert_eq!(e, format!("reading --tls-cert {}: No such file or directory", m.path("nope.crt").display()));
    let e = err(server_config(&m.api("a.crt", "a.crt", None)));
    assert!(
        e.starts_with(&format!("--tls-key {} does not hold a PEM private key", m.path("a.crt").display())),
        "{e}"
    );
    let e = err(server_config(&m.api("a.key", "a.key", None)));
    assert!(e.starts_with("--tls-cert ") && e.contains("does not hold a PEM certificate"), "{e}");
    let e = err(server_config(&m.api("a.crt", "a.key", Some("garbage"))));
    assert!(e.starts_with("--tls-client-ca ") && e.contains("does not hold a PEM certificate"), "{e}");
    let e = err(etcd_config(&EtcdTlsFiles { ca: m.path("nope"), identity: None }));
    assert!(e.starts_with("reading --etcd-cacert "), "{e}");
    let e = err(etcd_config(&EtcdTlsFiles {
        ca: m.path("ca.crt"),
        identity: Some((m.path("a.crt"), m.path("x"))),
    }));
    assert!(e.starts_with("reading --etcd-key "), "{e}");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let m = Material::new();
    let e = err(server_config(&m.api("a.crt", "other.key", None)));
    let want = format!(
        "the private key in --tls-key {} does not belong to the certificate in --tls-cert {}",
        m.path("other.key").display(),
        m.path("a.crt").display()
    );
    assert_eq!(e, want);
    let files = EtcdTlsFiles { ca: m.path("ca.crt"), identity: Some((m.path("a.crt"), m.path("other.key"))) };
    let e = err(etcd_config(&files));
    assert!(e.starts_with("the private key in --etcd-key "), "{e}");
}

#[test]
fn unreadable_is_not_only_missing() {
    let m = Material::new();
    let e = read_pem("--tls-cert", Path::new(m.dir.path()), Pem::Certificate).unwrap_err();
    assert!(e.starts_with("reading --tls-cert "), "{e}");
    assert!(!e.contains("os error"), "{e}");
}
