//! `tollgate decision`: the decision plane as a gRPC service.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use super::serve;
use super::{load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::config::Config;
use crate::core::audit::AuditSink;
use crate::decision::snapshot::Snapshot;
use crate::server;

#[derive(Debug, clap::Args)]
pub struct DecisionArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Worker threads (default: one per core).
    #[arg(long, env = "TOLLGATE_WORKERS")]
    workers: Option<usize>,
}

pub fn decision(args: DecisionArgs) -> ExitCode {
    serve::init_logging();
    let (config, snapshot) = match load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    serve::runtime(args.workers).map_or(ExitCode::FAILURE, |rt| {
        match rt.block_on(run(config, snapshot)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(config: Config, snapshot: Snapshot) -> anyhow::Result<()> {
    let (metrics, snapshot) = serve::start_snapshot(snapshot, &config)?;
    let identity = serve::identity_registry(&config).await?;
    let tasks = serve::task_store(&config)?;
    let sink = AuditSink::start(&config.audit, config.audit_on_failure)?
        .with_mcp_arguments(config.audit_mcp_arguments);
    let (audit, console) = serve::audit_with_console(&config, &tasks, sink);
    let (ready, _) = serve::start_admin(
        "decision-admin",
        config.decision_admin_address,
        metrics,
        Some(&tasks),
        console,
    )
    .await?;
    let plane = serve::decision_plane(&config, snapshot.clone(), tasks, audit, &identity);
    let (listener, tls) = serve::bind_decision(&config).await?;
    serve::start_reloader(snapshot, &config);
    ready.store(true, Ordering::Release);
    tokio::select! {
        served = server::serve(listener, plane, tls) => served?,
        done = serve::terminated() => done?,
    }
    Ok(())
}
