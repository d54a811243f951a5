use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair,
};
use serde_json::json;

use super::*;

/// Test-only; see `testdata/README.md`.
const RSA_PKCS8: &[u8] = include_bytes!("../testdata/rsa-2048.pk8");

/// A claim value the hygiene test looks for in every message.
const SECRET_CLAIM: &str = "claim-that-must-not-leak";

enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
}

impl TestKey {
    fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap())
    }

    fn ec(alg: &'static EcdsaSigningAlgorithm, crv: &'static str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        TestKey::Ec(
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
            crv,
        )
    }

    fn p256() -> TestKey {
        TestKey::ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    fn p384() -> TestKey {
        TestKey::ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ed25519() -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            TestKey::Rsa(key) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({"kty": "RSA", "kid": kid, "n": b64e(&public.n), "e": b64e(&public.e)})
            }
            TestKey::Ec(key, crv) => {
                let (x, y) =
                    key.public_key().as_ref()[1..].split_at(if *crv == "P-256" { 32 } else { 48 });
                json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64e(x), "y": b64e(y)})
            }
            TestKey::Ed(key) => {
                let x = b64e(key.public_key().as_ref());
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x})
            }
        }
    }

    fn sign(&self, alg: Algorithm, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa(key) => {
                let padding: &'static dyn RsaEncoding = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                    _ => panic!("{alg:?} is not an RSA algorithm"),
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, message, &mut signature).unwrap();
                signature
            }
            TestKey::Ec(key, _) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
            TestKey::Ed(key) => key.sign(message).as_ref().to_vec(),
        }
    }

    /// A token of `alg` signed by this key, naming `kid` when given.
    fn token(&self, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = json!({"alg": alg.as_str(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        signed(&header, &claims(), |input| self.sign(alg, input))
    }
}

fn b64e(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims() -> Value {
    json!({
        "iss": "https://issuer.example",
        "sub": "spiffe://td/ns/agents/sa/coder",
        "exp": 4_102_444_800u64,
        "secret": SECRET_CLAIM,
    })
}

fn signed(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64e(header.to_string().as_bytes()),
        b64e(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64e(&signature))
}

fn key_set(keys: &[Value]) -> KeySet {
    KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

fn verify(token: &str, keys: &KeySet, allowed: &[Algorithm]) -> Result<(), JwsError> {
    decode(token)?.verify(keys, allowed)
}

fn assert_malformed(token: &str, why: &str) {
    assert!(
        matches!(decode(token), Err(JwsError::Malformed(_))),
        "{why}: not refused as malformed"
    );
}

#[test]
fn every_algorithm_verifies() {
    let (rsa, p256, p384, ed) = (
        TestKey::rsa(),
        TestKey::p256(),
        TestKey::p384(),
        TestKey::ed25519(),
    );
    let keys = key_set(&[
        rsa.jwk("rsa"),
        p256.jwk("p256"),
        p384.jwk("p384"),
        ed.jwk("ed"),
    ]);
    assert_eq!((keys.len(), keys.skipped()), (4, 0));
    for alg in Algorithm::ALL {
        let (key, kid) = match alg {
            Algorithm::ES256 => (&p256, "p256"),
            Algorithm::ES384 => (&p384, "p384"),
            Algorithm::EdDSA => (&ed, "ed"),
            _ => (&rsa, "rsa"),
        };
        for kid in [Some(kid), None] {
            let token = key.token(alg, kid);
            assert!(looks_like_jwt(&token));
            let unverified = decode(&token).unwrap();
            assert_eq!(unverified.alg(), alg.as_str());
            assert_eq!(unverified.kid(), kid);
            assert_eq!(unverified.claims()["secret"], SECRET_CLAIM);
            assert_eq!(
                unverified.verify(&keys, &Algorithm::ALL),
                Ok(()),
                "{alg:?}, kid {kid:?}"
            );
            assert_eq!(unverified.verify(&keys, &[alg]), Ok(()));
        }
    }
}

#[test]
fn algorithm_names_round_trip() {
    for alg in Algorithm::ALL {
        assert_eq!(Algorithm::parse(alg.as_str()), Some(alg));
    }
    for name in [
        "none", "None", "HS256", "HS384", "HS512", "rs256", "ES512", "EdDSA ", "",
    ] {
        assert_eq!(Algorithm::parse(name), None, "{name}");
    }
}

#[test]
fn a_changed_signature_or_payload_fails() {
    let keys_and_algs = [
        (TestKey::rsa(), Algorithm::RS256),
        (TestKey::rsa(), Algorithm::PS256),
        (TestKey::p256(), Algorithm::ES256),
        (TestKey::p384(), Algorithm::ES384),
        (TestKey::ed25519(), Algorithm::EdDSA),
    ];
    for (key, alg) in &keys_and_algs {
        let keys = key_set(&[key.jwk("k")]);
        let token = key.token(*alg, Some("k"));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
        flipped[10] ^= 0x01;
        let forged = format!("{input}.{}", b64e(&flipped));
        assert_eq!(
            verify(&forged, &keys, &Algorithm::ALL),
            Err(JwsError::BadSignature),
            "{alg:?}"
        );

        let (header, _) = input.split_once('.').unwrap();
        let other_claims = b64e(br#"{"sub":"spiffe://td/ns/agents/sa/admin"}"#);
        let swapped = format!("{header}.{other_claims}.{signature}");
        assert_eq!(
            verify(&swapped, &keys, &Algorithm::ALL),
            Err(JwsError::BadSignature),
            "{alg:?}"
        );
    }
}

#[test]
fn unsecured_tokens_are_refused_by_name() {
    let keys = key_set(&[TestKey::rsa().jwk("k")]);
    for (alg, shown) in [("none", "none"), ("None", "None"), ("NONE", "NONE")] {
        let token = signed(&json!({"alg": alg}), &claims(), |_| Vec::new());
        assert!(token.ends_with('.'));
        assert_eq!(
            verify(&token, &keys, &Algorithm::ALL),
            Err(JwsError::AlgorithmRefused(shown.into()))
        );
    }
}

/// The classic forgery: an HMAC keyed with bytes of the issuer's public
/// key. No `HS*` algorithm exists here, so it is refused before any key is
/// looked at, whatever the caller allows.
#[test]
fn hmac_keyed_with_the_public_key_is_refused() {
    use ring::hmac;
    let rsa = TestKey::rsa();
    let jwk = rsa.jwk("k");
    let TestKey::Rsa(pair) = &rsa else {
        unreachable!()
    };
    let n = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public()).n;
    let n_text = jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let der = pair.public().as_ref().to_vec();
    let oct = json!({"kty": "oct", "kid": "k", "k": b64e(&n)});
    let keys = key_set(&[jwk.clone(), oct]);
    assert_eq!((keys.len(), keys.skipped()), (1, 1));
    for (name, alg) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        for secret in [&n, &n_text, &der, &jwk.to_string().into_bytes()] {
            let token = signed(&json!({"alg": name, "kid": "k"}), &claims(), |input| {
                hmac::sign(&hmac::Key::new(alg, secret), input)
                    .as_ref()
                    .to_vec()
            });
            assert_eq!(
                verify(&token, &keys, &Algorithm::ALL),
                Err(JwsError::AlgorithmRefused(name.into()))
            );
        }
    }
}

#[test]
fn an_algorithm_not_allowed_is_refused() {
    let key = TestKey::p256();
    let keys = key_set(&[key.jwk("k")]);
    let token = key.token(Algorithm::ES256, Some("k"));
    let refused = Err(JwsError::AlgorithmRefused("ES256".into()));
    assert_eq!(
        verify(&token, &keys, &[Algorithm::RS256, Algorithm::ES384]),
        refused
    );
    assert_eq!(verify(&token, &keys, &[]), refused);
}

#[test]
fn a_refused_algorithm_is_shown_short_and_printable() {
    let keys = key_set(&[]);
    let long = "A".repeat(100);
    let token = signed(&json!({"alg": long}), &claims(), |_| vec![1]);
    assert_eq!(
        verify(&token, &keys, &Algorithm::ALL),
        Err(JwsError::AlgorithmRefused("A".repeat(32)))
    );
    let token = signed(&json!({"alg": "HS256\n{\"forged\":1}"}), &claims(), |_| {
        vec![1]
    });
    assert_eq!(
        verify(&token, &keys, &Algorithm::ALL),
        Err(JwsError::AlgorithmRefused("HS256?{\"forged\":1}".into()))
    );
}

#[test]
fn an_unknown_kid_is_refused() {
    let key = TestKey::ed25519();
    let keys = key_set(&[key.jwk("k1")]);
    assert!(keys.has_kid("k1") && !keys.has_kid("k2"));
    let token = key.token(Algorithm::EdDSA, Some("k2"));
    assert_eq!(
        verify(&token, &keys, &Algorithm::ALL),
        Err(JwsError::UnknownKey)
    );
    assert_eq!(
        verify(&token, &KeySet::default(), &Algorithm::ALL),
        Err(JwsError::UnknownKey)
    );
}

/// A key is only used with an algorithm of its kind, whether the token
/// names it or not; a signature made by the right key under the wrong
/// algorithm's name finds no key at all.
#[test]
fn a_key_of_the_wrong_kind_is_not_used() {
    let (rsa, p256, p384, ed) = (
        TestKey::rsa(),
        TestKey::p256(),
        TestKey::p384(),
        TestKey::ed25519(),
    );
    let keys = key_set(&[
        rsa.jwk("rsa"),
        p256.jwk("p256"),
        p384.jwk("p384"),
        ed.jwk("ed"),
    ]);
    let cases = [
        (&p256, Algorithm::ES256, "rsa"),
        (&p256, Algorithm::ES256, "p384"),
        (&p384, Algorithm::ES384, "p256"),
        (&ed, Algorithm::EdDSA, "p256"),
        (&rsa, Algorithm::RS256, "ed"),
        (&rsa, Algorithm::PS256, "p256"),
    ];
    for (key, alg, kid) in cases {
        let token = key.token(alg, Some(kid));
        assert_eq!(
            verify(&token, &keys, &Algorithm::ALL),
            Err(JwsError::UnknownKey),
            "{alg:?} with {kid}"
        );
    }
    let only_ec = key_set(&[p256.jwk("p256")]);
    let token = rsa.token(Algorithm::RS256, None);
    assert_eq!(
        verify(&token, &only_ec, &Algorithm::ALL),
        Err(JwsError::UnknownKey)
    );
}

#[test]
fn a_jwk_alg_limits_the_key_to_it() {
    let rsa = TestKey::rsa();
    let mut jwk = rsa.jwk("k");
    jwk["alg"] = json!("PS256");
    let keys = key_set(&[jwk]);
    let rs256 = rsa.token(Algorithm::RS256, Some("k"));
    assert_eq!(
        verify(&rs256, &keys, &Algorithm::ALL),
        Err(JwsError::UnknownKey)
    );
    let ps256 = rsa.token(Algorithm::PS256, Some("k"));
    assert_eq!(verify(&ps256, &keys, &Algorithm::ALL), Ok(()));
}

#[test]
fn malformed_tokens_are_refused() {
    let key = TestKey::p256();
    let good = key.token(Algorithm::ES256, Some("k"));
    let mut parts = good.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let enc = |text: &str| b64e(text.as_bytes());
    let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"ES256","k":12}"#);
    assert!(padded.ends_with('='));
    let cases = [
        (format!("{header}.{payload}"), "two parts"),
        (format!("{good}.{signature}"), "four parts"),
        (String::new(), "empty"),
        (
            format!("{header}.{payload}.{signature}=="),
            "padded signature",
        ),
        (format!("{padded}.{payload}.{signature}"), "padded header"),
        (
            format!("{header}.{payload}.+{}", &signature[1..]),
            "standard alphabet +",
        ),
        (
            format!("{header}.{payload}./{}", &signature[1..]),
            "standard alphabet /",
        ),
        (format!("{header}.{payload}!.{signature}"), "not base64"),
        (format!("{header}..{signature}"), "empty payload"),
        (format!(".{payload}.{signature}"), "empty header"),
        (
            format!("{}.{payload}.{signature}", enc("not json")),
            "header not JSON",
        ),
        (
            format!("{}.{payload}.{signature}", enc(r#"["ES256"]"#)),
            "header an array",
        ),
        (
            format!("{header}.{}.{signature}", enc(r#""a string""#)),
            "payload a string",
        ),
        (
            format!("{header}.{}.{signature}", enc("[1,2]")),
            "payload an array",
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                enc(r#"{"alg":"ES256","crit":["exp"]}"#)
            ),
            "crit",
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                enc(r#"{"alg":"ES256","crit":[]}"#)
            ),
            "empty crit",
        ),
        (
            format!("{}.{payload}.{signature}", enc(r#"{"typ":"JWT"}"#)),
            "no alg",
        ),
        (
            format!("{}.{payload}.{signature}", enc(r#"{"alg":256}"#)),
            "alg a number",
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                enc(r#"{"alg":"ES256","kid":7}"#)
            ),
            "kid a number",
        ),
    ];
    for (token, why) in &cases {
        assert_malformed(token, why);
    }
    assert!(decode(&good).is_ok());
}

#[test]
fn an_oversized_token_is_refused() {
    let key = TestKey::ed25519();
    let mut big = claims();
    big["pad"] = json!("x".repeat(8 * 1024));
    let header = json!({"alg": "EdDSA"});
    let fits = signed(&header, &big, |input| key.sign(Algorithm::EdDSA, input));
    assert!(fits.len() > 8 * 1024 && fits.len() <= MAX_TOKEN_LEN);
    assert_eq!(
        verify(&fits, &key_set(&[key.jwk("k")]), &Algorithm::ALL),
        Ok(())
    );
    big["pad"] = json!("x".repeat(16 * 1024));
    let over = signed(&header, &big, |input| key.sign(Algorithm::EdDSA, input));
    assert_eq!(
        decode(&over).unwrap_err(),
        JwsError::Malformed("longer than 16 KiB")
    );
}

/// Tokens are credentials: no message or debug output may carry one of
/// their parts or their claims.
#[test]
fn errors_and_debug_output_never_carry_the_token() {
    let (rsa, p256) = (TestKey::rsa(), TestKey::p256());
    let keys = key_set(&[rsa.jwk("rsa")]);
    let token = p256.token(Algorithm::ES256, Some("rsa"));
    let (input, signature) = token.rsplit_once('.').unwrap();
    let payload = input.split_once('.').unwrap().1;
    let tampered = format!(
        "{}.{signature}",
        rsa.token(Algorithm::RS256, Some("rsa"))
            .rsplit_once('.')
            .unwrap()
            .0
    );
    let outcomes = [
        verify(&token, &keys, &Algorithm::ALL),
        verify(&token, &keys, &[Algorithm::RS256]),
        verify(&tampered, &keys, &Algorithm::ALL),
        verify(&format!("{input}.{signature}="), &keys, &Algorithm::ALL),
        verify(input, &keys, &Algorithm::ALL),
    ];
    let unverified = decode(&token).unwrap();
    let mut shown = vec![format!("{unverified:?}"), format!("{keys:?}")];
    for outcome in outcomes {
        let error = outcome.unwrap_err();
        shown.push(error.to_string());
        shown.push(format!("{error:?}"));
    }
    for text in shown {
        for part in [payload, signature, SECRET_CLAIM, &token] {
            assert!(!text.contains(part), "{text:?} shows a part of the token");
        }
    }
    assert_eq!(format!("{keys:?}"), "KeySet { keys: 1, skipped: 0 }");
}

#[test]
fn unusable_keys_are_skipped() {
    let rsa = TestKey::rsa();
    let good_rsa = rsa.jwk("rsa");
    let mut short_rsa = good_rsa.clone();
    short_rsa["n"] = json!(b64e(&[0xc5; 128]));
    let mut odd_bits = good_rsa.clone();
    odd_bits["n"] = json!(b64e(&[0x7f; 256]));
    let mut even_exponent = good_rsa.clone();
    even_exponent["e"] = json!(b64e(&[1, 0, 0]));
    let mut padded_n = good_rsa.clone();
    padded_n["n"] = json!(format!("{}=", good_rsa["n"].as_str().unwrap()));
    let mut for_encryption = good_rsa.clone();
    for_encryption["use"] = json!("enc");
    let mut oaep = good_rsa.clone();
    oaep["alg"] = json!("RSA-OAEP");
    let mut ec_alg_on_rsa = good_rsa.clone();
    ec_alg_on_rsa["alg"] = json!("ES256");
    let mut no_verify_op = good_rsa.clone();
    no_verify_op["key_ops"] = json!(["encrypt"]);
    let mut signing_use = good_rsa.clone();
    signing_use["use"] = json!("sig");
    signing_use["key_ops"] = json!(["verify"]);
    let p256 = TestKey::p256().jwk("p256");
    let mut short_x = p256.clone();
    short_x["x"] = json!(b64e(&[7; 31]));
    let mut p384_label = p256.clone();
    p384_label["crv"] = json!("P-384");
    let mut leading_zero_n = rsa.jwk("zero");
    let n = URL_SAFE_NO_PAD
        .decode(good_rsa["n"].as_str().unwrap())
        .unwrap();
    leading_zero_n["n"] = json!(b64e(&[&[0u8][..], &n].concat()));

    let keys = key_set(&[
        good_rsa,
        signing_use,
        leading_zero_n,
        p256,
        json!({"kty": "oct", "k": b64e(b"a shared secret")}),
        short_rsa,
        odd_bits,
        even_exponent,
        padded_n,
        for_encryption,
        oaep,
        ec_alg_on_rsa,
        no_verify_op,
        short_x,
        p384_label,
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "X25519", "x": b64e(&[9; 32])}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64e(&[9; 31])}),
        json!({"kty": "RSA", "n": 5, "e": "AQAB"}),
        json!({"kty": "RSA", "e": "AQAB"}),
        json!({"kty": "dilithium"}),
        json!({"n": "AQAB"}),
        json!("not an object"),
    ]);
    assert_eq!((keys.len(), keys.skipped()), (4, 19));
    let token = rsa.token(Algorithm::RS256, None);
    assert_eq!(verify(&token, &keys, &Algorithm::ALL), Ok(()));
    let token = rsa.token(Algorithm::RS256, Some("zero"));
    assert_eq!(verify(&token, &keys, &Algorithm::ALL), Ok(()));
}

#[test]
fn a_key_set_document_must_have_keys() {
    for document in ["", "not json", "{\"keys\":[}"] {
        assert!(
            matches!(
                KeySet::from_jwks(document.as_bytes()),
                Err(JwksError::NotJson(_))
            ),
            "{document}"
        );
    }
    for document in ["{}", "[]", "{\"keys\":5}", "{\"keys\":{}}", "null"] {
        assert!(
            matches!(
                KeySet::from_jwks(document.as_bytes()),
                Err(JwksError::NoKeys)
            ),
            "{document}"
        );
    }
    let empty = KeySet::from_jwks(b"{\"keys\":[]}").unwrap();
    assert!(empty.is_empty() && empty.skipped() == 0);
}

#[test]
fn what_looks_like_a_jwt() {
    let cases = [
        ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", true),
        ("eyJ.e.s", true),
        ("eyJa-_.b-_.c-_", true),
        ("tgt_0123456789abcdef", false),
        ("eyJa.eyJb", false),
        ("eyJa..sig", false),
        // `alg: none` has no signature; it must reach the refusal.
        ("eyJa.b.", true),
        (".eyJb.c", false),
        ("eyJa.b.c.d", false),
        ("eyJa.b.c.d.e", false),
        ("abc.def.ghi", false),
        ("eyJ+.b.c", false),
        ("eyJa.b/.c", false),
        ("eyJa.b.c=", false),
        ("eyJa.b.c ", false),
        ("", false),
    ];
    for (value, expected) in cases {
        assert_eq!(looks_like_jwt(value), expected, "{value:?}");
    }
}
