//! TLS material named by the flags, loaded and checked at startup.
//!
//! The design decision: every file is read, and the very rustls
//! configuration the server (or the etcd client) will use is built, before
//! anything is bound or dialed. A missing file, a file holding no PEM
//! certificate, or a key that does not belong to its certificate is thus an
//! error at startup naming the flag and the path, never a failed handshake
//! later.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ApiTlsFiles, EtcdTlsFiles};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC server's TLS configuration, checked by building it.
pub fn server_config(files: &ApiTlsFiles) -> Result<ServerTlsConfig, String> {
    let cert = read_pem("--tls-cert", &files.cert, Pem::Certificate)?;
    let key = read_pem("--tls-key", &files.key, Pem::PrivateKey)?;
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read_pem("--tls-client-ca", ca, Pem::Certificate)?));
    }
    tonic::transport::Server::builder()
        .tls_config(cfg.clone())
        .map_err(|e| unusable(&e, ("--tls-cert", &files.cert), ("--tls-key", &files.key)))?;
    Ok(cfg)
}

/// The etcd client's TLS configuration, checked by building it.
pub fn etcd_config(files: &EtcdTlsFiles) -> Result<ClientTlsConfig, String> {
    let ca = read_pem("--etcd-cacert", &files.ca, Pem::Certificate)?;
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert_path, key_path)) = &files.identity {
        let cert = read_pem("--etcd-cert", cert_path, Pem::Certificate)?;
        let key = read_pem("--etcd-key", key_path, Pem::PrivateKey)?;
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    tonic::transport::Endpoint::from_static("https://127.0.0.1:2379").tls_config(cfg.clone()).map_err(
        |e| match &files.identity {
            Some((cert, key)) => unusable(&e, ("--etcd-cert", cert), ("--etcd-key", key)),
            None => format!("cannot use --etcd-cacert {}: {}", files.ca.display(), root_cause(&e)),
        },
    )?;
    Ok(cfg)
}

/// What a PEM file must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pem {
    Certificate,
    PrivateKey,
}

/// Reads a PEM file named by `flag`, checking it holds what it should.
pub fn read_pem(flag: &str, path: &Path, want: Pem) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("reading {flag} {}: {}", path.display(), io_reason(&e)))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = match want {
        Pem::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::PrivateKey => {
            text.lines().any(|l| l.starts_with("-----BEGIN") && l.contains("PRIVATE KEY-----"))
        }
    };
    if !found {
        let what = match want {
            Pem::Certificate => "a PEM certificate (-----BEGIN CERTIFICATE-----)",
            Pem::PrivateKey => "a PEM private key (-----BEGIN ... PRIVATE KEY-----)",
        };
        return Err(format!("{flag} {} does not hold {what}", path.display()));
    }
    Ok(bytes)
}

/// An I/O error without std's ` (os error N)` suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Why rustls refused a certificate and key, in words naming the files.
fn unusable(e: &dyn std::error::Error, cert: (&str, &Path), key: (&str, &Path)) -> String {
    let cause = root_cause(e);
    if cause.contains("KeyMismatch") {
        return format!(
            "the private key in {} {} does not belong to the certificate in {} {}",
            key.0,
            key.1.display(),
            cert.0,
            cert.1.display()
        );
    }
    format!("cannot use {} {} with {} {}: {cause}", cert.0, cert.1.display(), key.0, key.1.display())
}

/// The innermost error of a chain.
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
