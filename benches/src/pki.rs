//! The benchmark's one CA, minted fresh per run: tollgate intercepts with
//! it (`tls.ca_dir`), the HTTPS upstream's certificate is signed by it
//! (`tls.upstream_ca_files`), and the load generator trusts it (`--cacert`).
//! One CA for both sides keeps the setup small; tollgate cannot tell.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct BenchPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// Holds `ca.crt` and `ca.key`, the layout `tollgate ca init` writes.
    dir: tempfile::TempDir,
}

impl BenchPki {
    pub fn new() -> anyhow::Result<BenchPki> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tollgate bench CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.crt"), cert.pem())?;
        std::fs::write(dir.path().join("ca.key"), key.serialize_pem())?;
        Ok(BenchPki {
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir,
        })
    }

    /// A folder usable as tollgate's `tls.ca_dir`.
    pub fn ca_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server configuration for `name`, HTTP/1.1 only: the MITM row must
    /// differ from the plain row by TLS alone, not by the upstream protocol.
    pub fn server_config(&self, name: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &self.issuer)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
