//! PEM files from configuration → TLS settings for the decision service
//! (rustls: its port is served by `server::front`) and for its clients
//! (tonic). Errors name the file, never its content.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::TlsFiles;
use crate::identity::svid;
use crate::tls;

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn identity(files: &TlsFiles) -> anyhow::Result<Option<Identity>> {
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read(cert)?, read(key)?))),
        _ => Ok(None),
    }
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read PEM certificates from {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificates in {}", path.display());
    Ok(certs)
}

/// A server's certificate chain and key.
fn chain_and_key(
    files: &TlsFiles,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (Some(cert_path), Some(key_path)) = (&files.cert, &files.key) else {
        anyhow::bail!("a TLS server needs cert and key");
    };
    let chain = certificates(cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
        .map_err(|_| anyhow::anyhow!("no usable private key in {}", key_path.display()))?;
    Ok((chain, key))
}

/// A proxy listener served over TLS: HTTP/1.1, and client certificates
/// asked for (not required) when it takes them as identities. They are
/// judged after the handshake, against the bundle current then.
pub fn proxy_listener(
    files: &TlsFiles,
    client_certificates: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = chain_and_key(files)?;
    let config = match client_certificates {
        true => svid::server_config(chain, key)?,
        false => {
            let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .context("the listener's key does not fit its certificate")?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            config
        }
    };
    Ok(Arc::new(config))
}

/// Server side: our identity; a `ca` makes client certificates mandatory.
/// HTTP/2 only, as gRPC needs.
pub fn server(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = chain_and_key(files)?;
    let (cert_path, key_path) = (
        files.cert.as_deref().unwrap_or(Path::new("")),
        files.key.as_deref().unwrap_or(Path::new("")),
    );
    let builder = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "the key in {} does not fit {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: the CA the service's certificate must chain to, and our
/// identity for mTLS.
pub fn client(files: &TlsFiles) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &files.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some(identity) = identity(files)? {
        config = config.identity(identity);
    }
    Ok(config)
}
