//! A listener's identity sources, built once from configuration, and what
//! a caller presented, resolved to one identity per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::authorization::{self, Presented};
use crate::config::{EnvoyIdentity, IdentityConfig, ListenerConfig, ListenerIdentity};

use super::jwt::{Issuer, JwtVerifier};
use super::svid::{self, TrustBundleHandle, TrustDomains};
use super::{jws, Identity, IdentityError, IdentitySource};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Issuer(#[from] super::jwt::IssuerError),
    #[error("identity.trust_domains: {0}")]
    TrustDomain(super::spiffe::SpiffeIdError),
    #[error("{field}: {message}")]
    TrustBundle { field: String, message: String },
}

/// The issuers every front shares (one key fetcher each), the selected
/// claims and the allowed trust domains.
#[derive(Debug)]
pub struct Registry {
    issuers: HashMap<String, Arc<Issuer>>,
    claims: Arc<[String]>,
    trust_domains: TrustDomains,
}

impl Registry {
    pub fn new(config: &IdentityConfig) -> Result<Registry, SetupError> {
        for domain in &config.trust_domains {
            super::spiffe::valid_trust_domain(domain).map_err(SetupError::TrustDomain)?;
        }
        let issuers = config
            .issuers
            .iter()
            .map(|c| Ok((c.name.clone(), Arc::new(Issuer::new(c)?))))
            .collect::<Result<_, SetupError>>()?;
        Ok(Registry {
            issuers,
            claims: config.claims.clone().into(),
            trust_domains: TrustDomains::new(config.trust_domains.clone()),
        })
    }

    /// Fetch every issuer's keys once (so the first requests find them),
    /// then keep them fresh in the background. An issuer whose keys cannot
    /// be had yet is retried on its first token and every `refresh`.
    pub async fn start(&self) {
        for issuer in self.issuers.values() {
            let _ = issuer.refresh_keys().await;
            tokio::spawn(issuer.clone().keep_fresh());
        }
    }

    fn verifier(&self, names: &[String]) -> Option<Arc<JwtVerifier>> {
        if names.is_empty() {
            return None;
        }
        let issuers = names
            .iter()
            .filter_map(|n| self.issuers.get(n).cloned())
            .collect();
        Some(Arc::new(JwtVerifier::new(
            issuers,
            self.claims.clone(),
            self.trust_domains.clone(),
        )))
    }

    /// Every listener's sources, in the configuration's order.
    pub fn listeners(
        &self,
        listeners: &[ListenerConfig],
    ) -> Result<Vec<Arc<ListenerSources>>, SetupError> {
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                self.listener(&l.identity, &format!("listeners[{i}].identity"))
                    .map(Arc::new)
            })
            .collect()
    }

    /// `field` names the listener in errors (`listeners[0].identity`).
    fn listener(
        &self,
        config: &ListenerIdentity,
        field: &str,
    ) -> Result<ListenerSources, SetupError> {
        let mtls = match &config.mtls_trust_bundle {
            None => None,
            Some(path) => Some(Arc::new(TrustBundleHandle::load(path).map_err(|e| {
                SetupError::TrustBundle {
                    field: format!("{field}.mtls.trust_bundle"),
                    message: e.to_string(),
                }
            })?)),
        };
        let named = |source, name: &Arc<str>| Arc::new(Identity::named(source, name.clone()));
        Ok(ListenerSources {
            mtls,
            trust_domains: self.trust_domains.clone(),
            jwt: self.verifier(&config.jwt),
            source_addresses: config
                .source_addresses
                .iter()
                .map(|(net, name)| (*net, named(IdentitySource::SourceAddress, name)))
                .collect(),
            static_identity: config
                .static_identity
                .as_ref()
                .map(|name| named(IdentitySource::Static, name)),
        })
    }

    /// The JWT verification of Envoy's `Check` requests.
    pub fn envoy(&self, config: &EnvoyIdentity) -> EnvoySources {
        // Envoy's `jwt_authn` payloads are mapped by the issuers' rules
        // too: every issuer may be named there, verified or not by tollgate.
        let all: Vec<String> = self.issuers.keys().cloned().collect();
        EnvoySources {
            trust_domains: self.trust_domains.clone(),
            jwt: self.verifier(&config.jwt),
            jwt_header: config.jwt_header.clone(),
            jwt_authn: config
                .jwt_authn_payload
                .clone()
                .and_then(|key| Some((key, self.verifier(&all)?))),
        }
    }
}

