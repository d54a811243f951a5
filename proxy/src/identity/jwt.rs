//! JWT workload tokens: an issuer's keys, kept fresh, and the checks that
//! turn a verified token into a workload identity.
//!
//! Keys come from a JWKS file, a URL, or OIDC discovery of the issuer
//! (how a Kubernetes API server publishes its service-account keys). They
//! are fetched at start, again every `refresh`, and at once when a token
//! names a `kid` the set lacks (at most once per [`UNKNOWN_KID_PAUSE`], so
//! a stream of made-up `kid`s cannot turn tollgate into a JWKS flooder). A
//! fetch that fails keeps the last good keys.
//!
//! A token is verified once: the identity it proved is cached under the
//! token's SHA-256 until the token expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::config::{IssuerConfig, JwksSource, TokenKind};

use super::jws::{self, Algorithm, JwsError, KeySet};
use super::{Attributes, Identity, IdentityError, IdentitySource, SpiffeId, TrustDomains};

/// The shortest time between two fetches caused by unknown `kid`s.
pub const UNKNOWN_KID_PAUSE: Duration = Duration::from_secs(10);
/// A JWKS or discovery document larger than this is refused.
const MAX_DOCUMENT: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Verified tokens remembered per listener.
const VERIFIED_CACHE_SIZE: usize = 10_000;

/// Where an issuer's keys come from and how they are fetched.
type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

/// One configured issuer: its rules and its current keys.
pub struct Issuer {
    pub name: String,
    issuer: String,
    audiences: Vec<String>,
    kind: TokenKind,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    refresh: Duration,
    source: JwksSource,
    client: Option<HttpsClient>,
    keys: ArcSwap<KeySet>,
    /// Serialises fetches and remembers the last one caused by an unknown
    /// `kid`.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("identity.issuers.{issuer}.algorithms: `{name}` is not one of {allowed}")]
    Algorithm {
        issuer: String,
        name: String,
        allowed: String,
    },
    #[error("identity.issuers.{issuer}: {message}")]
    Setup { issuer: String, message: String },
}

