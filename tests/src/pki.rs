//! A throwaway CA, server certificates for test upstreams, and client
//! certificates shaped like X.509-SVIDs (good and bad) for mTLS identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// Paths of the files [`TestPki::mtls_files`] wrote.
pub struct MtlsFiles {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl MtlsFiles {
    /// `decision_service.tls` for a listener that asks for client
    /// certificates signed by this CA.
    pub fn service_tls_yaml(&self) -> String {
        format!(
            "  tls: {{ cert: \"{}\", key: \"{}\", ca: \"{}\" }}\n",
            self.server_cert, self.server_key, self.ca
        )
    }
}

/// How [`TestPki::client_svid`] bends the certificate. The default is a
/// valid X.509-SVID leaf: valid from five minutes ago for an hour, CA:false,
/// digitalSignature, client and server auth, signed by the test CA itself.
#[derive(Clone, Debug, Default)]
pub struct SvidOptions {
    /// Valid for a day that ended an hour ago.
    pub expired: bool,
    /// Valid only from tomorrow.
    pub not_yet_valid: bool,
    /// A "leaf" claiming to be a CA (basicConstraints CA:true, keyCertSign),
    /// which the X.509-SVID specification forbids.
    pub is_ca: bool,
    /// DNS SANs beside the URI SANs: with no URIs, a certificate that is
    /// valid X.509 but no SVID.
    pub dns_names: Vec<String>,
    /// The subject's CN (default "tollgate test workload"); set it to a
    /// SPIFFE ID to check that nothing reads identity from the CN.
    pub common_name: Option<String>,
    /// Sign through an intermediate CA (as SPIRE with an upstream authority
    /// does); the certificate file then holds the leaf and the intermediate.
    pub via_intermediate: bool,
}

/// A client certificate from [`TestPki::client_svid`]: PEM files in a
/// folder that lives as long as this value.
pub struct ClientSvid {
    /// The leaf, then any intermediate.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    _dir: tempfile::TempDir,
}

pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    pub ca_pem: String,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tollgate test upstream CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("upstream-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this
    /// CA, as PEM `(certificate, key)`: for a server or a client.
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// PEM files for mutual TLS in `dir`: this CA, a server certificate
    /// for 127.0.0.1 and a client certificate for `client`.
    pub fn mtls_files(&self, dir: &Path, client: &str) -> MtlsFiles {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let (server_cert, server_key) = self.issue_pem(&["127.0.0.1"]);
        let (client_cert, client_key) = self.issue_pem(&[client]);
        MtlsFiles {
            ca: write("ca.pem", &self.ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    /// A rustls server config for `names`, offering h2 and http/1.1.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A rustls client config trusting only this CA (HTTP/1.1, no ALPN).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }

    /// A client certificate with `uris` as its URI SANs (one SPIFFE ID
    /// for a real X.509-SVID; none or several for the ones a verifier must
    /// refuse), bent as `options` says, signed by this CA.
    pub fn client_svid(&self, uris: &[&str], options: &SvidOptions) -> ClientSvid {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let cn = options.common_name.as_deref();
        dn.push(DnType::CommonName, cn.unwrap_or("tollgate test workload"));
        params.distinguished_name = dn;
        (params.not_before, params.not_after) = if options.expired {
            (now - Duration::days(1), now - Duration::hours(1))
        } else if options.not_yet_valid {
            (now + Duration::days(1), now + Duration::days(2))
        } else {
            (now - Duration::minutes(5), now + Duration::hours(1))
        };
        for uri in uris {
            let uri = (*uri).try_into().expect("a URI SAN is ASCII");
            params.subject_alt_names.push(SanType::URI(uri));
        }
        for name in &options.dns_names {
            let name = name.as_str().try_into().expect("a DNS SAN is ASCII");
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        if options.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
                KeyUsagePurpose::KeyAgreement,
            ];
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;

        let key = KeyPair::generate().unwrap();
        let mut cert_pem = String::new();
        if options.via_intermediate {
            let (intermediate, issuer) = self.intermediate();
            cert_pem.push_str(&params.signed_by(&key, &issuer).unwrap().pem());
            cert_pem.push_str(&intermediate);
        } else {
            cert_pem.push_str(&params.signed_by(&key, &self.issuer).unwrap().pem());
        }
        let key_pem = key.serialize_pem();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("svid.pem"), dir.path().join("svid.key"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        ClientSvid {
            cert,
            key,
            cert_pem,
            key_pem,
            _dir: dir,
        }
    }

    /// An intermediate CA under this one: its PEM and an issuer to sign
    /// leaves with.
    fn intermediate(&self) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tollgate test intermediate CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), Issuer::new(params, key))
    }
}
