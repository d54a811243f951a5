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
use serde_json::{json, Value};
use tollgate::identity::jws::{decode, KeySet};
use tollgate_benches::fixtures;
use tollgate_benches::jwt::SigningKey;

/// The test-only key `proxy/src/identity/testdata/README.md` describes:
/// ring cannot generate RSA keys.
const RSA_KEY: &str = "../proxy/src/identity/testdata/rsa-2048.pk8";

/// One algorithm's token, the key set that verifies it, and the key that
/// signed it (for the bare ring check of the same signature).
struct Case {
    token: String,
    keys: KeySet,
    key: SigningKey,
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

fn case(key: SigningKey) -> Case {
    let token = key.mint(&claims()).unwrap();
    let keys = KeySet::from_jwks(key.jwks().to_string().as_bytes()).unwrap();
    Case { token, keys, key }
}

fn cases() -> Vec<Case> {
    let rsa =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RSA_KEY)).unwrap();
    [
        SigningKey::rs256("k", &rsa),
        SigningKey::es256("k"),
        SigningKey::eddsa("k"),
    ]
    .into_iter()
    .map(|key| case(key.unwrap()))
    .collect()
}

impl Case {
    /// What tollgate does with a token it has not seen.
    fn first_verification(&self) -> usize {
        let unverified = decode(black_box(&self.token)).unwrap();
        unverified.verify(&self.keys, &[self.key.alg]).unwrap();
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
        let mut group = c.benchmark_group(format!("jwt {}", case.key.alg.as_str()));
        group.bench_function("decode + verify", |b| {
            b.iter(|| black_box(case.first_verification()))
        });
        let (message, signature) = case.signed_parts();
        assert!(case.key.ring_verifies(&message, &signature));
        group.bench_function("ring alone", |b| {
            b.iter(|| {
                black_box(
                    case.key
                        .ring_verifies(black_box(&message), black_box(&signature)),
                )
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
            black_box(case.key.ring_verifies(&message, &signature));
        });
        for (what, p) in [("decode + verify", tollgate), ("ring alone", ring)] {
            println!(
                "  {:<5} {what:<15}: {:.2} / {:.2} / {:.2}",
                case.key.alg.as_str(),
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
