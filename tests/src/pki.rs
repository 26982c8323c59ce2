//! Throw-away certificate authorities for TLS tests, written as PEM files.
//!
//! Each [`Pki`] is a temporary directory; [`Pki::ca`] makes a CA and
//! [`Pki::leaf`] a certificate it signs, for IP addresses or names (IP SANs
//! verify, as they must for the lab's addresses). Every leaf may serve and
//! act as a client. Nothing is kept after drop.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A directory of CAs and the certificates they signed.
pub struct Pki {
    dir: tempfile::TempDir,
    cas: Vec<(String, Issuer<'static, KeyPair>)>,
}

/// The files of one certificate.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::Builder::new().prefix("ovnet-pki-").tempdir().context("creating the PKI dir")?;
        Ok(Pki { dir, cas: Vec::new() })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes CA `name`; returns the path of its certificate (`NAME.crt`).
    pub fn ca(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("ovnet test CA {name}"));
        let cert = params.self_signed(&key)?;
        let path = self.dir.path().join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem())?;
        self.cas.push((name.to_string(), Issuer::new(params, key)));
        Ok(path)
    }

    /// Makes `name`.crt/.key signed by CA `ca`, valid for `sans` (IP
    /// addresses or DNS names).
    pub fn leaf(&self, ca: &str, name: &str, sans: &[&str]) -> anyhow::Result<CertFiles> {
        let (_, issuer) =
            self.cas.iter().find(|(n, _)| n == ca).with_context(|| format!("no CA called {ca}"))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer)?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// The path of file `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
