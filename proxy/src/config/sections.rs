//! One function per section of the configuration file, each turning its raw
//! section into the validated one. Errors name the field as the file spells
//! it (`forward.connect_timeout`, `listeners[0].address`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;

use super::ctx::Ctx;
use super::{
    raw, split_host_port, AuditOnFailure, AuditOutput, ConfigError, ForwardConfig, ListenerConfig,
    ListenerKind, RedisConfig, ReloadConfig, RemoteDecision, SecretSource, StateConfig,
    TasksConfig, TlsConfig, TlsFiles, DEFAULT_ADMIN_ADDRESS, DEFAULT_APPROVAL_HOLD,
    DEFAULT_APPROVAL_MAX_BODY, DEFAULT_APPROVAL_TTL, DEFAULT_CA_DIR, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DECISION_ADDRESS, DEFAULT_DECISION_ADMIN_ADDRESS, DEFAULT_DECISION_CACHE_SIZE,
    DEFAULT_DECISION_CACHE_TTL, DEFAULT_DECISION_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LEAF_CACHE_SIZE, DEFAULT_LISTENER_NAME, DEFAULT_MAX_IDLE_PER_HOST,
    DEFAULT_MAX_TASK_TTL, DEFAULT_PROXY_ADDRESS, DEFAULT_REDIS_KEY_PREFIX, DEFAULT_REDIS_TIMEOUT,
    DEFAULT_RELOAD_INTERVAL, DEFAULT_RELOAD_WATCH, DEFAULT_REQUIRE_ORIGINAL_DESTINATION,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SYSTEM_ROOTS, DEFAULT_TASK_TTL, DEFAULT_TRANSPARENT_ADDRESS,
    DEFAULT_TUNNEL_HALF_CLOSE_TIMEOUT, DEFAULT_WEBHOOK_TIMEOUT,
};

/// No listeners in the file: one, with every default.
pub(super) fn listeners(
    raw: Vec<raw::RawListener>,
    issuers: &[super::IssuerConfig],
    ctx: &Ctx,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let raw = if raw.is_empty() {
        vec![raw::RawListener {
            name: None,
            address: None,
            tls: None,
            identity: None,
            kind: raw::RawListenerKind::Proxy,
            require_original_destination: None,
        }]
    } else {
        raw
    };
    let mut listeners = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let field = format!("listeners[{i}]");
        let name: Arc<str> = l.name.as_deref().unwrap_or(DEFAULT_LISTENER_NAME).into();
        if listeners.iter().any(|x: &ListenerConfig| x.name == name) {
            return Err(ctx.invalid(&field, format!("duplicate listener name `{name}`")));
        }
        let transparent = l.kind == raw::RawListenerKind::Transparent;
        let default_address = if transparent {
            DEFAULT_TRANSPARENT_ADDRESS
        } else {
            DEFAULT_PROXY_ADDRESS
        };
        let address = ctx.socket(
            &format!("{field}.address"),
            l.address.as_deref().unwrap_or(default_address),
        )?;
        let tls = ctx.tls_files(&format!("{field}.tls"), l.tls, true)?;
        if tls.as_ref().is_some_and(|t| t.ca.is_some()) {
            return Err(ctx.invalid(
                &format!("{field}.tls.ca"),
                "client certificates are an identity source: set `identity.mtls.trust_bundle`"
                    .into(),
            ));
        }
        let identity =
            super::identity::listener(l.identity, &format!("{field}.identity"), issuers, ctx)?;
        if identity.mtls_trust_bundle.is_some() && tls.is_none() {
            return Err(ctx.invalid(
                &format!("{field}.identity.mtls"),
                "client certificates need a TLS listener: set `tls: { cert, key }`".into(),
            ));
        }
        let kind = if transparent {
            // Redirected agents do not know a proxy is there: they present
            // it no certificate and no Proxy-Authorization.
            if tls.is_some() {
                return Err(ctx.invalid(
                    &format!("{field}.tls"),
                    "a transparent listener takes the agents' own TLS; it serves none".into(),
                ));
            }
            if identity.mtls_trust_bundle.is_some() || !identity.jwt.is_empty() {
                return Err(ctx.invalid(
                    &format!("{field}.identity"),
                    "redirected agents present nothing to the proxy: a transparent listener \
                     identifies them by `static` or `source_addresses`"
                        .into(),
                ));
            }
            ListenerKind::Transparent {
                require_original_destination: l
                    .require_original_destination
                    .unwrap_or(DEFAULT_REQUIRE_ORIGINAL_DESTINATION),
            }
        } else {
            if l.require_original_destination.is_some() {
                return Err(ctx.invalid(
                    &format!("{field}.require_original_destination"),
                    "only a `kind: transparent` listener has an original destination".into(),
                ));
            }
            ListenerKind::Proxy
        };
        listeners.push(ListenerConfig {
            name,
            address,
            tls,
            identity,
            kind,
        });
    }
    Ok(listeners)
}

