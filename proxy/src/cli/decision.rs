//! `tollgate decision`: the decision plane as a gRPC service.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{init_logging, load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::admin;
use crate::config::Config;
use crate::decision::tasks::{spawn_sweeper, TaskLimits, TaskStore};
use crate::pipeline::audit::AuditSink;
use crate::server::{self, DecisionPlane};
use crate::snapshot::{EmbeddedDecider, Snapshot, SnapshotHandle};

#[derive(Debug, clap::Args)]
pub struct DecisionArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Worker threads (default: one per core).
    #[arg(long, env = "TOLLGATE_WORKERS")]
    workers: Option<usize>,
}

pub fn decision(args: DecisionArgs) -> ExitCode {
    init_logging();
    let (config, snapshot) = match load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    super::run::runtime(args.workers).map_or(ExitCode::FAILURE, |rt| {
        match rt.block_on(serve(config, snapshot)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Policies and tasks, deciding in this process. Starts the task sweeper,
/// so it needs a runtime.
pub(super) fn embedded_decider(
    config: &Config,
    snapshot: &Arc<SnapshotHandle>,
) -> Arc<EmbeddedDecider> {
    let limits = config
        .tasks
        .as_ref()
        .map_or_else(TaskLimits::default, |t| TaskLimits {
            default_ttl: t.default_ttl,
            max_ttl: t.max_ttl,
        });
    let tasks = Arc::new(TaskStore::new(limits));
    spawn_sweeper(&tasks, TASK_SWEEP_INTERVAL);
    Arc::new(EmbeddedDecider::new(snapshot.clone(), tasks))
}

/// How often expired tasks are looked for and announced. Expired tokens
/// are refused at once regardless; this bounds how long a tunnel of an
/// expired task may stay open.
const TASK_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn plane(
    config: &Config,
    snapshot: Arc<SnapshotHandle>,
    decider: Arc<EmbeddedDecider>,
    audit: AuditSink,
) -> Arc<DecisionPlane> {
    Arc::new(DecisionPlane {
        snapshot,
        decider,
        audit,
        admin_token: config.tasks.as_ref().and_then(|t| t.admin_token.clone()),
    })
}

/// The decision API's listener and its TLS, as configured.
pub(super) async fn bind(
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

async fn serve(config: Config, snapshot: Snapshot) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    tracing::info!(
        routes = snapshot.catalog.route_count(),
        policies = snapshot.engine.policy_count(),
        credentials = snapshot.credentials.len(),
        "catalog, policies and credentials loaded"
    );
    let snapshot = SnapshotHandle::new(snapshot, config.decision_cache_size);
    let decider = embedded_decider(&config, &snapshot);
    let plane = plane(
        &config,
        snapshot.clone(),
        decider,
        AuditSink::start(&config.audit)?,
    );
    let ready =
        super::start_admin("decision-admin", config.decision_admin_address, metrics).await?;
    let (listener, tls) = bind(&config).await?;
    super::start_reloader(snapshot, &config);
    ready.store(true, Ordering::Release);
    tokio::select! {
        served = server::serve(listener, plane, tls) => served?,
        done = super::terminated() => done?,
    }
    Ok(())
}
