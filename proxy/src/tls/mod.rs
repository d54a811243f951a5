//! TLS: the interception CA, leaf certificates minted on demand, and the
//! client configuration for upstream connections. One crypto provider (ring)
//! for rustls and rcgen, so the build compiles one crypto library.

pub mod ca;
pub mod leaf;
pub mod upstream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use ca::{CertificateAuthority, TlsError};
pub use leaf::LeafCache;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