/// The admin listener's address.
pub(super) fn admin(raw: raw::RawAdmin, ctx: &Ctx) -> Result<SocketAddr, ConfigError> {
    ctx.socket(
        "admin.address",
        raw.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS),
    )
}

pub(super) fn forward(raw: raw::RawForward, ctx: &Ctx) -> Result<ForwardConfig, ConfigError> {
    let mut resolve = HashMap::new();
    for (from, to) in &raw.resolve {
        let (host, port) = split_host_port(from)
            .ok_or_else(|| ctx.invalid("forward.resolve", format!("`{from}` is not host:port")))?;
        resolve.insert((host, port), ctx.socket("forward.resolve", to)?);
    }
    let mut allow_networks = Vec::new();
    for net in &raw.allow_networks {
        allow_networks.push(net.parse::<IpNet>().map_err(|_| {
            ctx.invalid(
                "forward.allow_networks",
                format!("`{net}` is not a CIDR network"),
            )
        })?);
    }
    Ok(ForwardConfig {
        connect_timeout: ctx.duration(
            "forward.connect_timeout",
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        response_timeout: ctx.duration(
            "forward.response_timeout",
            raw.response_timeout.as_deref(),
            DEFAULT_RESPONSE_TIMEOUT,
        )?,
        idle_timeout: ctx.duration(
            "forward.idle_timeout",
            raw.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_idle_per_host: raw.max_idle_per_host.unwrap_or(DEFAULT_MAX_IDLE_PER_HOST),
        tunnel_half_close_timeout: ctx.duration(
            "forward.tunnel_half_close_timeout",
            raw.tunnel_half_close_timeout.as_deref(),
            DEFAULT_TUNNEL_HALF_CLOSE_TIMEOUT,
        )?,
        resolve,
        allow_networks,
        via: raw.via,
    })
}

/// Nothing here can be wrong; a leaf cache size of 0 is taken as 1.
pub(super) fn tls(raw: raw::RawTls, ctx: &Ctx) -> TlsConfig {
    TlsConfig {
        ca_dir: ctx.dir(raw.ca_dir, DEFAULT_CA_DIR),
        create_ca_if_missing: raw.create_ca_if_missing,
        upstream_ca_files: raw
            .upstream_ca_files
            .iter()
            .map(|p| ctx.resolve_path(p))
            .collect(),
        system_roots: raw.system_roots.unwrap_or(DEFAULT_SYSTEM_ROOTS),
        leaf_cache_size: raw
            .leaf_cache_size
            .unwrap_or(DEFAULT_LEAF_CACHE_SIZE)
            .max(1),
    }
}

/// Output: `stdout`, `-` or nothing: standard output; anything else is a
/// file (or a named pipe). `on_failure`: `refuse` unless it says `forward`.
/// `mcp_arguments`: whether MCP calls' arguments are written whole.
pub(super) fn audit(
    raw: raw::RawAudit,
    ctx: &Ctx,
) -> Result<(AuditOutput, AuditOnFailure, bool), ConfigError> {
    let output = match raw.output.as_deref() {
        None | Some("stdout") | Some("-") => AuditOutput::Stdout,
        Some(p) => AuditOutput::File(ctx.resolve_path(Path::new(p))),
    };
    let on_failure = match raw.on_failure.as_deref() {
        None | Some("refuse") => AuditOnFailure::Refuse,
        Some("forward") => AuditOnFailure::Forward,
        Some(other) => {
            return Err(ctx.invalid(
                "audit.on_failure",
                format!("`{other}` is neither `refuse` nor `forward`"),
            ))
        }
    };
    let full_mcp_arguments = match raw.mcp_arguments.as_deref() {
        None | Some("digest") => false,
        Some("full") => true,
        Some(other) => {
            return Err(ctx.invalid(
                "audit.mcp_arguments",
                format!("`{other}` is neither `digest` nor `full`"),
            ))
        }
    };
    Ok((output, on_failure, full_mcp_arguments))
}

pub(super) fn reload(raw: raw::RawReload, ctx: &Ctx) -> Result<ReloadConfig, ConfigError> {
    let reload = ReloadConfig {
        watch: raw.watch.unwrap_or(DEFAULT_RELOAD_WATCH),
        interval: ctx.duration(
            "reload.interval",
            raw.interval.as_deref(),
            DEFAULT_RELOAD_INTERVAL,
        )?,
    };
    if reload.interval.is_zero() {
        return Err(ctx.invalid("reload.interval", "must be above zero".into()));
    }
    Ok(reload)
}

/// The `decision:` section: how this process gets its decisions.
pub(super) struct Decision {
    pub(super) cache_size: usize,
    pub(super) remote: Option<RemoteDecision>,
}

/// `decision.tls` is checked even without an endpoint (which leaves it unused).
pub(super) fn decision(raw: raw::RawDecision, ctx: &Ctx) -> Result<Decision, ConfigError> {
    let client_tls = ctx.tls_files("decision.tls", raw.tls, false)?;
    let remote = match raw.endpoint {
        None => None,
        Some(endpoint) => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ctx.invalid(
                    "decision.endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL"),
                ));
            }
            if endpoint.starts_with("https://")
                && client_tls.as_ref().and_then(|t| t.ca.as_ref()).is_none()
            {
                return Err(ctx.invalid(
                    "decision.tls.ca",
                    "an https:// endpoint needs the CA that signed the service".into(),
                ));
            }
            Some(RemoteDecision {
                endpoint,
                timeout: ctx.duration(
                    "decision.timeout",
                    raw.timeout.as_deref(),
                    DEFAULT_DECISION_TIMEOUT,
                )?,
                cache_ttl: ctx.duration(
                    "decision.cache_ttl",
                    raw.cache_ttl.as_deref(),
                    DEFAULT_DECISION_CACHE_TTL,
                )?,
                tls: client_tls,
            })
        }
    };
    Ok(Decision {
        cache_size: raw.cache_size.unwrap_or(DEFAULT_DECISION_CACHE_SIZE),
        remote,
    })
}

