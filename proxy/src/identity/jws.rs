//! JWS compact serialization: verifying a JWT's signature against a JWKS.
//!
//! Only asymmetric algorithms exist here. `none` and every HMAC algorithm
//! have no [`Algorithm`] variant and `oct` keys never enter a [`KeySet`], so
//! no configuration can allow them and a public key can never be used as an
//! HMAC secret (the classic algorithm-confusion forgery).
//!
//! Verifying is split in two, [`decode`] then [`Unverified::verify`], so a
//! caller can pick the issuer's keys from the unverified claims. Nothing
//! read from an unverified token may be trusted before `verify` succeeds.
//!
//! Tokens are credentials: no error here carries the token, its signature or
//! its claims — only fixed text and, for a refused algorithm, its name.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self as sig, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Longer than any honest token, and small enough that decoding a hostile
/// one is cheap.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// RSA keys below this are refused (and `ring` refuses their signatures
/// anyway); above ring's limit a key could never verify.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// How much of a refused algorithm's name reaches a message.
const ALG_SHOWN: usize = 32;

/// The signature algorithms tollgate verifies (RFC 7518 names; `EdDSA` is
/// Ed25519 only, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Exact JOSE names only: `rs256` or `none` are not algorithms here.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// `Some` for the RSA algorithms: ring's parameters, which also bound
    /// the key size to 2048–8192 bits.
    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => return None,
        })
    }
}

/// Why a token was refused. Named as facts; none carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the token is not a well-formed JWS: {0}")]
    Malformed(&'static str),
    /// The name as the header wrote it, shortened and made printable.
    #[error("the token's algorithm `{0}` is not allowed")]
    AlgorithmRefused(String),
    /// No key in the set has the token's `kid`, or none that has it (or,
    /// without a `kid`, none at all) is of the kind the algorithm needs.
    #[error("no key of the issuer's key set fits the token")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// Why a JWKS document is unusable as a whole.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The key set is public, so the parser's message may quote it.
    #[error("the key set is not JSON: {0}")]
    NotJson(String),
    #[error("the key set has no `keys` array")]
    NoKeys,
}

/// A JWKS's usable public keys, decoded once so a verification does no key
/// parsing beyond what ring needs.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: usize,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`: when present, the only algorithm the key serves.
    alg: Option<Algorithm>,
    material: Material,
}

/// Public key bytes in the form ring takes them.
#[derive(Clone)]
enum Material {
    /// Big-endian, without leading zeros.
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
    },
    /// Uncompressed points: `0x04 || x || y`.
    P256(Box<[u8]>),
    P384(Box<[u8]>),
    Ed25519([u8; 32]),
}

/// The members of a JWK tollgate reads; the rest are ignored.
#[derive(serde::Deserialize)]
struct RawJwk {
    kty: String,
    crv: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    /// `{"keys":[…]}`. A key tollgate cannot use is skipped and counted, not
    /// fatal: one exotic key must not take an issuer's other keys down.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, JwksError> {
        let document: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let Value::Object(mut document) = document else {
            return Err(JwksError::NoKeys);
        };
        let Some(Value::Array(raw_keys)) = document.remove("keys") else {
            return Err(JwksError::NoKeys);
        };
        let mut set = KeySet::default();
        for raw in raw_keys {
            match serde_json::from_value(raw).ok().and_then(Key::from_jwk) {
                Some(key) => set.keys.push(key),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys of the document left out as unusable: for a log line.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Counts only: the key bytes are public, but a wall of base64 in a log
/// line tells its reader nothing.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Key {
    /// `None` for a key tollgate will not use.
    fn from_jwk(raw: RawJwk) -> Option<Key> {
        if raw.use_.is_some_and(|u| u != "sig") {
            return None;
        }
        if raw
            .key_ops
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return None;
        }
        // An `alg` we do not verify (`HS256`, `RSA-OAEP`, …) marks a key
        // meant for something else.
        let alg = match raw.alg {
            Some(name) => Some(Algorithm::parse(&name)?),
            None => None,
        };
        let material = match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("RSA", _) => rsa_material(raw.n.as_deref()?, raw.e.as_deref()?)?,
            ("EC", Some("P-256")) => Material::P256(ec_point(raw.x?, raw.y?, 32)?),
            ("EC", Some("P-384")) => Material::P384(ec_point(raw.x?, raw.y?, 48)?),
            ("OKP", Some("Ed25519")) => Material::Ed25519(b64(&raw.x?)?.try_into().ok()?),
            // `oct` above all: a symmetric key is never accepted.
            _ => return None,
        };
        if alg.is_some_and(|a| !material.fits(a)) {
            return None;
        }
        Some(Key {
            kid: raw.kid,
            alg,
            material,
        })
    }

    fn serves(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.material.fits(alg)
    }
}

impl Material {
    fn fits(&self, alg: Algorithm) -> bool {
        match self {
            Material::Rsa { .. } => alg.rsa_parameters().is_some(),
            Material::P256(_) => alg == Algorithm::ES256,
            Material::P384(_) => alg == Algorithm::ES384,
            Material::Ed25519(_) => alg == Algorithm::EdDSA,
        }
    }

