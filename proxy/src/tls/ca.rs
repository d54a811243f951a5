//! The interception CA: created once by `tollgate ca init`, loaded at start.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("{0} already exists; pass --force to replace it")]
    Exists(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "no interception CA in {0}: run `tollgate ca init --out {0}` or set tls.create_ca_if_missing"
    )]
    Missing(String),
}

/// A loaded CA: signs leaf certificates for intercepted hosts.
pub struct CertificateAuthority {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) cert_der: CertificateDer<'static>,
    pub cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl CertificateAuthority {
    /// Write a new CA to `dir` (`ca.crt` 0644, `ca.key` 0600).
    pub fn create(dir: &Path, force: bool) -> Result<PathBuf, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        for p in [&cert_path, &key_path] {
            if p.exists() && !force {
                return Err(TlsError::Exists(p.display().to_string()));
            }
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tollgate interception CA");
        dn.push(DnType::OrganizationName, "tollgate");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;

        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(cert_path)
    }

    pub fn exists(dir: &Path) -> bool {
        dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists()
    }

    pub fn load(dir: &Path) -> Result<CertificateAuthority, TlsError> {
        if !CertificateAuthority::exists(dir) {
            return Err(TlsError::Missing(dir.display().to_string()));
        }
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        // The key file's content never goes into an error message.
        let key = KeyPair::from_pem(&key_pem).map_err(|_| TlsError::BadFile {
            path: key_path.display().to_string(),
            message: "not a PEM private key".into(),
        })?;
        let bad_cert = |message: &str| TlsError::BadFile {
            path: cert_path.display().to_string(),
            message: message.into(),
        };
        let cert_der = {
            use rustls::pki_types::pem::PemObject;
            CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|_| bad_cert("not a PEM certificate"))?
        };
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|_| bad_cert("certificate does not parse as a CA"))?;
        Ok(CertificateAuthority {
            issuer,
            cert_der,
            cert_pem,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))
}
