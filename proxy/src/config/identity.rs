//! The identity sections: `identity:` (issuers, claims, trust domains, for
//! every front), each listener's `identity:` and `decision_service.identity`
//! (Envoy's `Check`). Names and shapes are checked here; trust domains
//! (with the SPIFFE rules), algorithms, keys and bundles when the identity
//! sources are built.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::ctx::Ctx;
use super::{raw, ConfigError};

/// A small allowance for clocks that disagree, on `exp` and `nbf`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// How often an issuer's keys are fetched again, rotation or not.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Envoy's `jwt_authn` filter writes the verified payload under this key
/// (`payload_in_metadata`) in the deploy/envoy example.
pub const DEFAULT_JWT_AUTHN_PAYLOAD: &str = "jwt_payload";
/// Where tollgate reads a workload JWT in an ext_authz `Check`.
pub const DEFAULT_ENVOY_JWT_HEADER: &str = "proxy-authorization";

/// Claims that name the identity itself: selecting them would let policy
/// depend on something the principal already says, or on time.
const RESERVED_CLAIMS: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdentityConfig {
    /// Claims selected for policy: `principal.claims.<name>`.
    pub claims: Vec<String>,
    /// SPIFFE trust domains accepted; empty: any.
    pub trust_domains: Vec<String>,
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub kind: TokenKind,
    /// Algorithm names as written; the identity module checks them.
    /// Empty: every asymmetric algorithm tollgate verifies.
    pub algorithms: Vec<String>,
    pub leeway: Duration,
    pub refresh: Duration,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
    /// `<issuer>/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery,
}

/// How a verified token becomes a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A projected service-account token: `spiffe://<trust domain>/ns/<ns>/sa/<sa>`,
    /// with the pod from its `kubernetes.io` claim.
    Kubernetes { trust_domain: String },
    /// A JWT-SVID: `sub` is the SPIFFE ID.
    Svid,
    /// `sub` as it is (any OIDC issuer).
    Subject,
}

/// A listener's identity sources.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListenerIdentity {
    pub static_identity: Option<Arc<str>>,
    /// The trust bundle client certificates must chain to.
    pub mtls_trust_bundle: Option<PathBuf>,
    /// Issuers (by name) whose JWTs are accepted.
    pub jwt: Vec<String>,
    /// Most specific network first.
    pub source_addresses: Vec<(IpNet, Arc<str>)>,
}

impl ListenerIdentity {
    pub fn is_empty(&self) -> bool {
        *self == ListenerIdentity::default()
    }

    /// The sources in the order they are tried, for the start-up log.
    pub fn describe(&self) -> String {
        let sources: Vec<&str> = [
            (self.mtls_trust_bundle.is_some(), "mtls"),
            (!self.jwt.is_empty(), "jwt"),
            (!self.source_addresses.is_empty(), "source_address"),
            (self.static_identity.is_some(), "static"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if sources.is_empty() {
            "none".into()
        } else {
            sources.join(",")
        }
    }
}

/// How ext_authz identifies a `Check` besides Envoy's `source.principal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyIdentity {
    pub jwt: Vec<String>,
    pub jwt_header: http::HeaderName,
    /// `None`: Envoy's `jwt_authn` metadata is not read.
    pub jwt_authn_payload: Option<String>,
}

impl Default for EnvoyIdentity {
    fn default() -> EnvoyIdentity {
        EnvoyIdentity {
            jwt: Vec::new(),
            jwt_header: http::HeaderName::from_static(DEFAULT_ENVOY_JWT_HEADER),
            jwt_authn_payload: Some(DEFAULT_JWT_AUTHN_PAYLOAD.to_string()),
        }
    }
}

pub(super) fn section(
    raw: raw::RawIdentitySection,
    ctx: &Ctx,
) -> Result<IdentityConfig, ConfigError> {
    for (i, claim) in raw.claims.iter().enumerate() {
        let field = format!("identity.claims[{i}]");
        if !is_attribute_name(claim) {
            return Err(ctx.invalid(
                &field,
                format!("`{claim}` must be a name policies can write (letters, digits, `_`)"),
            ));
        }
        if RESERVED_CLAIMS.contains(&claim.as_str()) {
            return Err(ctx.invalid(&field, format!("`{claim}` cannot be selected")));
        }
    }
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    for (i, r) in raw.issuers.into_iter().enumerate() {
        let field = format!("identity.issuers[{i}]");
        if r.name.is_empty() || issuers.iter().any(|x| x.name == r.name) {
            return Err(ctx.invalid(&format!("{field}.name"), "must be given and unique".into()));
        }
        issuers.push(issuer(r, &field, ctx)?);
    }
    Ok(IdentityConfig {
        claims: raw.claims,
        trust_domains: raw.trust_domains,
        issuers,
    })
}

fn issuer(r: raw::RawIssuer, field: &str, ctx: &Ctx) -> Result<IssuerConfig, ConfigError> {
    if r.issuer.is_empty() {
        return Err(ctx.invalid(&format!("{field}.issuer"), "must not be empty".into()));
    }
    if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
        return Err(ctx.invalid(
            &format!("{field}.audiences"),
            "name at least one audience: a token for another service must not work here".into(),
        ));
    }
    let jwks = match (r.jwks.file, r.jwks.url, r.jwks.discovery) {
        (Some(file), None, false) => JwksSource::File(ctx.resolve_path(&file)),
        (None, Some(url), false) if url.starts_with("https://") || url.starts_with("http://") => {
            JwksSource::Url(url)
        }
        (None, None, true) => JwksSource::Discovery,
        _ => {
            return Err(ctx.invalid(
                &format!("{field}.jwks"),
                "give exactly one of `file`, `url` (http:// or https://) or `discovery: true`"
                    .into(),
            ))
        }
    };
    let kind = match (r.kind.as_str(), r.trust_domain) {
        ("kubernetes", Some(trust_domain)) => TokenKind::Kubernetes { trust_domain },
        ("kubernetes", None) => {
            return Err(ctx.invalid(
                &format!("{field}.trust_domain"),
                "a `kubernetes` issuer needs the trust domain its IDs are built in".into(),
            ))
        }
        ("svid", None) => TokenKind::Svid,
        ("subject", None) => TokenKind::Subject,
        ("svid" | "subject", Some(_)) => {
            return Err(ctx.invalid(
                &format!("{field}.trust_domain"),
                "only a `kubernetes` issuer takes a trust domain".into(),
            ))
        }
        (other, _) => {
            return Err(ctx.invalid(
                &format!("{field}.kind"),
                format!("`{other}` is not one of kubernetes, svid, subject"),
            ))
        }
    };
    Ok(IssuerConfig {
        name: r.name,
        issuer: r.issuer,
        audiences: r.audiences,
        jwks,
        kind,
        algorithms: r.algorithms,
        leeway: ctx.duration(
            &format!("{field}.leeway"),
            r.leeway.as_deref(),
            DEFAULT_JWT_LEEWAY,
        )?,
        refresh: ctx.duration(
            &format!("{field}.refresh"),
            r.refresh.as_deref(),
            DEFAULT_JWKS_REFRESH,
        )?,
        ca: r.ca.as_deref().map(|p| ctx.resolve_path(p)),
    })
}