    /// Every (key, algorithm) pair not listed fails: a key is only ever
    /// used with an algorithm of its own kind.
    fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let verified = match (self, alg) {
            (Material::Rsa { n, e }, alg) => match alg.rsa_parameters() {
                Some(params) => RsaPublicKeyComponents { n, e }.verify(params, message, signature),
                None => return false,
            },
            (Material::P256(point), Algorithm::ES256) => {
                UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (Material::P384(point), Algorithm::ES384) => {
                UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (Material::Ed25519(x), Algorithm::EdDSA) => {
                UnparsedPublicKey::new(&sig::ED25519, x).verify(message, signature)
            }
            _ => return false,
        };
        verified.is_ok()
    }
}

/// Leading zero bytes are dropped (RFC 7518 forbids them, some issuers
/// send them anyway; ring refuses them). The exponent is held to what
/// ring accepts, so a key that could never verify is counted as skipped.
fn rsa_material(n: &str, e: &str) -> Option<Material> {
    let n = strip_leading_zeros(b64(n)?);
    let e = strip_leading_zeros(b64(e)?);
    let bits = n.len() * 8 - n.first()?.leading_zeros() as usize;
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return None;
    }
    if e.len() > 5 {
        return None;
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
        return None;
    }
    Some(Material::Rsa {
        n: n.into(),
        e: e.into(),
    })
}

/// RFC 7518 makes `x` and `y` full length, so a short one is malformed
/// rather than a number to pad.
fn ec_point(x: String, y: String, len: usize) -> Option<Box<[u8]>> {
    let (x, y) = (b64(&x)?, b64(&y)?);
    if x.len() != len || y.len() != len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(point.into())
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Base64url without padding, strictly: padding, the standard alphabet and
/// non-zero trailing bits are refused, so one token has one spelling.
fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A token split and decoded, its signature NOT verified.
pub struct Unverified<'t> {
    /// `header.payload`, what the signature covers.
    signing_input: &'t str,
    signature: Vec<u8>,
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
}

impl<'t> Unverified<'t> {
    /// The header's `alg` as written, which may name no [`Algorithm`].
    pub fn alg(&self) -> &str {
        &self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Not to be trusted before [`Unverified::verify`] succeeds.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The algorithm is checked first, so `none` and `HS256` are refused by
    /// name whatever keys the set holds. With a `kid` only keys with that
    /// kid are tried; without one, every key of the right kind is.
    pub fn verify(&self, keys: &KeySet, allowed: &[Algorithm]) -> Result<(), JwsError> {
        let alg = Algorithm::parse(&self.alg)
            .filter(|a| allowed.contains(a))
            .ok_or_else(|| JwsError::AlgorithmRefused(shown_alg(&self.alg)))?;
        let mut candidates = keys
            .keys
            .iter()
            .filter(|k| self.kid.is_none() || k.kid == self.kid)
            .filter(|k| k.serves(alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwsError::UnknownKey);
        }
        let message = self.signing_input.as_bytes();
        if candidates.any(|k| k.material.verify(alg, message, &self.signature)) {
            Ok(())
        } else {
            Err(JwsError::BadSignature)
        }
    }
}

/// The header's names only: claims and signature stay out of logs.
impl fmt::Debug for Unverified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An attacker writes the header: what reaches a log line is short and
/// cannot break the line.
fn shown_alg(alg: &str) -> String {
    alg.chars()
        .take(ALG_SHOWN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Splits `header.payload.signature` and decodes the parts. An empty
/// signature passes here so an unsecured (`none`) token is refused by its
/// algorithm's name in [`Unverified::verify`].
pub fn decode(token: &str) -> Result<Unverified<'_>, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("not three dot-separated parts"));
    };
    let (alg, kid) = parse_header(header)?;
    let claims =
        json_object(payload).ok_or(JwsError::Malformed("the payload is not a JSON object"))?;
    let signature = b64(signature).ok_or(JwsError::Malformed("the signature is not base64url"))?;
    Ok(Unverified {
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
        alg,
        kid,
        claims,
    })
}

fn parse_header(header: &str) -> Result<(String, Option<String>), JwsError> {
    let mut header =
        json_object(header).ok_or(JwsError::Malformed("the header is not a JSON object"))?;
    // `crit` names extensions the verifier must understand; we know none.
    if header.contains_key("crit") {
        return Err(JwsError::Malformed("the header has `crit`"));
    }
    let Some(Value::String(alg)) = header.remove("alg") else {
        return Err(JwsError::Malformed("the header has no string `alg`"));
    };
    let kid = match header.remove("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid),
        Some(_) => return Err(JwsError::Malformed("the header's `kid` is not a string")),
    };
    Ok((alg, kid))
}

/// `None` for bad base64url, bad JSON or JSON that is not an object; the
/// parser's own message is dropped because it may quote the token.
fn json_object(part: &str) -> Option<Map<String, Value>> {
    serde_json::from_slice(&b64(part)?).ok()
}

/// A cheap shape test telling a JWT from other bearer secrets: three
/// non-empty base64url parts, the first starting like a JSON object
/// (`{"` encodes as `eyJ`). Says nothing about validity.
pub fn looks_like_jwt(value: &str) -> bool {
    let is_b64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = value.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // An empty signature still looks like a JWT (`alg: none`): it is
        // then refused as such, with that reason, rather than ignored.
        (Some(header), Some(payload), Some(signature), None) => {
            header.starts_with("eyJ")
                && !payload.is_empty()
                && [header, payload, signature].into_iter().all(is_b64url)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
