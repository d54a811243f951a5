//! PEM files from configuration → tonic TLS settings for the decision
//! service and its clients. Errors name the file, never its content.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsFiles;

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn identity(files: &TlsFiles) -> anyhow::Result<Option<Identity>> {
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read(cert)?, read(key)?))),
        _ => Ok(None),
    }
}

/// Server side: our identity; a `ca` makes client certificates mandatory.
pub fn server(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let identity = identity(files)?.context("decision_service.tls needs cert and key")?;
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
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
