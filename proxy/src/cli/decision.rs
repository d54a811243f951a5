//! `tollgate decision`: the decision plane as a gRPC service.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{init_logging, load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::admin;
use crate::config::Config;
use crate::decision::credentials::CredentialStore;
use crate::pipeline::audit::AuditSink;
use crate::server::{self, DecisionPlane, ExtAuthzConfig};
use crate::snapshot::{Snapshot, SnapshotHandle};

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

async fn serve(config: Config, snapshot: Snapshot) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let snapshot = SnapshotHandle::new(snapshot, config.decision_cache_size);
    let plane = Arc::new(DecisionPlane {
        snapshot: snapshot.clone(),
        audit: AuditSink::start(&config.audit)?,
        ext_authz: ExtAuthzConfig {
            credentials: CredentialStore::new(config.credentials.clone()),
        },
    });
    let tls = match &config.decision_tls {
        Some(files) => Some(super::tls_files::server(files)?),
        None => None,
    };
    let ready =
        super::start_admin("decision-admin", config.decision_admin_address, metrics).await?;
    let listener = TcpListener::bind(config.decision_address).await?;
    tracing::info!(
        listener = "decision",
        tls = tls.is_some(),
        address = %listener.local_addr()?,
        "listening"
    );
    super::start_reloader(snapshot, &config);
    ready.store(true, Ordering::Release);
    tokio::select! {
        served = server::serve(listener, plane, tls) => served?,
        done = super::terminated() => done?,
    }
    Ok(())
}
