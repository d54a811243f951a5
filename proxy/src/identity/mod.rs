//! Identify: who is calling, proven by what it presents.
//!
//! A listener names its identity sources; they are tried in one order,
//! strongest first:
//!
//! 1. an mTLS client certificate (an X.509-SVID, checked at the handshake's
//!    end against the listener's trust bundle — `svid`);
//! 2. a JWT in `Proxy-Authorization` (`Bearer`, or the password of
//!    `Basic`), verified against its issuer's keys — `jws`, `jwt`;
//! 3. the source address (CIDR → identity; the weakest);
//! 4. a static identity (a sidecar serving one pod).
//!
//! Something *presented* that fails verification refuses the request: it
//! never falls through to a weaker source, so a forged token cannot end up
//! as the sidecar's static identity.

pub mod jws;
pub mod jwt;
pub mod sources;
pub mod spiffe;
pub mod svid;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use sources::{CallerIdentity, EnvoySources, ListenerSources, Registry, SetupError};
pub use spiffe::SpiffeId;
pub use svid::TrustDomains;

/// How a caller was identified: the audit line's and the metric's
/// `identity_source`, and `principal.identity_source` in policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// A client certificate on tollgate's own TLS listener.
    Mtls,
    /// A JWT verified by tollgate.
    Jwt,
    /// Envoy's mTLS: `source.principal` of an ext_authz `Check`.
    EnvoyMtls,
    /// A JWT Envoy's `jwt_authn` filter verified.
    EnvoyJwt,
    /// The connection's source address, mapped by configuration.
    SourceAddress,
    /// The listener's one static identity (or Envoy's route extension).
    Static,
}

impl IdentitySource {
    pub const ALL: [IdentitySource; 6] = [
        IdentitySource::Mtls,
        IdentitySource::Jwt,
        IdentitySource::EnvoyMtls,
        IdentitySource::EnvoyJwt,
        IdentitySource::SourceAddress,
        IdentitySource::Static,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Mtls => "mtls",
            IdentitySource::Jwt => "jwt",
            IdentitySource::EnvoyMtls => "envoy_mtls",
            IdentitySource::EnvoyJwt => "envoy_jwt",
            IdentitySource::SourceAddress => "source_address",
            IdentitySource::Static => "static",
        }
    }

    pub fn parse(name: &str) -> Option<IdentitySource> {
        IdentitySource::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What policy sees of the principal besides its name (Cedar attributes
/// of the `Workload` entity). A part the identity does not have is `""`,
/// so policies compare without `has` checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub source: IdentitySource,
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    /// The JWT claims the configuration selects (`identity.claims`), as
    /// text; a selected claim the token lacks is `""`.
    pub claims: BTreeMap<String, String>,
}

impl Attributes {
    /// The parts a name itself carries: its trust domain, the namespace of
    /// a path starting `/ns/<namespace>`, and the service account of
    /// exactly `/ns/<namespace>/sa/<service account>`.
    pub fn of_name(source: IdentitySource, name: &str) -> Attributes {
        let mut attributes = Attributes {
            source,
            trust_domain: String::new(),
            namespace: String::new(),
            service_account: String::new(),
            pod: String::new(),
            claims: BTreeMap::new(),
        };
        if let Ok(id) = SpiffeId::parse(name) {
            attributes.trust_domain = id.trust_domain().to_string();
            attributes.namespace = id.namespace().unwrap_or("").to_string();
            if let Some((_, sa)) = id.kubernetes() {
                attributes.service_account = sa.to_string();
            }
        }
        attributes
    }
}

/// A verified workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The principal: a SPIFFE ID, or a configured name.
    pub name: Arc<str>,
    pub attributes: Arc<Attributes>,
    /// When the proof stops being accepted (a JWT's `exp` plus its
    /// issuer's leeway, a certificate chain's earliest `notAfter`): a tunnel
    /// opened with it, or a cached token, is refused after that.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// An identity whose name is all there is (static, source address,
    /// Envoy's principal).
    pub fn named(source: IdentitySource, name: Arc<str>) -> Identity {
        Identity {
            attributes: Arc::new(Attributes::of_name(source, &name)),
            name,
            expires_at: None,
        }
    }

    pub fn source(&self) -> IdentitySource {
        self.attributes.source
    }
}

/// Why a caller has no identity. Named as facts; the reason codes are what
/// agents and audit lines see. None of them carries what was presented:
/// a token or certificate never reaches a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no workload identity for this caller")]
    Missing,
    #[error("the presented identity is not well formed: {0}")]
    Malformed(String),
    #[error("the presented identity has expired")]
    Expired,
    #[error("the presented identity is not valid yet")]
    NotYetValid,
    #[error("the presented identity is not trusted: {0}")]
    Untrusted(String),
    #[error("the token's issuer is not one this listener accepts")]
    WrongIssuer,
    #[error("the token is not meant for tollgate (audience)")]
    WrongAudience,
    #[error("the token's algorithm `{0}` is not allowed")]
    AlgorithmRefused(String),
    #[error("trust domain `{0}` is not allowed")]
    TrustDomainRefused(String),
    #[error("the certificate is not an X.509-SVID: {0}")]
    NotSvid(String),
    /// The issuer's keys could not be had (never fetched, or unreadable):
    /// nothing can be verified, which is tollgate's problem, not the agent's.
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl IdentityError {
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::Missing => "unidentified",
            IdentityError::Malformed(_) => "identity_malformed",
            IdentityError::Expired => "identity_expired",
            IdentityError::NotYetValid => "identity_not_yet_valid",
            IdentityError::Untrusted(_) => "identity_untrusted",
            IdentityError::WrongIssuer => "identity_wrong_issuer",
            IdentityError::WrongAudience => "identity_wrong_audience",
            IdentityError::AlgorithmRefused(_) => "identity_algorithm_refused",
            IdentityError::TrustDomainRefused(_) => "identity_trust_domain_refused",
            IdentityError::NotSvid(_) => "identity_not_svid",
            IdentityError::KeysUnavailable(_) => "identity_keys_unavailable",
        }
    }
}
