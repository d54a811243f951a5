//! Configuration: raw serde types → validated, immutable [`Config`].
//! Relative paths are resolved against the configuration file's folder so a
//! config works from any working directory.

mod raw;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use raw::RawConfig;
pub use yaml::YamlError;

// Defaults for every field the file may leave out (docs/configuration.md
// lists the same values). Folders are relative to the configuration file's
// folder.

pub const DEFAULT_PROXY_ADDRESS: &str = "127.0.0.1:3128";
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
    pub reload: ReloadConfig,
    /// `Some`: tasks are managed here. `tollgate decision` always keeps
    /// tasks; `tollgate run` (embedded) serves the decision API, tasks
    /// included, on `decision_address` only when this is set.
    pub tasks: Option<TasksConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TasksConfig {
    /// `None`: admin calls are refused (nobody can start tasks).
    pub admin_token: Option<SecretSource>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// Where a secret tollgate itself needs (not one it injects) comes from;
/// read on every use, so a rotated file takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// `None`: every request on this listener is refused with 407 until an
    /// identity source is configured.
    pub static_identity: Option<Arc<str>>,
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

    pub fn from_raw(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve_path = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.clone(),
            field: field.to_string(),
            message,
        };
        let socket = |field: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            value
                .parse()
                .map_err(|_| invalid(field, format!("`{value}` is not an ip:port address")))
        };
        let duration = |field: &str, value: Option<&str>, default: Duration| match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v)
                .map_err(|e| invalid(field, format!("`{v}` is not a duration: {e}"))),
        };

        let mut listeners = Vec::new();
        let raw_listeners = if raw.listeners.is_empty() {
            vec![raw::RawListener {
                name: None,
                address: None,
                identity: None,
            }]
        } else {
            raw.listeners
        };
        for (i, l) in raw_listeners.into_iter().enumerate() {
            let field = format!("listeners[{i}]");
            let name: Arc<str> = l
                .name
                .unwrap_or_else(|| DEFAULT_LISTENER_NAME.into())
                .into();
            if listeners.iter().any(|x: &ListenerConfig| x.name == name) {
                return Err(invalid(&field, format!("duplicate listener name `{name}`")));
            }
            let address = socket(
                &format!("{field}.address"),
                l.address.as_deref().unwrap_or(DEFAULT_PROXY_ADDRESS),
            )?;
            let static_identity = match l.identity.and_then(|i| i.static_id) {
                Some(id) if id.trim().is_empty() => {
                    return Err(invalid(
                        &format!("{field}.identity.static"),
                        "must not be empty".into(),
                    ))
                }
                Some(id) => Some(Arc::from(id)),
                None => None,
            };
            listeners.push(ListenerConfig {
                name,
                address,
                static_identity,
            });
        }

        let admin_address = socket(
            "admin.address",
            raw.admin
                .address
                .as_deref()
                .unwrap_or(DEFAULT_ADMIN_ADDRESS),
        )?;

        let defaults = ForwardConfig::default();
        let mut resolve = HashMap::new();
        for (from, to) in &raw.forward.resolve {
            let (host, port) = split_host_port(from)
                .ok_or_else(|| invalid("forward.resolve", format!("`{from}` is not host:port")))?;
            resolve.insert((host, port), socket("forward.resolve", to)?);
        }
        let mut allow_networks = Vec::new();
        for net in &raw.forward.allow_networks {
            allow_networks.push(net.parse::<IpNet>().map_err(|_| {
                invalid(
                    "forward.allow_networks",
                    format!("`{net}` is not a CIDR network"),
                )
            })?);
        }
        let forward = ForwardConfig {
            connect_timeout: duration(
                "forward.connect_timeout",
                raw.forward.connect_timeout.as_deref(),
                defaults.connect_timeout,
            )?,
            response_timeout: duration(
                "forward.response_timeout",
                raw.forward.response_timeout.as_deref(),
                defaults.response_timeout,
            )?,
            idle_timeout: duration(
                "forward.idle_timeout",
                raw.forward.idle_timeout.as_deref(),
                defaults.idle_timeout,
            )?,
            max_idle_per_host: raw
                .forward
                .max_idle_per_host
                .unwrap_or(defaults.max_idle_per_host),
            tunnel_half_close_timeout: duration(
                "forward.tunnel_half_close_timeout",
                raw.forward.tunnel_half_close_timeout.as_deref(),
                defaults.tunnel_half_close_timeout,
            )?,
            resolve,
            allow_networks,
            via: raw.forward.via,
        };

        let tls = TlsConfig {
            ca_dir: resolve_path(
                raw.tls
                    .ca_dir
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_CA_DIR)),
            ),
            create_ca_if_missing: raw.tls.create_ca_if_missing,
            upstream_ca_files: raw
                .tls
                .upstream_ca_files
                .iter()
                .map(|p| resolve_path(p))
                .collect(),
            system_roots: raw.tls.system_roots.unwrap_or(DEFAULT_SYSTEM_ROOTS),
            leaf_cache_size: raw
                .tls
                .leaf_cache_size
                .unwrap_or(DEFAULT_LEAF_CACHE_SIZE)
                .max(1),
        };

        let audit = match raw.audit.output.as_deref() {
            None | Some("stdout") | Some("-") => AuditOutput::Stdout,
            Some(p) => AuditOutput::File(resolve_path(Path::new(p))),
        };
        let reload = ReloadConfig {
            watch: raw.reload.watch.unwrap_or(DEFAULT_RELOAD_WATCH),
            interval: duration(
                "reload.interval",
                raw.reload.interval.as_deref(),
                DEFAULT_RELOAD_INTERVAL,
            )?,
        };
        if reload.interval.is_zero() {
            return Err(invalid("reload.interval", "must be above zero".into()));
        }

        let tls_files = |field: &str, raw: Option<raw::RawTlsFiles>, need_identity: bool| {
            let Some(raw) = raw else {
                return Ok(None);
            };
            if raw.cert.is_some() != raw.key.is_some() {
                return Err(invalid(
                    field,
                    "give both `cert` and `key`, or neither".into(),
                ));
            }
            if need_identity && raw.cert.is_none() {
                return Err(invalid(field, "a TLS server needs `cert` and `key`".into()));
            }
            Ok(Some(TlsFiles {
                cert: raw.cert.as_deref().map(resolve_path),
                key: raw.key.as_deref().map(resolve_path),
                ca: raw.ca.as_deref().map(resolve_path),
            }))
        };
        let decision_tls = tls_files("decision_service.tls", raw.decision_service.tls, true)?;
        let client_tls = tls_files("decision.tls", raw.decision.tls, false)?;
        let remote_decision = match raw.decision.endpoint {
            None => None,
            Some(endpoint) => {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(invalid(
                        "decision.endpoint",
                        format!("`{endpoint}` is not an http:// or https:// URL"),
                    ));
                }
                if endpoint.starts_with("https://")
                    && client_tls.as_ref().and_then(|t| t.ca.as_ref()).is_none()
                {
                    return Err(invalid(
                        "decision.tls.ca",
                        "an https:// endpoint needs the CA that signed the service".into(),
                    ));
                }
                Some(RemoteDecision {
                    endpoint,
                    timeout: duration(
                        "decision.timeout",
                        raw.decision.timeout.as_deref(),
                        DEFAULT_DECISION_TIMEOUT,
                    )?,
                    cache_ttl: duration(
                        "decision.cache_ttl",
                        raw.decision.cache_ttl.as_deref(),
                        DEFAULT_DECISION_CACHE_TTL,
                    )?,
                    tls: client_tls,
                })
            }
        };
        let decision_address = socket(
            "decision_service.address",
            raw.decision_service
                .address
                .as_deref()
                .unwrap_or(DEFAULT_DECISION_ADDRESS),
        )?;
        let decision_admin_address = socket(
            "decision_service.admin",
            raw.decision_service
                .admin
                .as_deref()
                .unwrap_or(DEFAULT_DECISION_ADMIN_ADDRESS),
        )?;
        let mut credentials = BTreeMap::new();
        for (name, c) in raw.credentials {
            let credential = credential(&name, c, &file, &resolve_path)
                .map_err(|message| invalid(&format!("credentials.{name}"), message))?;
            credentials.insert(name, credential);
        }

        let tasks = match raw.tasks {
            None => None,
            Some(t) => {
                let admin_token = match t.admin_token {
                    None => None,
                    Some(raw::RawSecretSource {
                        env: Some(var),
                        file: None,
                    }) => Some(SecretSource::Env(var)),
                    Some(raw::RawSecretSource {
                        env: None,
                        file: Some(file),
                    }) => Some(SecretSource::File(resolve_path(&file))),
                    Some(_) => {
                        return Err(invalid(
                            "tasks.admin_token",
                            "give exactly one of `env` or `file`".into(),
                        ))
                    }
                };
                let default_ttl = duration(
                    "tasks.default_ttl",
                    t.default_ttl.as_deref(),
                    DEFAULT_TASK_TTL,
                )?;
                let max_ttl =
                    duration("tasks.max_ttl", t.max_ttl.as_deref(), DEFAULT_MAX_TASK_TTL)?;
                if default_ttl.is_zero() || default_ttl > max_ttl {
                    return Err(invalid(
                        "tasks.default_ttl",
                        "must be above zero and at most tasks.max_ttl".into(),
                    ));
                }
                Some(TasksConfig {
                    admin_token,
                    default_ttl,
                    max_ttl,
                })
            }
        };

        Ok(Config {
            file: path.to_path_buf(),
            listeners,
            admin_address,
            catalog_dir: resolve_path(
                raw.catalog
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_CATALOG_DIR)),
            ),
            policy_dir: resolve_path(
                raw.policies
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_POLICY_DIR)),
            ),
            tls,
            forward,
            decision_cache_size: raw
                .decision
                .cache_size
                .unwrap_or(DEFAULT_DECISION_CACHE_SIZE),
            remote_decision,
            decision_address,
            decision_admin_address,
            decision_tls,
            credentials,
            audit,
            reload,
            tasks,
        })
    }
}

