//! `tollgate run`: the composition root of the data plane.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{init_logging, load, ConfigArg, EXIT_INVALID_CONFIG};
use crate::admin;
use crate::config::Config;
use crate::decision::client::{RemoteConfig, RemoteDecider};
use crate::decision::SharedDecider;
use crate::pipeline::audit::AuditSink;
use crate::pipeline::forward::Forwarder;
use crate::pipeline::{accept, Pipeline};
use crate::snapshot::{EmbeddedDecider, SnapshotHandle};
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
    init_logging();
    let (config, snapshot) = match load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let Some(runtime) = runtime(args.workers) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config, snapshot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime: `workers` threads (default: one per core). Every serving
/// command starts here, so this is also where the open-file limit is raised.
pub(super) fn runtime(workers: Option<usize>) -> Option<tokio::runtime::Runtime> {
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

/// The embedded decider, or a client of a remote `tollgate decision`.
fn decider(
    config: &Config,
    embedded: Option<&Arc<EmbeddedDecider>>,
) -> anyhow::Result<SharedDecider> {
    let Some(remote) = &config.remote_decision else {
        let embedded = embedded.expect("an embedded decider without a remote endpoint");
        return Ok(embedded.clone());
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

async fn serve(config: Config, snapshot: crate::snapshot::Snapshot) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let leaves = load_ca(&config)?;
    let upstream_tls =
        tls::upstream::client_config(config.tls.system_roots, &config.tls.upstream_ca_files)?;
    tracing::info!(
        routes = snapshot.catalog.route_count(),
        policies = snapshot.engine.policy_count(),
        credentials = snapshot.credentials.len(),
        "catalog, policies and credentials loaded"
    );
    let snapshot = SnapshotHandle::new(snapshot, config.decision_cache_size);
    let audit = AuditSink::start(&config.audit)?;
    let embedded = config
        .remote_decision
        .is_none()
        .then(|| super::decision::embedded_decider(&config, &snapshot));
    let pipeline = Arc::new(Pipeline {
        snapshot: snapshot.clone(),
        decider: decider(&config, embedded.as_ref())?,
        forwarder: Forwarder::new(&config.forward, upstream_tls),
        leaves,
        audit: audit.clone(),
        via: config.forward.via,
        tunnel_half_close: config.forward.tunnel_half_close_timeout,
    });
    // Deciding in-process with tasks configured: this process is the
    // decision plane, so it serves the API that starts and ends tasks.
    if let (Some(embedded), Some(_)) = (embedded, &config.tasks) {
        let plane = super::decision::plane(&config, snapshot.clone(), embedded, audit);
        let listener = super::decision::bind(&config).await?;
        tokio::spawn(async move {
            if let Err(e) = crate::server::serve(listener.0, plane, listener.1).await {
                tracing::error!("decision API stopped: {e:#}");
            }
        });
    }

    let ready = super::start_admin("admin", config.admin_address, metrics).await?;
    for listener_config in &config.listeners {
        let listener = TcpListener::bind(listener_config.address).await?;
        tracing::info!(
            listener = %listener_config.name,
            identity = listener_config.static_identity.as_deref().unwrap_or("none"),
            address = %listener.local_addr()?,
            "listening"
        );
        tokio::spawn(accept::serve(
            listener,
            listener_config.clone(),
            pipeline.clone(),
        ));
    }
    super::start_reloader(snapshot, &config);
    tokio::spawn(crate::memory::return_freed_memory());
    ready.store(true, Ordering::Release);
    super::terminated().await
}