impl Issuer {
    pub fn new(config: &IssuerConfig) -> Result<Issuer, IssuerError> {
        let algorithms = if config.algorithms.is_empty() {
            Algorithm::ALL.to_vec()
        } else {
            config
                .algorithms
                .iter()
                .map(|name| {
                    Algorithm::parse(name).ok_or_else(|| IssuerError::Algorithm {
                        issuer: config.name.clone(),
                        name: name.clone(),
                        allowed: Algorithm::ALL.map(Algorithm::as_str).join(", "),
                    })
                })
                .collect::<Result<_, _>>()?
        };
        if let TokenKind::Kubernetes { trust_domain } = &config.kind {
            super::spiffe::valid_trust_domain(trust_domain).map_err(|e| IssuerError::Setup {
                issuer: config.name.clone(),
                message: format!("trust_domain: {e}"),
            })?;
        }
        let client = match config.jwks {
            JwksSource::File(_) => None,
            _ => Some(https_client(config).map_err(|message| IssuerError::Setup {
                issuer: config.name.clone(),
                message,
            })?),
        };
        Ok(Issuer {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            kind: config.kind.clone(),
            algorithms,
            leeway: config.leeway,
            refresh: config.refresh,
            source: config.jwks.clone(),
            client,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetch the keys now; keep the last good ones when that fails.
    pub async fn refresh_keys(&self) -> Result<usize, String> {
        let _guard = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<usize, String> {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
            .and_then(|doc| KeySet::from_jwks(&doc).map_err(|e| e.to_string()));
        match fetched {
            Ok(keys) if keys.is_empty() => {
                tracing::warn!(issuer = %self.name, skipped = keys.skipped(), "JWKS holds no usable key; keeping the last good keys");
                Err("no usable key".into())
            }
            Ok(keys) => {
                let n = keys.len();
                tracing::info!(issuer = %self.name, keys = n, skipped = keys.skipped(), "issuer keys loaded");
                self.keys.store(Arc::new(keys));
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.name, error = %e, "fetching issuer keys failed; keeping the last good keys");
                Err(e)
            }
        }
    }

    /// Refetch every `refresh`, for as long as the process runs.
    pub async fn keep_fresh(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.refresh).await;
            let _ = self.refresh_keys().await;
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display())),
            JwksSource::Url(url) => self.get(url).await,
            JwksSource::Discovery => {
                let base = self.issuer.trim_end_matches('/');
                let url = format!("{base}/.well-known/openid-configuration");
                let doc: Value = serde_json::from_slice(&self.get(&url).await?)
                    .map_err(|e| format!("discovery document: {e}"))?;
                // OpenID Connect Discovery: the document must name the
                // issuer it was fetched for, or its keys are someone else's.
                if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                    return Err("discovery document names another issuer".into());
                }
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("discovery document has no jwks_uri")?;
                self.get(jwks_uri).await
            }
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }

    /// The signature, against the current keys; an unknown `kid` fetches
    /// the keys once more (rate-limited) before giving up.
    async fn verify_signature(&self, token: &jws::Unverified<'_>) -> Result<(), IdentityError> {
        let keys = self.keys.load_full();
        if keys.is_empty() {
            // Never loaded: try now rather than refusing everyone until
            // the next interval.
            let _ = self.refresh_after_unknown_kid().await;
            return self.check(token, &self.keys.load());
        }
        match self.check(token, &keys) {
            Err(IdentityError::Untrusted(_))
                if token.kid().is_some_and(|kid| !keys.has_kid(kid)) =>
            {
                if self.refresh_after_unknown_kid().await {
                    self.check(token, &self.keys.load())
                } else {
                    Err(unknown_key())
                }
            }
            other => other,
        }
    }

    fn check(&self, token: &jws::Unverified<'_>, keys: &KeySet) -> Result<(), IdentityError> {
        if keys.is_empty() {
            return Err(IdentityError::KeysUnavailable(format!(
                "no keys loaded for issuer `{}`",
                self.name
            )));
        }
        token.verify(keys, &self.algorithms).map_err(|e| match e {
            JwsError::AlgorithmRefused(alg) => IdentityError::AlgorithmRefused(alg),
            JwsError::UnknownKey => unknown_key(),
            JwsError::BadSignature => IdentityError::Untrusted("bad signature".into()),
            JwsError::Malformed(why) => IdentityError::Malformed(why.to_string()),
        })
    }

    /// `true` when the keys were fetched (now, or by a fetch this one
    /// waited for).
    async fn refresh_after_unknown_kid(&self) -> bool {
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_PAUSE) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await.is_ok()
    }

    /// The registered claims, then the identity the token's kind names.
    fn identity(
        &self,
        claims: &Map<String, Value>,
        selected: &[String],
        trust_domains: &TrustDomains,
        now: SystemTime,
    ) -> Result<Identity, IdentityError> {
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let leeway = self.leeway.as_secs();
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| IdentityError::Malformed("the token has no numeric `exp`".into()))?;
        if now_s > exp.saturating_add(leeway) {
            return Err(IdentityError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_u64()
                .ok_or_else(|| IdentityError::Malformed("`nbf` is not a number".into()))?;
            if now_s.saturating_add(leeway) < nbf {
                return Err(IdentityError::NotYetValid);
            }
        }
        let audience_fits = |aud: &Value| {
            aud.as_str()
                .is_some_and(|a| self.audiences.iter().any(|ours| ours == a))
        };
        let fits = match claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(audience_fits),
            Some(aud) => audience_fits(aud),
            None => false,
        };
        if !fits {
            return Err(IdentityError::WrongAudience);
        }

        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let (name, pod) =
            match &self.kind {
                TokenKind::Kubernetes { trust_domain } => {
                    let (id, pod) = kubernetes_identity(claims, subject, trust_domain)?;
                    (Some(id), pod)
                }
                TokenKind::Svid => (
                    Some(SpiffeId::parse(subject).map_err(|e| {
                        IdentityError::Malformed(format!("a JWT-SVID's `sub` is {e}"))
                    })?),
                    String::new(),
                ),
                TokenKind::Subject if subject.is_empty() => {
                    return Err(IdentityError::Malformed("the token has no `sub`".into()))
                }
                TokenKind::Subject => (None, String::new()),
            };
        if let Some(id) = &name {
            if !trust_domains.allows(id.trust_domain()) {
                return Err(IdentityError::TrustDomainRefused(
                    id.trust_domain().to_string(),
                ));
            }
        }
        let name: Arc<str> = name.map_or_else(|| subject.into(), |id| id.as_arc().clone());
        let mut attributes = Attributes::of_name(IdentitySource::Jwt, &name);
        attributes.pod = pod;
        attributes.claims = selected_claims(claims, selected);
        Ok(Identity {
            name,
            attributes: Arc::new(attributes),
            // Accepted until then: the same allowance on every later use
            // (from the cache, inside a tunnel) as on first sight.
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(exp) + self.leeway),
        })
    }
}

