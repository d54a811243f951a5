//! `tollgate run`: the composition root of the data plane.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::serve;
use super::{load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::config::{Config, ListenerKind};
use crate::core::audit::AuditSink;
use crate::core::Core;
use crate::decision::client::{RemoteConfig, RemoteDecider};
use crate::decision::snapshot::Snapshot;
use crate::decision::state::TaskStore;
use crate::decision::{EmbeddedDecider, SharedDecider};
use crate::pipeline::forward::Forwarder;
use crate::pipeline::limits::Admission;
use crate::pipeline::{accept, transparent, Hold, Pipeline};
use crate::tls::{self, CertificateAuthority, LeafCache};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Worker threads (default: one per core).
    #[arg(long, env = "TOLLGATE_WORKERS")]
    workers: Option<usize>,
}

pub fn run(args: RunArgs) -> ExitCode {
    serve::init_logging();
    let (config, snapshot) = match load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let Some(runtime) = serve::runtime(args.workers) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(start(config, snapshot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The embedded decider (over `tasks`), or a client of a remote
/// `tollgate decision`.
fn decider(
    config: &Config,
    tasks: Option<&Arc<TaskStore>>,
    audit: &AuditSink,
) -> anyhow::Result<SharedDecider> {
    let Some(remote) = &config.remote_decision else {
        let tasks = tasks.expect("tasks are kept wherever decisions are embedded");
        return Ok(Arc::new(
            EmbeddedDecider::new(tasks.clone()).with_pin_events(Arc::new(audit.clone())),
        ));
    };
    let client = RemoteDecider::new(
        &RemoteConfig {
            endpoint: remote.endpoint.clone(),
            timeout: remote.timeout,
            cache_size: config.decision_cache_size,
            cache_ttl: remote.cache_ttl,
            tls: remote
                .tls
                .as_ref()
                .map(super::tls_files::client)
                .transpose()?,
        },
        &format!("tollgate run (pid {})", std::process::id()),
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(endpoint = %remote.endpoint, "deciding remotely");
    Ok(Arc::new(client))
}

fn load_ca(config: &Config) -> anyhow::Result<Option<Arc<LeafCache>>> {
    let dir = &config.tls.ca_dir;
    if !CertificateAuthority::exists(dir) {
        if !config.tls.create_ca_if_missing {
            tracing::warn!(
                ca_dir = %dir.display(),
                "no interception CA: CONNECT to catalog hosts is decided as a blind `connect`; \
                 run `tollgate ca init --out {}` to inspect HTTPS",
                dir.display()
            );
            return Ok(None);
        }
        let cert = CertificateAuthority::create(dir, false)?;
        tracing::info!(cert = %cert.display(), "created interception CA; give agents this file to trust");
    }
    let ca = CertificateAuthority::load(dir)?;
    Ok(Some(Arc::new(LeafCache::new(
        ca,
        config.tls.leaf_cache_size,
    ))))
}

async fn start(config: Config, snapshot: Snapshot) -> anyhow::Result<()> {
    let (metrics, snapshot) = serve::start_snapshot(snapshot, &config)?;
    let leaves = load_ca(&config)?;
    let upstream_tls =
        tls::upstream::client_config(config.tls.system_roots, &config.tls.upstream_ca_files)?;
    let tasks = config
        .remote_decision
        .is_none()
        .then(|| serve::task_store(&config))
        .transpose()?;
    // The console needs the approvals: only a process deciding in-process
    // keeps them (a remote decision service serves its own).
    let sink = AuditSink::start(&config.audit, config.audit_on_failure)?
        .with_mcp_arguments(config.audit_mcp_arguments);
    let (audit, console) = match &tasks {
        Some(tasks) => serve::audit_with_console(&config, tasks, sink),
        None => (sink, None),
    };
    let pipeline = Arc::new(Pipeline {
        snapshot: snapshot.clone(),
        core: Core::new(decider(&config, tasks.as_ref(), &audit)?).audited_by(audit.clone()),
        forwarder: Forwarder::new(&config.forward, upstream_tls),
        leaves,
        audit: audit.clone(),
        via: config.forward.via,
        tunnel_half_close: config.forward.tunnel_half_close_timeout,
        hold: Hold {
            time: config.approvals.hold,
            max_body: config.approvals.max_body,
            console_url: config.approvals.console_url.clone(),
        },
        limits: Arc::new(config.limits.clone()),
        admission: Admission::new(&config.limits),
    });
    // tollgate never dials itself: a request to one of its own ports would
    // come back in and loop. The decision service's configured addresses
    // count too, whether this process or a `tollgate decision` beside it
    // serves them: an agent must not reach the decision API through it.
    let guard = pipeline.forwarder.connector().guard();
    guard.own_listener(config.decision_address);
    guard.own_listener(config.decision_admin_address);

    // Deciding in-process with tasks or approvers configured: this process
    // is the decision plane, so it serves the API that starts and ends
    // tasks and decides approvals.
    let identity = serve::identity_registry(&config).await?;
    let administered = config.tasks.is_some() || !config.approvals.approvers.is_empty();
    if let (Some(tasks), true) = (&tasks, administered) {
        let plane =
            serve::decision_plane(&config, snapshot.clone(), tasks.clone(), audit, &identity);
        let (listener, tls) = serve::bind_decision(&config).await?;
        guard.own_listener(listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = crate::server::serve(listener, plane, tls).await {
                tracing::error!("decision API stopped: {e:#}");
            }
        });
    }

    let (ready, admin) = serve::start_admin(
        "admin",
        config.admin_address,
        metrics,
        tasks.as_deref(),
        console,
    )
    .await?;
    guard.own_listener(admin);
    // Every agent listener is bound, and known to the guard, before any
    // of them serves: no request can reach a port the guard does not know
    // yet.
    let sources = identity.listeners(&config.listeners)?;
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (listener_config, sources) in config.listeners.iter().zip(sources) {
        let tls = match &listener_config.tls {
            Some(files) => Some(TlsAcceptor::from(super::tls_files::proxy_listener(
                files,
                sources.mtls.is_some(),
            )?)),
            None => None,
        };
        if let Some(bundle) = &sources.mtls {
            tokio::spawn(bundle.clone().watch(config.reload.interval));
        }
        let listener = TcpListener::bind(listener_config.address).await?;
        guard.own_listener(listener.local_addr()?);
        tracing::info!(
            listener = %listener_config.name,
            kind = listener_config.kind.as_str(),
            tls = tls.is_some(),
            identity_sources = %listener_config.identity.describe(),
            address = %listener.local_addr()?,
            "listening"
        );
        bound.push((listener, listener_config, sources, tls));
    }
    for (listener, listener_config, sources, tls) in bound {
        match listener_config.kind {
            ListenerKind::Proxy => tokio::spawn(accept::serve(
                listener,
                listener_config.clone(),
                sources,
                tls,
                pipeline.clone(),
            )),
            ListenerKind::Transparent {
                require_original_destination,
            } => tokio::spawn(transparent::serve(
                listener,
                listener_config.name.clone(),
                sources,
                require_original_destination,
                pipeline.clone(),
            )),
        };
    }
    serve::start_reloader(snapshot, &config);
    tokio::spawn(crate::memory::return_freed_memory());
    ready.store(true, Ordering::Release);
    serve::terminated().await
}
