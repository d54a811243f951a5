//! Configuration: raw serde types → validated, immutable [`Config`].
//! Relative paths are resolved against the configuration file's folder so a
//! config works from any working directory.

mod credentials;
mod ctx;
mod enforcement;
mod identity;
mod limits;
mod raw;
mod sections;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use enforcement::{Enforcement, EnforcementMode, ToolEnforcement, CONNECT_TOOL};
pub use identity::{
    EnvoyIdentity, IdentityConfig, IssuerConfig, JwksSource, ListenerIdentity, TokenKind,
    DEFAULT_ENVOY_JWT_HEADER, DEFAULT_JWKS_REFRESH, DEFAULT_JWT_AUTHN_PAYLOAD, DEFAULT_JWT_LEEWAY,
};
pub use limits::*;
pub use raw::RawConfig;
pub use yaml::YamlError;

use ctx::Ctx;

// Defaults for every field the file may leave out (docs/configuration.md
// lists the same values). Folders are relative to the configuration file's
// folder.

pub const DEFAULT_PROXY_ADDRESS: &str = "127.0.0.1:3128";
/// Where `tollgate iptables` sends redirected connections by default.
pub const DEFAULT_TRANSPARENT_ADDRESS: &str = "127.0.0.1:15001";
/// A transparent connection must be headed for an address the host it
/// names resolves to (docs/transparent.md, "No spoofing past a rule").
pub const DEFAULT_REQUIRE_ORIGINAL_DESTINATION: bool = true;
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";
pub const DEFAULT_DECISION_ADDRESS: &str = "127.0.0.1:9191";
pub const DEFAULT_DECISION_ADMIN_ADDRESS: &str = "127.0.0.1:9902";
/// The listener's name in audit lines when it gives none (and of the one
/// listener made when `listeners:` is empty).
pub const DEFAULT_LISTENER_NAME: &str = "proxy";

pub const DEFAULT_CATALOG_DIR: &str = "catalog";
pub const DEFAULT_POLICY_DIR: &str = "policies";
/// The interception CA's folder (`ca.crt` + `ca.key`).
pub const DEFAULT_CA_DIR: &str = "ca";
/// Upstream TLS trusts the webpki roots and the system store unless told not to.
pub const DEFAULT_SYSTEM_ROOTS: bool = true;
/// Minted leaf certificates kept, one per host name (a configured 0 is taken as 1).
pub const DEFAULT_LEAF_CACHE_SIZE: usize = 1024;

/// Resolve + TCP connect to the upstream; past it the agent gets 504.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Until the upstream's response head; past it the agent gets 504.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pooled upstream connection may sit idle (hyper's own default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_MAX_IDLE_PER_HOST: usize = 64;
/// Blind tunnel or WebSocket: once one side closes, the other ends after
/// this long without a byte, so a peer that never closes cannot hold it open.
pub const DEFAULT_TUNNEL_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decisions cached per policy snapshot, or remote decisions cached in
/// remote mode; 0 disables the cache.
pub const DEFAULT_DECISION_CACHE_SIZE: usize = 10_000;
/// Remote mode: the deadline for one call to the decision service; no answer
/// in time is a deny.
pub const DEFAULT_DECISION_TIMEOUT: Duration = Duration::from_millis(250);
/// Remote mode: the longest a cached remote decision is used (a new policy
/// epoch announced by the decision service drops the cache sooner).
pub const DEFAULT_DECISION_CACHE_TTL: Duration = Duration::from_secs(30);

/// The file inside a credential's `dir` holding the value when `key` is absent.
pub const DEFAULT_CREDENTIAL_KEY: &str = "token";
/// `inject: { header: … }` without `template`: the header is the bare value.
pub const DEFAULT_HEADER_TEMPLATE: &str = "{value}";