fn unknown_key() -> IdentityError {
    IdentityError::Untrusted("no key of the issuer has this token's key id".into())
}

/// A projected service-account token: the `kubernetes.io` claim names the
/// namespace, service account and pod; older tokens only have
/// `sub: system:serviceaccount:<ns>:<sa>`.
fn kubernetes_identity(
    claims: &Map<String, Value>,
    subject: &str,
    trust_domain: &str,
) -> Result<(SpiffeId, String), IdentityError> {
    let k8s = claims.get("kubernetes.io");
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(k8s?, |v, key| v.get(key))
            .and_then(Value::as_str)
    };
    let from_subject = subject
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let (namespace, account) = match (text(&["namespace"]), text(&["serviceaccount", "name"])) {
        (Some(ns), Some(sa)) => (ns, sa),
        (None, None) => from_subject.ok_or_else(|| {
            IdentityError::Malformed("not a Kubernetes service-account token".into())
        })?,
        // Half a service account is not read as "absent": `sub` would
        // then name one the claim contradicts (found by fuzzing).
        _ => {
            return Err(IdentityError::Malformed(
                "`kubernetes.io` names a namespace or a service account, not both".into(),
            ))
        }
    };
    // The two places must agree when both are there.
    if from_subject.is_some_and(|pair| pair != (namespace, account)) {
        return Err(IdentityError::Malformed(
            "`sub` and `kubernetes.io` name different service accounts".into(),
        ));
    }
    let id = SpiffeId::from_parts(trust_domain, &["ns", namespace, "sa", account])
        .map_err(|e| IdentityError::Malformed(format!("service account: {e}")))?;
    let pod = text(&["pod", "name"]).unwrap_or("").to_string();
    Ok((id, pod))
}

/// Strings as they are, numbers and booleans as text; other kinds (and
/// absent claims) are `""`.
fn selected_claims(claims: &Map<String, Value>, selected: &[String]) -> BTreeMap<String, String> {
    selected
        .iter()
        .map(|name| {
            let value = match claims.get(name) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                _ => String::new(),
            };
            (name.clone(), value)
        })
        .collect()
}