/// The `decision_service:` section: where `tollgate decision` serves.
pub(super) struct DecisionService {
    pub(super) address: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) tls: Option<TlsFiles>,
}

pub(super) fn decision_service(
    raw: raw::RawDecisionService,
    ctx: &Ctx,
) -> Result<DecisionService, ConfigError> {
    let tls = ctx.tls_files("decision_service.tls", raw.tls, true)?;
    let address = ctx.socket(
        "decision_service.address",
        raw.address.as_deref().unwrap_or(DEFAULT_DECISION_ADDRESS),
    )?;
    let admin = ctx.socket(
        "decision_service.admin",
        raw.admin
            .as_deref()
            .unwrap_or(DEFAULT_DECISION_ADMIN_ADDRESS),
    )?;
    Ok(DecisionService {
        address,
        admin,
        tls,
    })
}

pub(super) fn tasks(raw: raw::RawTasks, ctx: &Ctx) -> Result<TasksConfig, ConfigError> {
    let admin_token = raw
        .admin_token
        .map(|source| secret_source(source, "tasks.admin_token", ctx))
        .transpose()?;
    let default_ttl = ctx.duration(
        "tasks.default_ttl",
        raw.default_ttl.as_deref(),
        DEFAULT_TASK_TTL,
    )?;
    let max_ttl = ctx.duration(
        "tasks.max_ttl",
        raw.max_ttl.as_deref(),
        DEFAULT_MAX_TASK_TTL,
    )?;
    if default_ttl.is_zero() || default_ttl > max_ttl {
        return Err(ctx.invalid(
            "tasks.default_ttl",
            "must be above zero and at most tasks.max_ttl".into(),
        ));
    }
    Ok(TasksConfig {
        admin_token,
        default_ttl,
        max_ttl,
    })
}

