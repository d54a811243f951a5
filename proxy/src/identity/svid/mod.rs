//! X.509-SVIDs: client certificates checked against a trust bundle.
//!
//! The listener's handshake takes any certificate whose key the client
//! holds (`handshake`); [`verify`] then judges the chain once per
//! connection, so a refused certificate becomes a 407 with a reason and an
//! audit line instead of a TLS alert nobody can read.

mod bundle;
mod handshake;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

pub use bundle::{TrustBundle, TrustBundleError, TrustBundleHandle};
pub use handshake::{server_config, DeferredClientVerifier};

use super::{IdentityError, SpiffeId};

/// Allowed trust domains: empty list = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustDomains(Vec<String>);

impl TrustDomains {
    pub fn new(domains: Vec<String>) -> TrustDomains {
        TrustDomains(domains)
    }

    pub fn allows(&self, domain: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|allowed| allowed == domain)
    }
}

/// A chain that is an X.509-SVID issued under the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: SpiffeId,
    /// The earliest `notAfter` of the leaf and the intermediates on the
    /// verified path: past it the chain no longer verifies.
    pub not_after: SystemTime,
}

/// The SPIFFE ID of a presented chain (leaf first), or why not.
///
/// The leaf's shape is judged first (a certificate that is no SVID says so
/// whoever issued it), then the chain: an expired or not yet valid leaf
/// is reported as such before its issuer is looked for. The
/// trust domain comes last, so only a trusted ID is named in a refusal.
pub fn verify(
    chain: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    trust_domains: &TrustDomains,
    now: UnixTime,
) -> Result<Verified, IdentityError> {
    let (leaf, intermediates) = chain.split_first().ok_or(IdentityError::Missing)?;
    let (id, leaf_not_after) = leaf_svid(leaf)?;
    let path_not_after = verify_chain(leaf, intermediates, bundle, now)?;
    if !trust_domains.allows(id.trust_domain()) {
        return Err(IdentityError::TrustDomainRefused(
            id.trust_domain().to_string(),
        ));
    }
    let not_after = path_not_after.map_or(leaf_not_after, |path| path.min(leaf_not_after));
    Ok(Verified { id, not_after })
}

/// The ring provider's algorithms, for handshake signatures and chains alike.
fn algorithms() -> WebPkiSupportedAlgorithms {
    ring::default_provider().signature_verification_algorithms
}

fn not_svid(why: &str) -> IdentityError {
    IdentityError::NotSvid(why.to_string())
}

fn untrusted(why: &str) -> IdentityError {
    IdentityError::Untrusted(why.to_string())
}

/// The leaf as the X.509-SVID specification wants it: one SPIFFE ID, not
/// a CA, a key for signatures only. Returns the ID and the leaf's expiry.
fn leaf_svid(der: &CertificateDer<'_>) -> Result<(SpiffeId, SystemTime), IdentityError> {
    let cert = parse(der).ok_or_else(|| not_svid("the leaf certificate does not parse"))?;
    check_not_ca(&cert)?;
    check_key_usage(&cert)?;
    let id = spiffe_id(&cert)?;
    Ok((id, system_time(&cert.validity().not_after)))
}

/// Trailing bytes are refused, as path validation refuses them.
fn parse<'a>(der: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

fn check_not_ca(cert: &X509Certificate<'_>) -> Result<(), IdentityError> {
    let constraints = cert
        .basic_constraints()
        .map_err(|_| not_svid("the leaf's basic constraints do not parse"))?;
    match constraints {
        Some(constraints) if constraints.value.ca => Err(not_svid("the leaf is a CA certificate")),
        _ => Ok(()),
    }
}

fn check_key_usage(cert: &X509Certificate<'_>) -> Result<(), IdentityError> {
    let usage = cert
        .key_usage()
        .map_err(|_| not_svid("the leaf's key usage does not parse"))?
        .ok_or_else(|| not_svid("the leaf has no key usage"))?
        .value;
    if !usage.digital_signature() {
        return Err(not_svid("the leaf's key usage lacks digitalSignature"));
    }
    if usage.key_cert_sign() || usage.crl_sign() {
        return Err(not_svid(
            "the leaf's key usage allows signing certificates or CRLs",
        ));
    }
    Ok(())
}

/// Exactly one URI SAN, a SPIFFE ID. Other SAN kinds (DNS names) are
/// allowed beside it. The URI itself never reaches the message.
fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, IdentityError> {
    let names = cert
        .subject_alternative_name()
        .map_err(|_| not_svid("the subject alternative names do not parse"))?;
    let mut uris = names
        .iter()
        .flat_map(|names| names.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => {
            SpiffeId::parse(uri).map_err(|e| IdentityError::NotSvid(e.to_string()))
        }
        (None, _) => Err(not_svid("the leaf has no URI SAN")),
        (Some(_), Some(_)) => Err(not_svid("the leaf has more than one URI SAN")),
    }
}

/// Path validation for client authentication against the bundle. Returns
/// the earliest `notAfter` of the intermediates on the path, if any.
fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: UnixTime,
) -> Result<Option<SystemTime>, IdentityError> {
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|_| untrusted("the leaf certificate does not parse"))?;
    let path = end_entity
        .verify_for_usage(
            algorithms().all,
            bundle.anchors(),
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(chain_error)?;
    let expiries = path
        .intermediate_certificates()
        .map(|cert| intermediate_not_after(&cert.der()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(expiries.into_iter().min())
}

/// webpki keeps a certificate's validity to itself, so it is read again.
fn intermediate_not_after(der: &CertificateDer<'_>) -> Result<SystemTime, IdentityError> {
    let cert = parse(der).ok_or_else(|| untrusted("an intermediate certificate does not parse"))?;
    Ok(system_time(&cert.validity().not_after))
}

/// Short fixed texts: webpki's own messages can carry names and times from
/// the certificates.
fn chain_error(error: webpki::Error) -> IdentityError {
    match error {
        webpki::Error::CertExpired { .. } => IdentityError::Expired,
        webpki::Error::CertNotValidYet { .. } => IdentityError::NotYetValid,
        webpki::Error::UnknownIssuer => untrusted("issued by no CA in the trust bundle"),
        webpki::Error::InvalidSignatureForPublicKey => {
            untrusted("a signature in the chain does not verify")
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            untrusted("a certificate in the chain is not for client authentication")
        }
        _ => untrusted("the chain does not verify"),
    }
}

fn system_time(time: &ASN1Time) -> SystemTime {
    let seconds = time.timestamp();
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}
