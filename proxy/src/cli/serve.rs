//! What the two serving verbs, `run` and `decision`, share: the runtime,
//! logging, the admin listener, reload, the embedded decision plane, and
//! shutdown.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::admin::console::Console;
use crate::config::{Config, StateConfig};
use crate::core::audit::AuditSink;
use crate::core::recent::{RecentDecisions, RECENT_DECISIONS};
use crate::core::Core;
use crate::decision::snapshot::{Snapshot, SnapshotHandle};
use crate::decision::state::TaskStore;
use crate::decision::tasks::TaskLimits;
use crate::decision::webhook::Webhook;
use crate::decision::EmbeddedDecider;
use crate::identity::Registry;
use crate::server::DecisionPlane;

/// The runtime: `workers` threads (default: one per core). Every serving
/// command starts here, so this is also where the open-file limit is raised.
pub fn runtime(workers: Option<usize>) -> Option<tokio::runtime::Runtime> {
    raise_open_file_limit();
    // One worker: a current-thread runtime does the same work without the
    // work-stealing scheduler's bookkeeping.
    let mut builder = if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = workers {
            b.worker_threads(n.max(1));
        }
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("cannot start the runtime: {e}"))
        .ok()
}

/// Every agent connection, and its upstream, is a descriptor: a proxy
/// behind the common soft limit of 1,024 would refuse agents long before it
/// runs short of memory. Raise the soft limit to the hard one, as far as
/// the system allows, and say what it is.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit read and write the struct passed in only.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let soft = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                limit.rlim_cur = soft;
            }
        }
        tracing::debug!(
            soft_before = soft,
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "open-file limit"
        );
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not make the next log line a panic.
        .log_internal_errors(false)
        .try_init();
}

/// Install the metrics recorder with every series at zero, say what was
/// loaded, and make the snapshot live.
pub fn start_snapshot(
    snapshot: Snapshot,
    config: &Config,
) -> anyhow::Result<(
    metrics_exporter_prometheus::PrometheusHandle,
    Arc<SnapshotHandle>,
)> {
    let metrics = crate::admin::install_metrics()?;
    crate::core::audit::register_request_series(&snapshot.catalog);
    crate::core::audit::register_identification_series();
    tracing::info!(
        routes = snapshot.catalog.route_count(),
        policies = snapshot.engine.policy_count(),
        credentials = snapshot.credentials.len(),
        "catalog, policies and credentials loaded"
    );
    snapshot.log_enforcement(config.remote_decision.is_some());
    Ok((
        metrics,
        SnapshotHandle::new(snapshot, config.decision_cache_size),
    ))
}

/// Bind the admin listener (`/metrics`, `/healthz`, `/readyz`, and the
/// approval console when there is one), log its address under `name`, and
/// serve it. Readiness starts false, and while `tasks` (the state store,
/// when this process keeps one) cannot be reached it stays false. Returns
/// the readiness flag and the address bound.
pub async fn start_admin(
    name: &str,
    address: SocketAddr,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    tasks: Option<&TaskStore>,
    console: Option<Arc<Console>>,
) -> anyhow::Result<(Arc<AtomicBool>, SocketAddr)> {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(listener = name, address = %bound, "listening");
    if console.is_some() {
        tracing::info!(
            url = %format!("http://{}/console", listener.local_addr()?),
            "approval console"
        );
    }
    tokio::spawn(crate::admin::serve(
        listener,
        crate::admin::AdminState {
            metrics,
            ready: ready.clone(),
            store: tasks.map(TaskStore::health),
            console,
        },
    ));
    Ok((ready, bound))
}