pub(super) fn listener(
    raw: Option<raw::RawIdentity>,
    field: &str,
    issuers: &[IssuerConfig],
    ctx: &Ctx,
) -> Result<ListenerIdentity, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ListenerIdentity::default());
    };
    let static_identity = match raw.static_id {
        Some(id) if id.trim().is_empty() => {
            return Err(ctx.invalid(&format!("{field}.static"), "must not be empty".into()))
        }
        other => other.map(Arc::from),
    };
    check_issuer_names(&raw.jwt, &format!("{field}.jwt"), issuers, ctx)?;
    let mut source_addresses = Vec::new();
    for (cidr, id) in raw.source_addresses {
        let at = format!("{field}.source_addresses");
        let net = cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| ctx.invalid(&at, format!("`{cidr}` is not a CIDR or an address")))?;
        if id.trim().is_empty() {
            return Err(ctx.invalid(&at, format!("`{cidr}` maps to an empty identity")));
        }
        source_addresses.push((net.trunc(), Arc::from(id)));
    }
    // The longest prefix wins, like a route table.
    source_addresses.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    Ok(ListenerIdentity {
        static_identity,
        mtls_trust_bundle: raw.mtls.map(|m| ctx.resolve_path(&m.trust_bundle)),
        jwt: raw.jwt,
        source_addresses,
    })
}

pub(super) fn envoy(
    raw: Option<raw::RawEnvoyIdentity>,
    issuers: &[IssuerConfig],
    ctx: &Ctx,
) -> Result<EnvoyIdentity, ConfigError> {
    let Some(raw) = raw else {
        return Ok(EnvoyIdentity::default());
    };
    check_issuer_names(&raw.jwt, "decision_service.identity.jwt", issuers, ctx)?;
    let jwt_header = match raw.jwt_header {
        None => http::HeaderName::from_static(DEFAULT_ENVOY_JWT_HEADER),
        Some(name) => {
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ctx.invalid(
                    "decision_service.identity.jwt_header",
                    format!("`{name}` is not a header name"),
                )
            })?
        }
    };
    Ok(EnvoyIdentity {
        jwt: raw.jwt,
        jwt_header,
        jwt_authn_payload: match raw.jwt_authn_payload {
            None => Some(DEFAULT_JWT_AUTHN_PAYLOAD.to_string()),
            Some(key) if key.is_empty() => None,
            Some(key) => Some(key),
        },
    })
}

fn check_issuer_names(
    names: &[String],
    field: &str,
    issuers: &[IssuerConfig],
    ctx: &Ctx,
) -> Result<(), ConfigError> {
    for name in names {
        if !issuers.iter().any(|i| &i.name == name) {
            return Err(ctx.invalid(
                field,
                format!("`{name}` is not the name of an entry in `identity.issuers`"),
            ));
        }
    }
    Ok(())
}

/// What a Cedar attribute name can be without quoting.
fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