/// A task's TTL when StartTask names none.
pub const DEFAULT_TASK_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest TTL StartTask may ask for.
/// Prefix of every key tollgate writes in Redis (inside a hash tag, so a
/// Redis Cluster keeps them in one slot and scripts may touch them all).
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "tollgate";
/// How long one Redis command may take before the store counts as lost.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a proxy holds a request an approval gate stopped.
pub const DEFAULT_APPROVAL_HOLD: Duration = Duration::from_secs(30);
/// The largest body a held request may have: it is kept in memory.
pub const DEFAULT_APPROVAL_MAX_BODY: usize = 1024 * 1024;
/// How long an approval waits for a verdict, and a verdict stands.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_TASK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Poll the configuration file, catalog and policy folders for changes.
pub const DEFAULT_RELOAD_WATCH: bool = true;
/// How often the watch polls; a poll reads only names, sizes and mtimes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A value that parsed but does not fit, at `file:line:column`.
    #[error("{location}: {message}")]
    At { location: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listeners: Vec<ListenerConfig>,
    pub admin_address: SocketAddr,
    pub catalog_dir: PathBuf,
    pub policy_dir: PathBuf,
    pub tls: TlsConfig,
    pub forward: ForwardConfig,
    /// Decisions cached per policy snapshot (0: none); in remote mode, the
    /// size of the proxy's cache of remote decisions.
    pub decision_cache_size: usize,
    /// `Some`: `run` asks a remote `tollgate decision` instead of deciding
    /// in-process.
    pub remote_decision: Option<RemoteDecision>,
    /// Where `tollgate decision` serves.
    pub decision_address: SocketAddr,
    /// Its admin listener (a different default port from `run`'s, so both
    /// run on one machine with one configuration).
    pub decision_admin_address: SocketAddr,
    /// `Some`: serve TLS (and require client certificates when it names a CA).
    pub decision_tls: Option<TlsFiles>,
    pub credentials: BTreeMap<String, CredentialConfig>,
    pub audit: AuditOutput,
    pub audit_on_failure: AuditOnFailure,
    /// `audit.mcp_arguments: full`: MCP calls' arguments are written in
    /// audit lines, not only their digest.
    pub audit_mcp_arguments: bool,
    pub reload: ReloadConfig,
    /// `Some`: tasks are managed here. `tollgate decision` always keeps
    /// tasks; `tollgate run` (embedded) serves the decision API, tasks
    /// included, on `decision_address` only when this is set.
    pub tasks: Option<TasksConfig>,
    /// Where tasks are kept.
    pub state: StateConfig,
    /// Issuers, selected claims and trust domains every front shares.
    pub identity: IdentityConfig,
    /// How ext_authz identifies a `Check` besides Envoy's mTLS principal.
    pub envoy_identity: EnvoyIdentity,
    pub approvals: ApprovalsConfig,
    pub limits: Limits,
    /// Which policy denials are enforced and which only reported.
    /// Reloaded with the catalog and policies (its tools are theirs).
    pub enforcement: Enforcement,
}

/// `approvals:`. The proxy holds (`hold`, `max_body`); the decision plane
/// keeps approvals (`rules`), authenticates approvers and notifies.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalsConfig {
    pub hold: Duration,
    pub max_body: usize,
    pub rules: ApprovalRules,
    pub approvers: Vec<ApproverConfig>,
    pub webhook: Option<WebhookConfig>,
    /// The approval console's address as approvers reach it: an MCP
    /// client whose revision can send its user to a URL is sent there.
    pub console_url: Option<Arc<str>>,
}

impl Default for ApprovalsConfig {
    fn default() -> ApprovalsConfig {
        ApprovalsConfig {
            hold: DEFAULT_APPROVAL_HOLD,
            max_body: DEFAULT_APPROVAL_MAX_BODY,
            rules: ApprovalRules::default(),
            approvers: Vec::new(),
            webhook: None,
            console_url: None,
        }
    }
}

/// How approvals behave, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRules {
    /// How long a pending approval waits for a verdict, and how long a
    /// verdict stands.
    pub ttl: Duration,
    /// Usable until its task ends (or its ttl), not once.
    pub reusable: bool,
}

impl Default for ApprovalRules {
    fn default() -> ApprovalRules {
        ApprovalRules {
            ttl: DEFAULT_APPROVAL_TTL,
            reusable: false,
        }
    }
}

