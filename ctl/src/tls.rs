//! TLS towards the agent: loading the files `--tls-*` name, and explaining
//! failed handshakes.
//!
//! The design decision: the client's rustls configuration is built (and so
//! every file read and the key checked against its certificate) before the
//! agent is dialed, so a bad file is a usage error (exit 2) naming the flag.
//! A handshake that fails is "cannot reach the agent" (exit 3), with rustls'
//! reason turned into a sentence saying which flag to look at.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::cli::TlsFiles;
use crate::error::CtlError;

/// The client configuration for `files`, checked by building it.
pub fn client_config(files: &TlsFiles) -> Result<ClientTlsConfig, CtlError> {
    let ca = read_pem("--tls-ca", &files.ca, "CERTIFICATE")?;
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = &files.identity {
        let cert_pem = read_pem("--tls-cert", cert, "CERTIFICATE")?;
        let key_pem = read_pem("--tls-key", key, "PRIVATE KEY")?;
        cfg = cfg.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Endpoint::from_static("https://127.0.0.1:1").tls_config(cfg.clone()).map_err(|e| {
        let cause = innermost(&e);
        CtlError::Usage(match &files.identity {
            Some((cert, key)) if cause.contains("KeyMismatch") => format!(
                "the private key in --tls-key {} does not belong to the certificate in --tls-cert {}",
                key.display(),
                cert.display()
            ),
            _ => format!("cannot use the TLS files given: {cause}"),
        })
    })?;
    Ok(cfg)
}

/// Reads a PEM file named by `flag` that must hold a `-----BEGIN ...{label}-----` block.
fn read_pem(flag: &str, path: &Path, label: &str) -> Result<Vec<u8>, CtlError> {
    let bytes = std::fs::read(path).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.split(" (os error ").next().unwrap_or_default();
        CtlError::Usage(format!("reading {flag} {}: {reason}", path.display()))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|l| l.starts_with("-----BEGIN") && l.ends_with(&format!("{label}-----")));
    if !found {
        let what = if label == "CERTIFICATE" { "a PEM certificate" } else { "a PEM private key" };
        return Err(CtlError::Usage(format!("{flag} {} does not hold {what}", path.display())));
    }
    Ok(bytes)
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// How we speak to the agent, for the hints of [`explain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tls,
    /// TLS, presenting a client certificate.
    TlsWithCert,
}

/// The transport failure `reason`, with a hint when it looks like a TLS
/// problem. With TLS 1.3 the agent checks the client certificate after the
/// client considers the handshake done, so a refusal shows either as the
/// agent's alert or as a closed connection, depending on timing: both get
/// the same hint.
pub fn explain(reason: String, mode: Mode) -> String {
    const CLOSED: [&str; 4] = ["connection closed", "connection reset", "broken pipe", "Connection reset"];
    let closed = CLOSED.iter().any(|c| reason.contains(c));
    let alert = reason.contains("received fatal alert");
    let hint = match mode {
        _ if reason.contains("invalid peer certificate") => {
            "the agent's certificate does not verify against --tls-ca (wrong CA, or an address not in its certificate)"
        }
        Mode::Tls if alert || closed => {
            "the agent may require a client certificate: pass --tls-cert and --tls-key"
        }
        Mode::TlsWithCert if alert || closed => {
            "the agent may refuse the client certificate: is --tls-cert signed by the CA of its --tls-client-ca?"
        }
        Mode::Tls | Mode::TlsWithCert if reason.contains("corrupt message") => {
            "the agent does not speak TLS on this port: use tcp:// without --tls-ca"
        }
        Mode::Plain if closed => "if the agent serves TLS, pass --tls-ca (and --tls-cert, --tls-key)",
        _ => return reason,
    };
    format!("{reason}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_flag_to_look_at() {
        let cases = [
            ("received fatal alert: CertificateRequired", Mode::Tls, "pass --tls-cert and --tls-key"),
            ("connection closed", Mode::Tls, "pass --tls-cert and --tls-key"),
            (
                "invalid peer certificate: UnknownIssuer",
                Mode::TlsWithCert,
                "does not verify against --tls-ca",
            ),
            ("received fatal alert: UnknownCA", Mode::TlsWithCert, "the CA of its --tls-client-ca"),
            ("stream closed because of a broken pipe", Mode::TlsWithCert, "the CA of its --tls-client-ca"),
            ("received corrupt message of type InvalidContentType", Mode::Tls, "does not speak TLS"),
            ("connection reset", Mode::Plain, "pass --tls-ca"),
        ];
        for (reason, mode, hint) in cases {
            let text = explain(reason.to_string(), mode);
            assert!(text.starts_with(reason) && text.contains(hint), "{reason}: {text}");
        }
        assert_eq!(explain("Connection refused".into(), Mode::Plain), "Connection refused");
        assert_eq!(explain("Connection refused".into(), Mode::Tls), "Connection refused");
    }

    #[test]
    fn missing_and_wrong_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "hello\n").unwrap();
        let files = TlsFiles { ca: dir.path().join("nope"), identity: None };
        let e = client_config(&files).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().ends_with("nope: No such file or directory"), "{e}");
        let e = client_config(&TlsFiles { ca: garbage, identity: None }).unwrap_err();
        assert!(e.to_string().contains("does not hold a PEM certificate"), "{e}");
    }
}
