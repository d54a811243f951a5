//! The benchmark's one CA, minted fresh per run: tollgate intercepts with
//! it (`tls.ca_dir`), the HTTPS upstream's certificate is signed by it
//! (`tls.upstream_ca_files`), and the load generator trusts it (`--cacert`).
//! One CA for both sides keeps the setup small; tollgate cannot tell.
//!
//! For the identity rows the same kind of CA signs an mTLS proxy
//! listener's certificate and a client certificate that is an X.509-SVID
//! ([`BenchPki::svid_files`]); tollgate and Envoy take the same files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The files of an mTLS proxy listener and of its client, every key ECDSA
/// P-256 (rcgen's default), in the CA's folder.
pub struct SvidFiles {
    /// The CA: the listener's trust bundle, and what the client trusts.
    pub ca: PathBuf,
    /// The listener's certificate, for the IP address 127.0.0.1.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client's X.509-SVID.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    client_der: (CertificateDer<'static>, Vec<u8>),
}

impl SvidFiles {
    /// The client certificate and its key, for a rustls client.
    pub fn client_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = &self.client_der;
        (
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
        )
    }
}

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

    /// A certificate for an mTLS proxy listener on 127.0.0.1, and a client
    /// certificate that is an X.509-SVID for `spiffe_id`: exactly one URI
    /// SAN, not a CA, key usage digitalSignature, extended key usage
    /// clientAuth. Written as PEM beside the CA.
    pub fn svid_files(&self, spiffe_id: &str) -> anyhow::Result<SvidFiles> {
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])?
            .signed_by(&server_key, &self.issuer)?;

        let client_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tollgate bench workload");
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::URI(spiffe_id.try_into()?));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let client = params.signed_by(&client_key, &self.issuer)?;

        Ok(SvidFiles {
            ca: self.ca_cert(),
            server_cert: write("listener.crt", &server.pem())?,
            server_key: write("listener.key", &server_key.serialize_pem())?,
            client_cert: write("svid.crt", &client.pem())?,
            client_key: write("svid.key", &client_key.serialize_pem())?,
            client_der: (client.der().clone(), client_key.serialize_der()),
        })
    }
}
