//! Reload: on SIGHUP, and when the configuration file or a file under the
//! catalog or policy folder changes, load and validate a new snapshot
//! (catalog, policies, and the file's `credentials:` and `enforcement:`
//! sections) and swap it in.
//! A set that fails is refused with its error and the running set stays.
//! The rest of the configuration file is read once at start; a reload that
//! finds it changed says which sections wait for a restart.
//!
//! Changes are found by polling (mtime, size, name) rather than inotify:
//! Kubernetes updates mounted ConfigMaps by swapping a symlink, which inotify
//! watchers routinely miss, while a poll of a few files every few seconds
//! costs nothing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::decision::snapshot::{SnapshotError, SnapshotHandle};
use crate::telemetry;

pub struct Reloader {
    pub snapshot: Arc<SnapshotHandle>,
    /// The configuration the process started with: its folders, and
    /// everything but `credentials:` and `enforcement:`, stay as they were.
    pub started: Config,
}

impl Reloader {
    /// One reload attempt, logged either way.
    pub fn reload(&self, trigger: &str) -> bool {
        match self.load() {
            Ok((epoch, restart_needed)) => {
                let snapshot = self.snapshot.load();
                tracing::info!(
                    trigger,
                    epoch,
                    routes = snapshot.catalog.route_count(),
                    policies = snapshot.engine.policy_count(),
                    credentials = snapshot.credentials.len(),
                    "catalog, policies and credentials reloaded"
                );
                snapshot.log_enforcement(self.started.remote_decision.is_some());
                if !restart_needed.is_empty() {
                    tracing::warn!(
                        sections = restart_needed.join(", "),
                        "the configuration file changed outside `credentials:` and \
                         `enforcement:`; those sections take effect on restart"
                    );
                }
                crate::core::audit::register_request_series(&snapshot.catalog);
                metrics::counter!(telemetry::RELOADS, "result" => "ok").increment(1);
                true
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "reload refused; the running policy set stays");
                metrics::counter!(telemetry::RELOADS, "result" => "refused").increment(1);
                false
            }
        }
    }

    /// The file's `credentials:` and `enforcement:` sections as they read
    /// now, with the folders and settings of the start: swapped in, or why
    /// not.
    fn load(&self) -> Result<(u64, Vec<&'static str>), SnapshotError> {
        let fresh = Config::load(&self.started.file)?;
        let restart_needed = self.started.changed_outside_credentials(&fresh);
        let effective = Config {
            credentials: fresh.credentials,
            enforcement: fresh.enforcement,
            ..self.started.clone()
        };
        let epoch = self.snapshot.reload(&effective)?;
        Ok((epoch, restart_needed))
    }

    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        hash_file(&self.started.file, &mut hasher);
        for dir in [&self.started.catalog_dir, &self.started.policy_dir] {
            hash_dir(dir, &mut hasher);
        }
        hasher.finish()
    }

    pub async fn run(self) {
        let config = self.started.reload.clone();
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut seen = self.fingerprint();
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup => {
                    seen = self.fingerprint();
                    self.reload("sighup");
                }
                _ = tick.tick(), if config.watch => {
                    let now = self.fingerprint();
                    if now != seen {
                        seen = now;
                        self.reload("file change");
                    }
                }
            }
        }
    }
}

fn hash_dir(dir: &Path, hasher: &mut DefaultHasher) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        dir.hash(hasher);
        return;
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files {
        hash_file(&path, hasher);
    }
}

fn hash_file(path: &Path, hasher: &mut DefaultHasher) {
    // metadata() follows symlinks, so a swapped ConfigMap target shows.
    if let Ok(meta) = std::fs::metadata(path) {
        path.hash(hasher);
        meta.len().hash(hasher);
        if let Ok(modified) = meta.modified() {
            modified.hash(hasher);
        }
    }
}
