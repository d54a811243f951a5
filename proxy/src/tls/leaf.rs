//! Leaf certificates for intercepted hosts, minted from the CA on first use
//! and cached per server name (bounded). Each cached entry is a complete
//! rustls server configuration, so a cache hit costs one map lookup.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use quick_cache::sync::Cache;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use time::{Duration, OffsetDateTime};

use super::{CertificateAuthority, TlsError};

/// Leaves live a day; the cache re-mints an hour before they expire so a
/// long-running proxy never serves an expired certificate.
const LEAF_LIFETIME: StdDuration = StdDuration::from_secs(24 * 3600);
const REMINT_MARGIN: StdDuration = StdDuration::from_secs(3600);

#[derive(Clone)]
struct Leaf {
    config: Arc<ServerConfig>,
    minted: Instant,
}

pub struct LeafCache {
    ca: CertificateAuthority,
    cache: Cache<String, Leaf>,
}

impl LeafCache {
    pub fn new(ca: CertificateAuthority, capacity: usize) -> LeafCache {
        LeafCache {
            ca,
            cache: Cache::new(capacity),
        }
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// A server configuration presenting a certificate for `name`.
    pub fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let fresh = |leaf: &Leaf| leaf.minted.elapsed() + REMINT_MARGIN < LEAF_LIFETIME;
        if let Some(leaf) = self.cache.get(name) {
            if fresh(&leaf) {
                metrics::counter!(crate::telemetry::LEAF_CACHE, "result" => "hit").increment(1);
                return Ok(leaf.config);
            }
        }
        metrics::counter!(crate::telemetry::LEAF_CACHE, "result" => "miss").increment(1);
        let leaf = Leaf {
            config: Arc::new(self.mint(name)?),
            minted: Instant::now(),
        };
        self.cache.insert(name.to_string(), leaf.clone());
        Ok(leaf.config)
    }

    fn mint(&self, name: &str) -> Result<ServerConfig, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into()?),
        }];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::seconds(LEAF_LIFETIME.as_secs() as i64);
        let cert = params.signed_by(&key, &self.ca.issuer)?;

        let chain = vec![cert.der().clone(), self.ca.cert_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}