/// A person who may approve, and the token that says it is them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverConfig {
    pub name: String,
    pub token: SecretSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where the URL is read from: for Slack the URL is the secret.
    pub url: SecretSource,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TasksConfig {
    /// `None`: admin calls are refused (nobody can start tasks).
    pub admin_token: Option<SecretSource>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// Where the decision plane keeps tasks and budgets.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StateConfig {
    /// In this process: one decision plane, and a restart forgets them.
    #[default]
    Memory,
    /// In Redis, shared by every replica that names the same one.
    Redis(RedisConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// Without credentials: a password in the URL is refused at load.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub timeout: Duration,
}

/// Where a secret tollgate itself needs (not one it injects) comes from;
/// read on every use, so a rotated file takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// The value; the error names where it was looked for, never a value.
    pub fn read(&self) -> Result<zeroize::Zeroizing<String>, String> {
        match self {
            SecretSource::Env(var) => std::env::var(var)
                .map(zeroize::Zeroizing::new)
                .map_err(|_| format!("environment variable {var} is not set")),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| format!("{}: {}", path.display(), e.kind())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// `Some`: the proxy is served over TLS with this `cert` and `key`.
    pub tls: Option<TlsFiles>,
    /// Empty: every request on this listener is refused with 407 until an
    /// identity source is configured.
    pub identity: ListenerIdentity,
    pub kind: ListenerKind,
}

/// How agents reach a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Agents name it as their proxy.
    Proxy,
    /// iptables redirects agents' connections to it; each one's original
    /// destination is read from the socket.
    Transparent { require_original_destination: bool },
}

impl ListenerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ListenerKind::Proxy => "proxy",
            ListenerKind::Transparent { .. } => "transparent",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub ca_dir: PathBuf,
    pub create_ca_if_missing: bool,
    pub upstream_ca_files: Vec<PathBuf>,
    pub system_roots: bool,
    pub leaf_cache_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle_per_host: usize,
    pub tunnel_half_close_timeout: Duration,
    /// `(host, port)` → address to connect to instead of resolving.
    pub resolve: HashMap<(String, u16), SocketAddr>,
    pub allow_networks: Vec<IpNet>,
    pub via: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle_per_host: DEFAULT_MAX_IDLE_PER_HOST,
            tunnel_half_close_timeout: DEFAULT_TUNNEL_HALF_CLOSE_TIMEOUT,
            resolve: HashMap::new(),
            allow_networks: Vec::new(),
            via: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDecision {
    pub endpoint: String,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub tls: Option<TlsFiles>,
}

/// PEM files for one side of a TLS connection (see `RawTlsFiles`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// Where a credential's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
    /// A mounted Secret folder: `key` holds the value, or for `basic` the
    /// files `username` and `password` (the `kubernetes.io/basic-auth` layout).
    Dir {
        path: PathBuf,
        key: String,
    },
}

/// How a credential's value travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialInjection {
    /// `Authorization: Bearer <value>`
    Bearer,
    /// `Authorization: Basic base64(username:password)`
    Basic,
    /// `<name>: <template with {value} replaced>`; `name` is lower case.
    Header { name: String, template: String },
    /// `?<param>=<value>` on the upstream URL, replacing the agent's.
    Query { param: String },
}

/// A catalog tool a credential may be sent to, with where the
/// configuration names it (`file:line:column`) for load errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundService {
    pub tool: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialConfig {
    pub source: CredentialSource,
    pub injection: CredentialInjection,
    /// Never empty: a credential with no binding could go anywhere a policy
    /// author's mistake sends it.
    pub services: Vec<BoundService>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    Stdout,
    File(PathBuf),
}

