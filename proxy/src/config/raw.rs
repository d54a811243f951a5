//! The configuration file as written. Every struct refuses unknown fields so
//! a typo is an error at load, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub admin: RawAdmin,
    pub catalog: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub forward: RawForward,
    #[serde(default)]
    pub decision: RawDecision,
    #[serde(default)]
    pub decision_service: RawDecisionService,
    #[serde(default)]
    pub credentials: BTreeMap<String, RawCredential>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub reload: RawReload,
    pub tasks: Option<RawTasks>,
    /// Where tasks (and their budgets) are kept: absent, in memory.
    pub state: Option<RawState>,
    #[serde(default)]
    pub identity: RawIdentitySection,
    #[serde(default)]
    pub approvals: RawApprovals,
    #[serde(default)]
    pub limits: RawLimits,
    /// Policy denials enforced or only reported (default: enforced).
    #[serde(default)]
    pub enforcement: RawEnforcement,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How long a proxy holds a gated request for a verdict (default 30s).
    pub hold: Option<String>,
    /// The largest body a held request may have (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// How long a pending approval waits, and a verdict stands (default 1h).
    pub ttl: Option<String>,
    /// Usable until its task ends rather than once (default false).
    pub reusable: Option<bool>,
    #[serde(default)]
    pub approvers: Vec<RawApprover>,
    pub webhook: Option<RawWebhook>,
    /// Where approvers reach the console, as an MCP client is sent there.
    pub console_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprover {
    pub name: String,
    pub token: RawSecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `{ env: VAR }` or `{ file: path }`: a Slack webhook URL is a secret.
    pub url: RawSecretSource,
    /// Per POST (default 5s).
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub redis: Option<RawRedis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<RawSecretSource>,
    /// PEM CA certificates that verify a `rediss://` server.
    pub ca_file: Option<PathBuf>,
    pub key_prefix: Option<String>,
    /// Per command.
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTasks {
    /// The bearer token admin calls (StartTask, EndTask, …) must carry.
    pub admin_token: Option<RawSecretSource>,
    /// TTL when StartTask names none (default 15m).
    pub default_ttl: Option<String>,
    /// The longest TTL StartTask may ask for (default 24h).
    pub max_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub address: Option<String>,
    /// `cert` and `key`: serve the proxy over TLS (`HTTPS_PROXY=https://…`).
    pub tls: Option<RawTlsFiles>,
    pub identity: Option<RawIdentity>,
    #[serde(default)]
    pub kind: RawListenerKind,
    /// Transparent listeners only: refuse a connection whose original
    /// destination is not an address the host it names resolves to.
    pub require_original_destination: Option<bool>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawListenerKind {
    /// Agents point `HTTP_PROXY` / `HTTPS_PROXY` at it.
    #[default]
    Proxy,
    /// iptables redirects agents' connections to it.
    Transparent,
}

/// A listener's identity sources.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Sidecar mode: everything arriving on this listener is this workload.
    #[serde(rename = "static")]
    pub static_id: Option<String>,
    /// Client certificates (X.509-SVIDs) checked against this bundle.
    pub mtls: Option<RawMtls>,
    /// Names of `identity.issuers` whose JWTs this listener accepts.
    #[serde(default)]
    pub jwt: Vec<String>,
    /// CIDR → identity, for setups where nothing else exists.
    #[serde(default)]
    pub source_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    pub trust_bundle: PathBuf,
}

/// The top-level `identity:` section: what every front shares.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIdentitySection {
    /// JWT claims policies see as `principal.claims.<name>`.
    #[serde(default)]
    pub claims: Vec<String>,
    /// SPIFFE trust domains accepted from any source; empty: any.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    /// The exact `iss` tokens carry.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: RawJwks,
    /// `kubernetes`, `svid` or `subject`.
    pub kind: String,
    /// `kubernetes`: the trust domain IDs are built in.
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub leeway: Option<String>,
    pub refresh: Option<String>,
    /// Extra CA (PEM) for an `https://` JWKS or discovery endpoint.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub file: Option<PathBuf>,
    pub url: Option<String>,
    #[serde(default)]
    pub discovery: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_dir: Option<PathBuf>,
    #[serde(default)]
    pub create_ca_if_missing: bool,
    #[serde(default)]
    pub upstream_ca_files: Vec<PathBuf>,
    pub system_roots: Option<bool>,
    pub leaf_cache_size: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_idle_per_host: Option<usize>,
    pub tunnel_half_close_timeout: Option<String>,
    /// `host:port` → `ip:port`, like curl's `--resolve`.
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
    /// CIDRs exempt from the private-address guard.
    #[serde(default)]
    pub allow_networks: Vec<String>,
    #[serde(default)]
    pub via: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDecision {
    /// Decisions kept per policy snapshot; 0 disables the cache.
    pub cache_size: Option<usize>,
    /// `http://host:port` of `tollgate decision`; absent: decide in-process.
    pub endpoint: Option<String>,
    pub timeout: Option<String>,
    pub cache_ttl: Option<String>,
    /// Client TLS toward an `https://` endpoint.
    pub tls: Option<RawTlsFiles>,
}

/// PEM files for one side of a TLS connection.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTlsFiles {
    /// Our certificate chain and key (server identity, or client identity
    /// for mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// CA that must have signed the peer: client certificates on a server
    /// (mTLS required), the server certificate on a client.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDecisionService {
    pub address: Option<String>,
    /// `/metrics`, `/healthz`, `/readyz` for `tollgate decision`.
    pub admin: Option<String>,
    pub tls: Option<RawTlsFiles>,
    /// How Envoy's `Check` requests are identified.
    pub identity: Option<RawEnvoyIdentity>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEnvoyIdentity {
    /// Issuers whose JWTs tollgate verifies from the request's headers.
    #[serde(default)]
    pub jwt: Vec<String>,
    /// The header holding them (default `proxy-authorization`).
    pub jwt_header: Option<String>,
    /// The `payload_in_metadata` key of Envoy's `jwt_authn` filter; empty
    /// string: ignore its metadata.
    pub jwt_authn_payload: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// Read the value from this environment variable…
    pub env: Option<String>,
    /// …or from this file (one key of a mounted Kubernetes Secret)…
    pub file: Option<PathBuf>,
    /// …or from this folder (a whole mounted Secret).
    pub dir: Option<PathBuf>,
    /// The file inside `dir` holding the value; absent: `token`.
    pub key: Option<String>,
    /// How the value travels; absent: `Authorization: Bearer <value>`.
    pub inject: Option<RawInjection>,
    /// Older shorthand for `inject: { header: { name: … } }`.
    pub header: Option<String>,
    /// Catalog tools this credential may ever be sent to. Spanned so a name
    /// the catalog lacks is reported at its line.
    pub services: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RawInjection {
    Bearer,
    Basic,
    Header {
        name: String,
        template: Option<String>,
    },
    Query {
        param: String,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `stdout` or a file path.
    pub output: Option<String>,
    /// `refuse` or `forward`.
    pub on_failure: Option<String>,
    /// `digest` (the default) or `full`: how an MCP call's arguments are
    /// written.
    pub mcp_arguments: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch: Option<bool>,
    pub interval: Option<String>,
}

/// `limits:` (see `limits.rs` for the defaults).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_request_line_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub tls_handshake_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_tunnels: Option<usize>,
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub http2: RawHttp2Limits,
    /// Per catalog tool.
    #[serde(default)]
    pub tools: BTreeMap<String, RawToolLimits>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttp2Limits {
    pub max_concurrent_streams: Option<u32>,
    pub max_pending_resets: Option<usize>,
    pub max_error_resets: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolLimits {
    pub max_body_bytes: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEnforcement {
    /// For every tool not named under `tools` (default `enforce`).
    pub mode: Option<RawEnforcementMode>,
    /// Catalog tool (or `connect`) → its own mode. Spanned so a name the
    /// catalog lacks is reported at its line.
    #[serde(default)]
    pub tools: BTreeMap<String, Spanned<RawEnforcementMode>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum RawEnforcementMode {
    Enforce,
    Report,
}