/// Validate one `credentials:` entry; the error is a message for its field.
fn credential(
    name: &str,
    c: raw::RawCredential,
    file: &str,
    resolve_path: &dyn Fn(&Path) -> PathBuf,
) -> Result<CredentialConfig, String> {
    if name.is_empty() {
        return Err("a credential needs a name".into());
    }
    let raw::RawCredential {
        env,
        file: from_file,
        dir,
        key,
        inject,
        header,
        services,
    } = c;
    let key_given = key.is_some();
    let source = match (env, from_file, dir) {
        (Some(var), None, None) if !var.is_empty() => CredentialSource::Env(var),
        (None, Some(f), None) => CredentialSource::File(resolve_path(&f)),
        (None, None, Some(d)) => {
            let key = key.unwrap_or_else(|| DEFAULT_CREDENTIAL_KEY.into());
            // A key is one file name inside the mounted folder, never a path out of it.
            if key.is_empty() || key.contains('/') || key == "." || key == ".." {
                return Err(format!("`key: {key}` is not a file name"));
            }
            CredentialSource::Dir {
                path: resolve_path(&d),
                key,
            }
        }
        _ => return Err("give exactly one of `env`, `file` or `dir`".into()),
    };
    if key_given && !matches!(source, CredentialSource::Dir { .. }) {
        return Err("`key` only applies to a `dir` source".into());
    }
    let injection = match (inject, header) {
        (Some(_), Some(_)) => return Err("give `inject` or `header`, not both".into()),
        (None, Some(name)) => raw::RawInjection::Header {
            name,
            template: None,
        },
        (Some(inject), None) => inject,
        (None, None) => raw::RawInjection::Bearer,
    };
    let injection = match injection {
        raw::RawInjection::Bearer => CredentialInjection::Bearer,
        raw::RawInjection::Basic => CredentialInjection::Basic,
        raw::RawInjection::Header { name, template } => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("`{name}` is not a header name"));
            }
            let template = template.unwrap_or_else(|| DEFAULT_HEADER_TEMPLATE.into());
            if !template.contains("{value}") {
                return Err(format!("template `{template}` has no `{{value}}`"));
            }
            CredentialInjection::Header {
                name: name.to_ascii_lowercase(),
                template,
            }
        }
        raw::RawInjection::Query { param } => {
            if param.is_empty()
                || param
                    .bytes()
                    .any(|b| b.is_ascii_control() || b" &=#%+".contains(&b))
            {
                return Err(format!("`{param}` is not a query parameter name"));
            }
            CredentialInjection::Query { param }
        }
    };
    if key_given && injection == CredentialInjection::Basic {
        return Err("`basic` reads `username` and `password` from `dir`; drop `key`".into());
    }
    if services.is_empty() {
        return Err("`services` must name at least one catalog tool".into());
    }
    let services = services
        .into_iter()
        .map(|s| BoundService {
            at: format!("{file}:{}:{}", s.referenced.line(), s.referenced.column()),
            tool: s.value,
        })
        .collect();
    Ok(CredentialConfig {
        source,
        injection,
        services,
    })
}

impl Config {
    /// The sections of `fresh` (the file as it reads now) that differ from
    /// this running configuration outside `credentials:`. Those are read
    /// once at start, so a reload leaves them as they were.
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
                    && self.decision_tls == fresh.decision_tls,
            ),
            ("audit", self.audit == fresh.audit),
            ("reload", self.reload == fresh.reload),
            ("tasks", self.tasks == fresh.tasks),
        ];
        sections
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
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