/// What requests get while the audit output cannot be written
/// (`audit.on_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditOnFailure {
    /// Refused (`503`, `audit_unavailable`): nothing goes out unaudited.
    #[default]
    Refuse,
    /// Forwarded all the same; their lines are held for a retry, then lost.
    Forward,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReloadConfig {
    pub watch: bool,
    pub interval: Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let raw: RawConfig = yaml::parse(&path.display().to_string(), &text)?;
        Config::from_raw(path, raw)
    }

    pub fn from_raw(path: &Path, mut raw: RawConfig) -> Result<Config, ConfigError> {
        let ctx = Ctx::new(path);
        let identity = identity::section(raw.identity, &ctx)?;
        let listeners = sections::listeners(raw.listeners, &identity.issuers, &ctx)?;
        let envoy_identity = identity::envoy(
            raw.decision_service.identity.take(),
            &identity.issuers,
            &ctx,
        )?;
        let admin_address = sections::admin(raw.admin, &ctx)?;
        let forward = sections::forward(raw.forward, &ctx)?;
        let tls = sections::tls(raw.tls, &ctx);
        let (audit, audit_on_failure, audit_mcp_arguments) = sections::audit(raw.audit, &ctx)?;
        let reload = sections::reload(raw.reload, &ctx)?;
        let decision = sections::decision(raw.decision, &ctx)?;
        let decision_service = sections::decision_service(raw.decision_service, &ctx)?;
        let credentials = credentials::credentials(raw.credentials, &ctx)?;
        let tasks = match raw.tasks {
            None => None,
            Some(t) => Some(sections::tasks(t, &ctx)?),
        };
        let state = sections::state(raw.state.unwrap_or_default(), &ctx)?;
        let approvals = sections::approvals(raw.approvals, &ctx)?;
        let limits = limits::limits(raw.limits, &ctx)?;
        let enforcement = enforcement::section(raw.enforcement, &ctx);
        Ok(Config {
            file: path.to_path_buf(),
            listeners,
            admin_address,
            catalog_dir: ctx.dir(raw.catalog, DEFAULT_CATALOG_DIR),
            policy_dir: ctx.dir(raw.policies, DEFAULT_POLICY_DIR),
            tls,
            forward,
            decision_cache_size: decision.cache_size,
            remote_decision: decision.remote,
            decision_address: decision_service.address,
            decision_admin_address: decision_service.admin,
            decision_tls: decision_service.tls,
            credentials,
            audit,
            audit_on_failure,
            audit_mcp_arguments,
            reload,
            tasks,
            state,
            identity,
            envoy_identity,
            approvals,
            limits,
            enforcement,
        })
    }

    /// The sections of `fresh` (the file as it reads now) that differ from
    /// this running configuration outside `credentials:` and
    /// `enforcement:`. Those are read once at start, so a reload leaves
    /// them as they were.
    pub fn changed_outside_credentials(&self, fresh: &Config) -> Vec<&'static str> {
        let sections = [
            ("listeners", self.listeners == fresh.listeners),
            ("admin", self.admin_address == fresh.admin_address),
            ("catalog", self.catalog_dir == fresh.catalog_dir),
            ("policies", self.policy_dir == fresh.policy_dir),
            ("tls", self.tls == fresh.tls),
            ("forward", self.forward == fresh.forward),
            (
                "decision",
                self.decision_cache_size == fresh.decision_cache_size
                    && self.remote_decision == fresh.remote_decision,
            ),
            (
                "decision_service",
                self.decision_address == fresh.decision_address
                    && self.decision_admin_address == fresh.decision_admin_address
                    && self.decision_tls == fresh.decision_tls
                    && self.envoy_identity == fresh.envoy_identity,
            ),
            ("identity", self.identity == fresh.identity),
            (
                "audit",
                self.audit == fresh.audit
                    && self.audit_on_failure == fresh.audit_on_failure
                    && self.audit_mcp_arguments == fresh.audit_mcp_arguments,
            ),
            ("reload", self.reload == fresh.reload),
            ("tasks", self.tasks == fresh.tasks),
            ("state", self.state == fresh.state),
            ("approvals", self.approvals == fresh.approvals),
            ("limits", self.limits == fresh.limits),
        ];
        sections
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
    }

    /// Every tool `limits.tools` names exists in the catalog.
    pub fn check_limit_tools(&self, is_tool: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        match self.limits.tool_body_bytes.keys().find(|t| !is_tool(t)) {
            None => Ok(()),
            Some(tool) => Err(ConfigError::Invalid {
                file: self.file.display().to_string(),
                field: format!("limits.tools.{tool}"),
                message: format!("`{tool}` is not a tool in the catalog"),
            }),
        }
    }

    /// Every tool a credential is bound to exists in the catalog: a typo in
    /// `services` would otherwise silently make a credential unusable.
    /// `is_tool` answers for the loaded catalog.
    pub fn check_credential_bindings(
        &self,
        is_tool: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        for (name, credential) in &self.credentials {
            for service in &credential.services {
                if !is_tool(&service.tool) {
                    return Err(ConfigError::At {
                        location: service.at.clone(),
                        message: format!(
                            "credentials.{name}.services: `{}` is not a tool in the catalog",
                            service.tool
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `host:port` or `[v6]:port` → lower-case host without brackets, port.
pub fn split_host_port(value: &str) -> Option<(String, u16)> {
    let (host, port) = value.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests;