pub(super) fn approvals(
    raw: raw::RawApprovals,
    ctx: &Ctx,
) -> Result<super::ApprovalsConfig, ConfigError> {
    use super::{ApproverConfig, WebhookConfig};
    let hold = ctx.duration("approvals.hold", raw.hold.as_deref(), DEFAULT_APPROVAL_HOLD)?;
    let ttl = ctx.duration("approvals.ttl", raw.ttl.as_deref(), DEFAULT_APPROVAL_TTL)?;
    if ttl.is_zero() {
        return Err(ctx.invalid("approvals.ttl", "must be above zero".into()));
    }
    let mut approvers: Vec<ApproverConfig> = Vec::new();
    for (i, a) in raw.approvers.into_iter().enumerate() {
        let field = format!("approvals.approvers[{i}]");
        let name = a.name.trim().to_string();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(ctx.invalid(&field, "needs a printable `name`".into()));
        }
        if approvers.iter().any(|other| other.name == name) {
            return Err(ctx.invalid(&field, format!("approver `{name}` is listed twice")));
        }
        let token = secret_source(a.token, &format!("{field}.token"), ctx)?;
        approvers.push(ApproverConfig { name, token });
    }
    let webhook = raw
        .webhook
        .map(|w| {
            let url = secret_source(w.url, "approvals.webhook.url", ctx)?;
            let timeout = ctx.duration(
                "approvals.webhook.timeout",
                w.timeout.as_deref(),
                DEFAULT_WEBHOOK_TIMEOUT,
            )?;
            Ok::<_, ConfigError>(WebhookConfig { url, timeout })
        })
        .transpose()?;
    Ok(super::ApprovalsConfig {
        hold,
        max_body: raw.max_body_bytes.unwrap_or(DEFAULT_APPROVAL_MAX_BODY),
        rules: super::ApprovalRules {
            ttl,
            reusable: raw.reusable.unwrap_or(false),
        },
        approvers,
        webhook,
        console_url: raw
            .console_url
            .map(|url| match url.parse::<http::Uri>() {
                Ok(u) if matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some() => {
                    Ok(Arc::from(url.as_str()))
                }
                _ => Err(ctx.invalid("approvals.console_url", format!("`{url}`: an http(s) URL"))),
            })
            .transpose()?,
    })
}

fn secret_source(
    raw: raw::RawSecretSource,
    field: &str,
    ctx: &Ctx,
) -> Result<SecretSource, ConfigError> {
    match raw {
        raw::RawSecretSource {
            env: Some(var),
            file: None,
        } => Ok(SecretSource::Env(var)),
        raw::RawSecretSource {
            env: None,
            file: Some(file),
        } => Ok(SecretSource::File(ctx.resolve_path(&file))),
        _ => Err(ctx.invalid(field, "give exactly one of `env` or `file`".into())),
    }
}

pub(super) fn state(raw: raw::RawState, ctx: &Ctx) -> Result<StateConfig, ConfigError> {
    let Some(redis) = raw.redis else {
        return Ok(StateConfig::Memory);
    };
    let url = url::Url::parse(&redis.url)
        .map_err(|e| ctx.invalid("state.redis.url", format!("`{}`: {e}", redis.url)))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(ctx.invalid(
                "state.redis.url",
                format!("scheme `{other}`: `redis://` or `rediss://` (TLS)"),
            ))
        }
    };
    // A password in the URL would be in the file every replica mounts and
    // in any line that prints the URL.
    if url.password().is_some() {
        return Err(ctx.invalid(
            "state.redis.url",
            "holds a password: give it as `state.redis.password` (`env` or `file`)".into(),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ctx.invalid("state.redis.url", "names no host".into()));
    }
    if redis.ca_file.is_some() && !tls {
        return Err(ctx.invalid(
            "state.redis.ca_file",
            "only a `rediss://` (TLS) URL verifies a server".into(),
        ));
    }
    let username = match (redis.username, url.username()) {
        (Some(name), "") => Some(name),
        (None, "") => None,
        (None, name) => Some(name.to_string()),
        (Some(_), _) => {
            return Err(ctx.invalid(
                "state.redis.username",
                "the URL names a user too: give it once".into(),
            ))
        }
    };
    let key_prefix = redis
        .key_prefix
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
        return Err(ctx.invalid(
            "state.redis.key_prefix",
            "a non-empty name without braces or spaces".into(),
        ));
    }
    let timeout = ctx.duration(
        "state.redis.timeout",
        redis.timeout.as_deref(),
        DEFAULT_REDIS_TIMEOUT,
    )?;
    if timeout.is_zero() {
        return Err(ctx.invalid("state.redis.timeout", "must be above zero".into()));
    }
    let mut bare = url.clone();
    let _ = bare.set_username("");
    Ok(StateConfig::Redis(RedisConfig {
        url: bare.to_string(),
        username,
        password: redis
            .password
            .map(|p| secret_source(p, "state.redis.password", ctx))
            .transpose()?,
        ca_file: redis.ca_file.map(|p| ctx.resolve_path(&p)),
        key_prefix,
        timeout,
    }))
}
