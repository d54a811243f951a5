//! Workload JWTs: the shape test that tells a JWT from a task token, the
//! JWS decoder (header, payload, signature), verification against a real
//! key set, the claims → identity mapping of each token kind, and JWKS
//! documents as an issuer serves them.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Value};

use crate::config::{IssuerConfig, JwksSource, TokenKind};
use crate::identity::jws::{self, Algorithm, JwsError, KeySet};
use crate::identity::jwt::{Issuer, JwtVerifier};
use crate::identity::{IdentitySource, TrustDomains};

/// The issuer every seed token names.
pub(super) const ISSUER: &str = "https://issuer.fuzz.example";
pub(super) const AUDIENCE: &str = "tollgate";
const TRUST_DOMAIN: &str = "cluster.local";

/// The RSA key the identity tests sign with (test-only, see its README).
const RSA_PKCS8: &[u8] = include_bytes!("../identity/testdata/rsa-2048.pk8");
/// A fixed Ed25519 key, so committed seed tokens keep verifying.
const ED25519_SEED: [u8; 32] = [0x42; 32];

/// A JWKS document when it starts with `{`, else a bearer token.
pub fn jwt(data: &[u8]) {
    if data.first() == Some(&b'{') {
        return jwks(data);
    }
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let looks = jws::looks_like_jwt(token);
    let unverified = match jws::decode(token) {
        Ok(unverified) => unverified,
        Err(err) => return check_error_hides_token(&err, token),
    };
    // A token tollgate can read must also be taken for one, or it would
    // be handled as a task token instead.
    if token.starts_with("eyJ") {
        assert!(looks, "a decodable JWT not taken for one");
    }
    // Whatever the header says, no key means no identity, and an empty
    // allow-list refuses by name.
    assert!(matches!(
        unverified.verify(&KeySet::default(), &Algorithm::ALL),
        Err(JwsError::UnknownKey | JwsError::AlgorithmRefused(_))
    ));
    match unverified.verify(key_set(), &[]) {
        Err(JwsError::AlgorithmRefused(shown)) => {
            assert!(shown.len() <= 64, "{shown}");
            assert!(shown.chars().all(|c| c.is_ascii_graphic()), "{shown:?}");
        }
        other => panic!("an empty allow-list allowed: {other:?}"),
    }
    if unverified.verify(key_set(), &Algorithm::ALL).is_ok() {
        assert!(Algorithm::parse(unverified.alg()).is_some());
    }
    for (kind, verifier) in verifiers() {
        let Ok(identity) =
            verifier.verified_elsewhere(unverified.claims(), IdentitySource::EnvoyJwt)
        else {
            continue;
        };
        assert!(!identity.name.is_empty());
        assert!(identity.expires_at.is_some(), "a JWT identity expires");
        assert_eq!(identity.source(), IdentitySource::EnvoyJwt);
        match kind {
            TokenKind::Kubernetes { trust_domain } => {
                // Whatever the claims hold, they name one namespace and one
                // service account and nothing else.
                let attrs = &identity.attributes;
                let expected = format!(
                    "spiffe://{trust_domain}/ns/{}/sa/{}",
                    attrs.namespace, attrs.service_account
                );
                assert_eq!(&*identity.name, expected);
                let claimed = unverified
                    .claims()
                    .get("kubernetes.io")
                    .and_then(|k| k.get("namespace"))
                    .and_then(Value::as_str);
                if let Some(ns) = claimed {
                    assert_eq!(attrs.namespace, ns);
                }
            }
            TokenKind::Svid => assert!(identity.name.starts_with("spiffe://")),
            TokenKind::Subject => {
                let sub = unverified.claims().get("sub").and_then(Value::as_str);
                assert_eq!(Some(&*identity.name), sub);
            }
        }
    }
}

/// Every key of the document is either kept or counted as skipped.
fn jwks(data: &[u8]) {
    let Ok(set) = KeySet::from_jwks(data) else {
        return;
    };
    let listed = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|doc| doc.get("keys")?.as_array().map(Vec::len))
        .expect("a key set that loaded has a `keys` array");
    assert_eq!(set.len() + set.skipped(), listed);
}

/// "None carries the token": a refusal's message is shown to agents and
/// logged, so it quotes no part of the token beyond a short `alg`. Only
/// parts that could carry a claim or a signature are looked for (long
/// base64url runs): the fuzzer once sent a message itself as the token.
fn check_error_hides_token(err: &JwsError, token: &str) {
    let shown = err.to_string();
    let encoded = |p: &&str| {
        p.len() >= 16
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    for part in token.split('.').filter(encoded) {
        assert!(!shown.contains(part), "{shown}");
    }
}

fn key_set() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("the test RSA key loads");
        let rsa = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let document = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "fuzz-ed", "x": b64(ed25519().public_key().as_ref())},
            {"kty": "RSA", "kid": "fuzz-rsa", "n": b64(&rsa.n), "e": b64(&rsa.e)},
        ]});
        KeySet::from_jwks(document.to_string().as_bytes()).expect("the fuzz key set loads")
    })
}

pub(super) fn ed25519() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&ED25519_SEED).expect("a 32-byte seed")
}

/// One verifier per token kind, all trusting [`ISSUER`].
fn verifiers() -> &'static [(TokenKind, JwtVerifier)] {
    static VERIFIERS: OnceLock<Vec<(TokenKind, JwtVerifier)>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let kinds = [
            TokenKind::Kubernetes {
                trust_domain: TRUST_DOMAIN.into(),
            },
            TokenKind::Svid,
            TokenKind::Subject,
        ];
        kinds
            .into_iter()
            .map(|kind| {
                let config = IssuerConfig {
                    name: "fuzz".into(),
                    issuer: ISSUER.into(),
                    audiences: vec![AUDIENCE.into()],
                    // Never read: the harness does not fetch keys.
                    jwks: JwksSource::File(PathBuf::from("fuzz-jwks.json")),
                    kind: kind.clone(),
                    algorithms: Vec::new(),
                    leeway: Duration::from_secs(30),
                    refresh: Duration::from_secs(300),
                    ca: None,
                };
                let issuer = Issuer::new(&config).expect("the fuzz issuer is valid");
                let verifier = JwtVerifier::new(
                    vec![Arc::new(issuer)],
                    Arc::from(vec!["team".to_string()]),
                    TrustDomains::new(Vec::new()),
                );
                (kind, verifier)
            })
            .collect()
    })
}