/// Reload catalog, policies and credentials into `snapshot` on SIGHUP and
/// file change.
pub fn start_reloader(snapshot: Arc<SnapshotHandle>, config: &Config) {
    let reloader = crate::reload::Reloader {
        snapshot,
        started: config.clone(),
    };
    tokio::spawn(reloader.run());
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn terminated() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

/// How often expired tasks are looked for and announced. Expired tokens
/// are refused at once regardless; this bounds how long a tunnel of an
/// expired task may stay open.
const TASK_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// The tasks this process decides under, where `state:` says they are
/// kept. Starts their sweeper (and for Redis, the connection), so it needs
/// a runtime.
pub fn task_store(config: &Config) -> anyhow::Result<Arc<TaskStore>> {
    let limits = config
        .tasks
        .as_ref()
        .map_or_else(TaskLimits::default, |t| TaskLimits {
            default_ttl: t.default_ttl,
            max_ttl: t.max_ttl,
        });
    let tasks = match &config.state {
        StateConfig::Memory => TaskStore::in_memory(limits),
        StateConfig::Redis(redis) => TaskStore::redis(limits, redis).map_err(anyhow::Error::msg)?,
    }
    .with_approval_rules(config.approvals.rules.clone());
    let tasks = match &config.approvals.webhook {
        Some(webhook) => {
            let tls = crate::tls::upstream::client_config(
                config.tls.system_roots,
                &config.tls.upstream_ca_files,
            )?;
            tasks.with_webhook(Webhook::start(webhook.url.clone(), webhook.timeout, tls))
        }
        None => tasks,
    };
    tracing::info!(store = tasks.kind(), "task state store");
    let tasks = Arc::new(tasks);
    tasks.spawn_sweeper(TASK_SWEEP_INTERVAL);
    Ok(tasks)
}

/// Where this process keeps approvals: an audit sink that also remembers
/// recent decisions, and the console showing both, when approvers are
/// configured (without them nobody could sign in, and the audit path
/// keeps nothing extra).
pub fn audit_with_console(
    config: &Config,
    tasks: &Arc<TaskStore>,
    audit: AuditSink,
) -> (AuditSink, Option<Arc<Console>>) {
    if config.approvals.approvers.is_empty() {
        tracing::info!("approval console off: no approvals.approvers configured");
        return (audit, None);
    }
    let recent = Arc::new(RecentDecisions::new(RECENT_DECISIONS));
    let console = Console::new(
        tasks.clone(),
        config.approvals.approvers.clone(),
        recent.clone(),
    );
    (audit.with_recent(recent), console)
}

/// The decision plane deciding in this process, under `tasks`.
pub fn decision_plane(
    config: &Config,
    snapshot: Arc<SnapshotHandle>,
    tasks: Arc<TaskStore>,
    audit: AuditSink,
    identity: &Registry,
) -> Arc<DecisionPlane> {
    Arc::new(DecisionPlane {
        snapshot,
        core: Core::new(Arc::new(
            EmbeddedDecider::new(tasks.clone()).with_pin_events(Arc::new(audit.clone())),
        ))
        .audited_by(audit.clone()),
        tasks,
        audit,
        admin_token: config.tasks.as_ref().and_then(|t| t.admin_token.clone()),
        envoy: identity.envoy(&config.envoy_identity),
        approvers: config.approvals.approvers.clone(),
        console_url: config.approvals.console_url.clone(),
    })
}

/// The issuers every front shares, their keys fetched once before serving
/// (and kept fresh from then on).
pub async fn identity_registry(config: &Config) -> anyhow::Result<Registry> {
    let registry = Registry::new(&config.identity)?;
    registry.start().await;
    Ok(registry)
}

/// The decision API's listener and its TLS, as configured.
pub async fn bind_decision(
    config: &Config,
) -> anyhow::Result<(TcpListener, Option<Arc<rustls::ServerConfig>>)> {
    let tls = match &config.decision_tls {
        Some(files) => Some(super::tls_files::server(files)?),
        None => None,
    };
    let listener = TcpListener::bind(config.decision_address).await?;
    tracing::info!(
        listener = "decision",
        tls = tls.is_some(),
        address = %listener.local_addr()?,
        "listening"
    );
    Ok((listener, tls))
}
