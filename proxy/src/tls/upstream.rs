//! Client TLS toward upstreams: webpki roots, the system store, and any
//! extra CA bundles from configuration (private APIs, tests).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::TlsError;

pub fn client_config(
    system_roots: bool,
    extra_ca_files: &[PathBuf],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if system_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // A machine without a system store still works from webpki roots.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    for path in extra_ca_files {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::BadFile {
                path: path.display().to_string(),
                message: format!("cannot read PEM certificates: {e}"),
            })?;
        if certs.is_empty() {
            return Err(TlsError::BadFile {
                path: path.display().to_string(),
                message: "no certificates in file".into(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::BadFile {
                path: path.display().to_string(),
                message: format!("unusable CA certificate: {e}"),
            })?;
        }
    }
    let config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
