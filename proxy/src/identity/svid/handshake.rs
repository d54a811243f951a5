//! The TLS side of an mTLS listener: the handshake takes any client
//! certificate whose key the client proves it holds, and [`super::verify`]
//! judges the chain afterwards. A refused handshake would leave the agent a
//! TLS alert and nothing to audit; a finished one lets the proxy answer 407
//! with a reason and write its audit line.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::algorithms;

/// Offers client authentication without requiring it (a listener may also
/// take JWTs), accepts any chain, and checks the handshake signatures, so
/// a presented certificate is always one whose key the client holds.
#[derive(Debug)]
pub struct DeferredClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Default for DeferredClientVerifier {
    fn default() -> Self {
        DeferredClientVerifier::new()
    }
}

impl DeferredClientVerifier {
    pub fn new() -> DeferredClientVerifier {
        DeferredClientVerifier {
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints. Go's TLS client with a fixed certificate sends none at all
    /// when its issuer is not among the hints, and hints taken from the
    /// bundle when the listener starts go stale when the bundle rotates in
    /// a new CA (rustls wants a borrowed slice, so they cannot follow the
    /// reloads). Without hints every client sends what it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server configuration of an mTLS proxy listener: the deferred client
/// verifier, and HTTP/1.1 only because that is what the listener speaks.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(DeferredClientVerifier::new()))
            .with_single_cert(cert_chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
