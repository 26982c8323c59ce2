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

/// The transport failure `reason`, with a hint when it is a TLS problem.
/// `tls` says whether we spoke TLS.
pub fn explain(reason: String, tls: bool) -> String {
    let hint = if reason.contains("CertificateRequired") {
        "the agent requires a client certificate: pass --tls-cert and --tls-key"
    } else if reason.contains("invalid peer certificate") {
        "the agent's certificate does not verify against --tls-ca (wrong CA, or an address not in its certificate)"
    } else if reason.contains("received fatal alert") {
        "the agent refused the TLS handshake: check --tls-cert and --tls-key against its --tls-client-ca"
    } else if tls && reason.contains("corrupt message") {
        "the agent does not speak TLS on this port: use tcp:// without --tls-ca"
    } else if !tls && (reason.contains("connection reset") || reason.contains("connection closed")) {
        "if the agent serves TLS, pass --tls-ca (and --tls-cert, --tls-key)"
    } else {
        return reason;
    };
    format!("{reason} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_flag_to_look_at() {
        let cases = [
            ("received fatal alert: CertificateRequired", true, "pass --tls-cert and --tls-key"),
            ("invalid peer certificate: UnknownIssuer", true, "does not verify against --tls-ca"),
            ("received fatal alert: UnknownCA", true, "against its --tls-client-ca"),
            ("received corrupt message of type InvalidContentType", true, "does not speak TLS"),
            ("connection reset", false, "pass --tls-ca"),
        ];
        for (reason, tls, hint) in cases {
            let text = explain(reason.to_string(), tls);
            assert!(text.starts_with(reason) && text.contains(hint), "{reason}: {text}");
        }
        assert_eq!(explain("Connection refused".into(), false), "Connection refused");
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