/// How one proxy listener identifies its callers.
#[derive(Debug)]
pub struct ListenerSources {
    pub mtls: Option<Arc<TrustBundleHandle>>,
    trust_domains: TrustDomains,
    jwt: Option<Arc<JwtVerifier>>,
    /// Longest prefix first.
    source_addresses: Vec<(IpNet, Arc<Identity>)>,
    static_identity: Option<Arc<Identity>>,
}

impl ListenerSources {
    /// What a new connection brings: its client certificate (checked now,
    /// once for all its requests), and the fallback its address or the
    /// listener gives.
    pub fn connection(
        &self,
        peer: IpAddr,
        certificates: Option<&[CertificateDer<'_>]>,
    ) -> CallerIdentity {
        let presented = match (&self.mtls, certificates) {
            (Some(bundle), Some(chain)) if !chain.is_empty() => Some(
                svid::verify(
                    chain,
                    &bundle.current(),
                    &self.trust_domains,
                    UnixTime::now(),
                )
                .map(|verified| {
                    let mut identity =
                        Identity::named(IdentitySource::Mtls, verified.id.as_arc().clone());
                    identity.expires_at = Some(verified.not_after);
                    Arc::new(identity)
                }),
            ),
            _ => None,
        };
        let peer = canonical(peer);
        let fallback = self
            .source_addresses
            .iter()
            .find(|(net, _)| net.contains(&peer))
            .map(|(_, identity)| identity.clone())
            .or_else(|| self.static_identity.clone());
        CallerIdentity {
            presented,
            last_token: self.jwt.as_ref().map(|_| Arc::default()),
            jwt: self.jwt.clone(),
            jwt_header: http::header::PROXY_AUTHORIZATION,
            fallback,
        }
    }
}

fn unexpired(identity: Arc<Identity>) -> Result<Arc<Identity>, IdentityError> {
    if identity.expires_at.is_some_and(|at| at < SystemTime::now()) {
        return Err(IdentityError::Expired);
    }
    Ok(identity)
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`;
/// configuration names it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How Envoy's `Check` requests are identified besides `source.principal`.
#[derive(Debug)]
pub struct EnvoySources {
    /// Checked on Envoy's mTLS principal as on every certificate and token.
    pub trust_domains: TrustDomains,
    pub jwt: Option<Arc<JwtVerifier>>,
    pub jwt_header: HeaderName,
    /// The `payload_in_metadata` key of Envoy's `jwt_authn` filter and the
    /// verifier whose issuers map its payloads.
    pub jwt_authn: Option<(String, Arc<JwtVerifier>)>,
}

impl Default for EnvoySources {
    fn default() -> EnvoySources {
        EnvoySources {
            trust_domains: TrustDomains::default(),
            jwt: None,
            jwt_header: http::header::PROXY_AUTHORIZATION,
            jwt_authn: None,
        }
    }
}

/// What a caller presented, before a request's headers are read.
#[derive(Debug, Clone)]
pub struct CallerIdentity {
    /// Settled before the request: a client certificate, what the front
    /// established (Envoy's principal, a tunnel's `CONNECT`, a remote
    /// proxy's `Decide`), or why it failed.
    pub presented: Option<Result<Arc<Identity>, IdentityError>>,
    /// Verifies a JWT in `jwt_header`, when the listener accepts JWTs.
    pub jwt: Option<Arc<JwtVerifier>>,
    pub jwt_header: HeaderName,
    /// The source address's or the listener's static identity.
    pub fallback: Option<Arc<Identity>>,
    /// One connection's last token and what it proved (`None` where
    /// callers are not connections: Envoy's checks).
    pub last_token: Option<Arc<LastToken>>,
}

/// A keep-alive client sends the same token on every request: comparing
/// the header with the last one costs less than hashing it for the cache.
#[derive(Debug, Default)]
pub struct LastToken(std::sync::Mutex<Option<Remembered>>);

/// A token header's bytes and the identity they proved.
type Remembered = (Box<[u8]>, Arc<Identity>);

impl LastToken {
    fn get(&self, value: &[u8]) -> Option<Arc<Identity>> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (bytes, identity) = last.as_ref()?;
        (**bytes == *value).then(|| identity.clone())
    }

    fn set(&self, value: &[u8], identity: &Arc<Identity>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((value.into(), identity.clone()));
    }
}

impl Default for CallerIdentity {
    fn default() -> CallerIdentity {
        CallerIdentity {
            presented: None,
            jwt: None,
            jwt_header: http::header::PROXY_AUTHORIZATION,
            fallback: None,
            last_token: None,
        }
    }
}

impl CallerIdentity {
    /// A caller whose identity is settled.
    pub fn known(identity: Arc<Identity>) -> CallerIdentity {
        CallerIdentity {
            presented: Some(Ok(identity)),
            ..CallerIdentity::default()
        }
    }

    /// The request's identity: what was presented before it, else a JWT in
    /// its headers, else the fallback. Something presented that fails is
    /// the answer; it never falls through to a weaker source.
    pub async fn resolve(
        &self,
        headers: Option<&HeaderMap>,
    ) -> Result<Arc<Identity>, IdentityError> {
        if let Some(presented) = &self.presented {
            // A tunnel outlives the token or certificate it was opened
            // with; its requests do not.
            return unexpired(presented.clone()?);
        }
        let Some((verifier, headers)) = self.jwt.as_ref().zip(headers) else {
            return self.fallback.clone().ok_or(IdentityError::Missing);
        };
        // The same header as last time on this connection: nothing to
        // parse, hash or look up.
        let memo = self.last_token.as_deref();
        let last = memo.zip(headers.get(&self.jwt_header));
        if let Some(identity) = last.and_then(|(m, value)| m.get(value.as_bytes())) {
            return unexpired(identity);
        }
        let Some((value, token)) = self.token(headers) else {
            return self.fallback.clone().ok_or(IdentityError::Missing);
        };
        let identity = verifier.verify(token.secret()).await?;
        if let Some(memo) = memo {
            memo.set(value.as_bytes(), &identity);
        }
        Ok(identity)
    }

    /// A JWT in the header (its value, and the token in it): `Bearer
    /// <jwt>`, the password of `Basic`, or the bare token (a header of its
    /// own). Anything else — a task token, an API key — is not an identity.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h HeaderValue, Presented<'h>)> {
        headers.get_all(&self.jwt_header).iter().find_map(|value| {
            let text = value.to_str().ok()?;
            let presented = authorization::parse(text).unwrap_or(Presented::Bearer(text.trim()));
            jws::looks_like_jwt(presented.secret()).then_some((value, presented))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_peers_match_ipv4_ranges() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn a_connection_remembers_only_its_last_token_exactly() {
        let memo = LastToken::default();
        let coder = Arc::new(Identity::named(
            IdentitySource::Jwt,
            "spiffe://td/ns/a/sa/b".into(),
        ));
        assert_eq!(memo.get(b"Bearer eyJa.b.c"), None);
        memo.set(b"Bearer eyJa.b.c", &coder);
        assert_eq!(memo.get(b"Bearer eyJa.b.c"), Some(coder.clone()));
        assert_eq!(memo.get(b"Bearer eyJa.b.d"), None);
        assert_eq!(memo.get(b"Bearer eyJa.b."), None);
        let expired = Arc::new(Identity {
            expires_at: Some(SystemTime::now() - std::time::Duration::from_secs(1)),
            ..(*coder).clone()
        });
        memo.set(b"Bearer eyJx.y.z", &expired);
        assert_eq!(memo.get(b"Bearer eyJa.b.c"), None);
        assert_eq!(
            unexpired(memo.get(b"Bearer eyJx.y.z").unwrap()),
            Err(IdentityError::Expired)
        );
    }

    #[tokio::test]
    async fn presented_wins_and_a_failure_never_falls_back() {
        let fallback = Arc::new(Identity::named(
            IdentitySource::Static,
            "spiffe://td/sidecar".into(),
        ));
        let mtls = Arc::new(Identity::named(
            IdentitySource::Mtls,
            "spiffe://td/ns/a/sa/b".into(),
        ));
        let mut caller = CallerIdentity {
            fallback: Some(fallback.clone()),
            ..CallerIdentity::default()
        };
        assert_eq!(caller.resolve(None).await.unwrap(), fallback);
        caller.presented = Some(Ok(mtls.clone()));
        assert_eq!(caller.resolve(None).await.unwrap(), mtls);
        caller.presented = Some(Err(IdentityError::Expired));
        assert_eq!(caller.resolve(None).await, Err(IdentityError::Expired));
        let expired = Identity {
            expires_at: Some(SystemTime::now() - std::time::Duration::from_secs(1)),
            ..(*mtls).clone()
        };
        caller.presented = Some(Ok(Arc::new(expired)));
        assert_eq!(caller.resolve(None).await, Err(IdentityError::Expired));
        assert_eq!(
            CallerIdentity::default().resolve(None).await,
            Err(IdentityError::Missing)
        );
    }
}
