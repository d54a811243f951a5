//! A JWT's first verification — what a miss of the verified-token cache
//! costs before the claims are checked: decoding one token and verifying
//! its signature against a key set parsed beforehand, for RS256 (2048-bit),
//! ES256 and EdDSA. `ring alone` is the bare signature check on the same
//! bytes, so the difference is tollgate's own splitting and decoding.
//!
//!     cargo bench -p tollgate-benches --bench identity
//!
//! After criterion's means, single-call percentiles are printed too.

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, Criterion};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Value};
use tollgate::identity::jws::{decode, Algorithm, KeySet};
use tollgate_benches::fixtures;

/// The test-only key `proxy/src/identity/testdata/README.md` describes:
/// ring cannot generate RSA keys.
const RSA_KEY: &str = "../proxy/src/identity/testdata/rsa-2048.pk8";

/// ring's own check of a message and signature against one public key.
type RingCheck = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// One algorithm's token, the key set that verifies it, and the bare ring
/// check of the same signature.
struct Case {
    alg: Algorithm,
    token: String,
    keys: KeySet,
    ring_alone: RingCheck,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The shape of a Kubernetes projected service-account token: what an
/// agent's sidecar would present.
fn claims() -> Value {
    json!({
        "aud": ["tollgate"],
        "exp": 4_102_444_800u64,
        "iat": 1_767_225_600u64,
        "nbf": 1_767_225_600u64,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:agents:coder",
        "kubernetes.io": {
            "namespace": "agents",
            "pod": {"name": "coder-7d9f8b6c5-x2k4q", "uid": "0f8e3c1a-5b7d-4e2f-9a6c-3d1b8e7f4a20"},
            "serviceaccount": {"name": "coder", "uid": "6c2a9e4f-1d3b-4a8e-b7f5-0e9c2d4a6b13"}
        }
    })
}

fn token(alg: Algorithm, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let header = json!({"alg": alg.as_str(), "kid": "k", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn key_set(jwk: Value) -> KeySet {
    KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
}

fn rs256() -> Case {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RSA_KEY);
    let pair = sig::RsaKeyPair::from_pkcs8(&std::fs::read(path).unwrap()).unwrap();
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let token = token(Algorithm::RS256, |input| {
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &sig::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input,
            &mut signature,
        )
        .unwrap();
        signature
    });
    let jwk = json!({"kty": "RSA", "kid": "k", "n": b64(&public.n), "e": b64(&public.e)});
    Case {
        alg: Algorithm::RS256,
        token,
        keys: key_set(jwk),
        ring_alone: Box::new(move |message, signature| {
            public
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok()
        }),
    }
}

fn es256() -> Case {
    let rng = SystemRandom::new();
    let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let token = token(Algorithm::ES256, |input| {
        pair.sign(&rng, input).unwrap().as_ref().to_vec()
    });
    let (x, y) = point[1..].split_at(32);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k", "x": b64(x), "y": b64(y)});
    Case {
        alg: Algorithm::ES256,
        token,
        keys: key_set(jwk),
        ring_alone: Box::new(move |message, signature| {
            UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &point)
                .verify(message, signature)
                .is_ok()
        }),
    }
}

fn eddsa() -> Case {
    let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = pair.public_key().as_ref().to_vec();
    let token = token(Algorithm::EdDSA, |input| pair.sign(input).as_ref().to_vec());
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64(&x)});
    Case {
        alg: Algorithm::EdDSA,
        token,
        keys: key_set(jwk),
        ring_alone: Box::new(move |message, signature| {
            UnparsedPublicKey::new(&sig::ED25519, &x)
                .verify(message, signature)
                .is_ok()
        }),
    }
}

fn cases() -> Vec<Case> {
    vec![rs256(), es256(), eddsa()]
}

impl Case {
    /// What tollgate does with a token it has not seen.
    fn first_verification(&self) -> usize {
        let unverified = decode(black_box(&self.token)).unwrap();
        unverified.verify(&self.keys, &[self.alg]).unwrap();
        unverified.claims().len()
    }

    /// The signing input and the decoded signature, for `ring alone`.
    fn signed_parts(&self) -> (Vec<u8>, Vec<u8>) {
        let (input, signature) = self.token.rsplit_once('.').unwrap();
        (
            input.as_bytes().to_vec(),
            URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
    }
}

fn verify(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(format!("jwt {}", case.alg.as_str()));
        group.bench_function("decode + verify", |b| {
            b.iter(|| black_box(case.first_verification()))
        });
        let (message, signature) = case.signed_parts();
        assert!((case.ring_alone)(&message, &signature));
        group.bench_function("ring alone", |b| {
            b.iter(|| {
                black_box((case.ring_alone)(
                    black_box(&message),
                    black_box(&signature),
                ))
            })
        });
        group.finish();
    }
}

fn print_percentiles() {
    println!("\nsingle-call latency, µs (mean / p50 / p99 over 10,000 calls):");
    for case in cases() {
        let (message, signature) = case.signed_parts();
        let tollgate = fixtures::percentiles(10_000, |_| {
            black_box(case.first_verification());
        });
        let ring = fixtures::percentiles(10_000, |_| {
            black_box((case.ring_alone)(&message, &signature));
        });
        for (what, p) in [("decode + verify", tollgate), ("ring alone", ring)] {
            println!(
                "  {:<5} {what:<15}: {:.2} / {:.2} / {:.2}",
                case.alg.as_str(),
                p.mean,
                p.p50,
                p.p99
            );
        }
    }
}

criterion_group!(benches, verify);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench -- <filter>` and `--list` should not pay for this.
    if std::env::args().skip(1).all(|a| a == "--bench") {
        print_percentiles();
    }
}