fn https_client(config: &IssuerConfig) -> Result<HttpsClient, String> {
    let tls = crate::tls::upstream::client_config(true, config.ca.as_slice())
        .map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Verifies JWTs for one listener (or Envoy's `Check`): the issuers it
/// accepts, and the identities of tokens already verified.
pub struct JwtVerifier {
    issuers: Vec<Arc<Issuer>>,
    selected_claims: Arc<[String]>,
    trust_domains: TrustDomains,
    verified: quick_cache::sync::Cache<[u8; 32], Arc<Identity>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(
        issuers: Vec<Arc<Issuer>>,
        selected_claims: Arc<[String]>,
        trust_domains: TrustDomains,
    ) -> JwtVerifier {
        JwtVerifier {
            issuers,
            selected_claims,
            trust_domains,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_SIZE),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, IdentityError> {
        let now = SystemTime::now();
        let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        if let Some(identity) = self.verified.get(&hash) {
            return match identity.expires_at {
                Some(at) if at < now => {
                    self.verified.remove(&hash);
                    Err(IdentityError::Expired)
                }
                _ => Ok(identity),
            };
        }
        let token = jws::decode(token).map_err(|e| match e {
            JwsError::AlgorithmRefused(alg) => IdentityError::AlgorithmRefused(alg),
            _ => IdentityError::Malformed("not a signed JWT".into()),
        })?;
        let issuer = self.issuer_of(token.claims())?;
        issuer.verify_signature(&token).await?;
        let identity = Arc::new(issuer.identity(
            token.claims(),
            &self.selected_claims,
            &self.trust_domains,
            now,
        )?);
        // Cached until it expires (its `exp`, with the leeway).
        self.verified.insert(hash, identity.clone());
        Ok(identity)
    }

    /// The issuer, of those accepted here, whose `iss` the claims carry.
    fn issuer_of(&self, claims: &Map<String, Value>) -> Result<&Issuer, IdentityError> {
        let iss = claims.get("iss").and_then(Value::as_str);
        self.issuers
            .iter()
            .find(|i| Some(i.issuer.as_str()) == iss)
            .map(|i| &**i)
            .ok_or(IdentityError::WrongIssuer)
    }

    /// The identity in a payload another verifier checked (Envoy's
    /// `jwt_authn`): mapped by its issuer's rules, the signature not checked
    /// again.
    pub fn verified_elsewhere(
        &self,
        claims: &Map<String, Value>,
        source: IdentitySource,
    ) -> Result<Arc<Identity>, IdentityError> {
        let mut identity = self.issuer_of(claims)?.identity(
            claims,
            &self.selected_claims,
            &self.trust_domains,
            SystemTime::now(),
        )?;
        Arc::make_mut(&mut identity.attributes).source = source;
        Ok(Arc::new(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn kubernetes_tokens_name_namespace_account_and_pod() {
        let c = claims(json!({
            "sub": "system:serviceaccount:agents:coder",
            "kubernetes.io": {
                "namespace": "agents",
                "serviceaccount": {"name": "coder", "uid": "u1"},
                "pod": {"name": "coder-7d9", "uid": "u2"}
            }
        }));
        let (id, pod) =
            kubernetes_identity(&c, "system:serviceaccount:agents:coder", "cluster.local").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/agents/sa/coder");
        assert_eq!(pod, "coder-7d9");
        let legacy = claims(json!({}));
        let (id, pod) = kubernetes_identity(&legacy, "system:serviceaccount:a:b", "td").unwrap();
        assert_eq!((id.as_str(), pod.as_str()), ("spiffe://td/ns/a/sa/b", ""));
        let mismatched = kubernetes_identity(&c, "system:serviceaccount:other:coder", "td");
        assert!(matches!(mismatched, Err(IdentityError::Malformed(_))));
        assert!(kubernetes_identity(&legacy, "someone", "td").is_err());
        // A namespace without its service account does not fall back to
        // `sub` (fuzz/regressions/jwt/).
        let half = claims(json!({"kubernetes.io": {"namespace": "other"}}));
        let half = kubernetes_identity(&half, "system:serviceaccount:agents:coder", "td");
        assert!(matches!(half, Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn selected_claims_are_text() {
        let c = claims(json!({"team": "infra", "level": 3, "admin": true, "groups": ["a"]}));
        let names = ["team", "level", "admin", "groups", "absent"].map(String::from);
        let got = selected_claims(&c, &names);
        assert_eq!(got["team"], "infra");
        assert_eq!(got["level"], "3");
        assert_eq!(got["admin"], "true");
        assert_eq!(got["groups"], "");
        assert_eq!(got["absent"], "");
    }
}
