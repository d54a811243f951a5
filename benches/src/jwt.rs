//! Signing JWTs with ring, and the JWKS that verifies them: the tokens of
//! the identity micro benchmark and the workload token of the load
//! benchmark's JWT row.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Value};
use tollgate::identity::jws::Algorithm;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// ring's errors are not `std::error::Error` without its `std` feature.
fn ring_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("ring: {e}")
}

enum Pair {
    Rsa {
        pair: sig::RsaKeyPair,
        public: RsaPublicKeyComponents<Vec<u8>>,
    },
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

/// One signing key with its `kid`.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pair: Pair,
    rng: SystemRandom,
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(ring_error)?;
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(ring_error)?;
        Ok(SigningKey::new(
            Algorithm::ES256,
            kid,
            Pair::Ecdsa(pair),
            rng,
        ))
    }

    /// A fresh Ed25519 key.
    pub fn eddsa(kid: &str) -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).map_err(ring_error)?;
        let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(ring_error)?;
        Ok(SigningKey::new(
            Algorithm::EdDSA,
            kid,
            Pair::Ed25519(pair),
            rng,
        ))
    }

    /// An RSA key read from PKCS#8 DER (ring cannot generate RSA keys).
    pub fn rs256(kid: &str, pkcs8: &[u8]) -> anyhow::Result<SigningKey> {
        let pair = sig::RsaKeyPair::from_pkcs8(pkcs8).map_err(ring_error)?;
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let pair = Pair::Rsa { pair, public };
        Ok(SigningKey::new(
            Algorithm::RS256,
            kid,
            pair,
            SystemRandom::new(),
        ))
    }

    fn new(alg: Algorithm, kid: &str, pair: Pair, rng: SystemRandom) -> SigningKey {
        SigningKey {
            alg,
            kid: kid.to_string(),
            pair,
            rng,
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let kid = &self.kid;
        match &self.pair {
            Pair::Rsa { public, .. } => {
                json!({"kty": "RSA", "kid": kid, "n": b64(&public.n), "e": b64(&public.e)})
            }
            Pair::Ecdsa(pair) => {
                // An uncompressed point: 0x04, then x and y.
                let (x, y) = pair.public_key().as_ref()[1..].split_at(32);
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(x), "y": b64(y)})
            }
            Pair::Ed25519(pair) => {
                let x = pair.public_key().as_ref();
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(x)})
            }
        }
    }

    /// A JWKS document holding only this key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// A compact JWS of `claims`, its header naming the algorithm and `kid`.
    pub fn mint(&self, claims: &Value) -> anyhow::Result<String> {
        let header = json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", b64(&signature)))
    }

    fn sign(&self, input: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match &self.pair {
            Pair::Rsa { pair, .. } => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&sig::RSA_PKCS1_SHA256, &self.rng, input, &mut signature)
                    .map_err(ring_error)?;
                signature
            }
            Pair::Ecdsa(pair) => pair
                .sign(&self.rng, input)
                .map_err(ring_error)?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
        })
    }

    /// ring's own check of `signature` over `message` with the public key,
    /// and nothing else: the floor under any JWT verification.
    pub fn ring_verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.pair {
            Pair::Rsa { public, .. } => public
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Pair::Ecdsa(pair) => {
                UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                    .verify(message, signature)
                    .is_ok()
            }
            Pair::Ed25519(pair) => {
                UnparsedPublicKey::new(&sig::ED25519, pair.public_key().as_ref())
                    .verify(message, signature)
                    .is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::identity::jws::{decode, KeySet};

    /// Each key's token verifies with tollgate against the JWKS written for
    /// it, and with ring alone.
    #[test]
    fn minted_tokens_verify_against_their_jwks() {
        let rsa =
            std::fs::read(crate::repo_root().join("proxy/src/identity/testdata/rsa-2048.pk8"))
                .unwrap();
        for key in [
            SigningKey::es256("ec").unwrap(),
            SigningKey::eddsa("ed").unwrap(),
            SigningKey::rs256("rsa", &rsa).unwrap(),
        ] {
            let token = key
                .mint(&json!({"sub": "x", "exp": 4_102_444_800u64}))
                .unwrap();
            let keys = KeySet::from_jwks(key.jwks().to_string().as_bytes()).unwrap();
            let unverified = decode(&token).unwrap();
            unverified.verify(&keys, &[key.alg]).unwrap();
            let (input, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            assert!(key.ring_verifies(input.as_bytes(), &signature));
        }
    }
}
