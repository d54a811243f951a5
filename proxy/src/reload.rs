//! Reload: on SIGHUP, and when a file under the catalog or policy folder
//! changes, load and validate a new snapshot and swap it in. A set that fails
//! is refused with its error and the running set stays.
//!
//! Changes are found by polling (mtime, size, name) rather than inotify:
//! Kubernetes updates mounted ConfigMaps by swapping a symlink, which inotify
//! watchers routinely miss, while a poll of a few files every few seconds
//! costs nothing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ReloadConfig;
use crate::snapshot::SnapshotHandle;

pub struct Reloader {
    pub snapshot: Arc<SnapshotHandle>,
    pub catalog_dir: PathBuf,
    pub policy_dir: PathBuf,
}

impl Reloader {
    /// One reload attempt, logged either way.
    pub fn reload(&self, trigger: &str) -> bool {
        match self.snapshot.reload(&self.catalog_dir, &self.policy_dir) {
            Ok(epoch) => {
                let snapshot = self.snapshot.load();
                tracing::info!(
                    trigger,
                    epoch,
                    routes = snapshot.catalog.route_count(),
                    policies = snapshot.engine.policy_count(),
                    "catalog and policies reloaded"
                );
                metrics::counter!("tollgate_reloads_total", "result" => "ok").increment(1);
                true
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "reload refused; the running policy set stays");
                metrics::counter!("tollgate_reloads_total", "result" => "refused").increment(1);
                false
            }
        }
    }

    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        for dir in [&self.catalog_dir, &self.policy_dir] {
            hash_dir(dir, &mut hasher);
        }
        hasher.finish()
    }

    pub async fn run(self, config: ReloadConfig) {
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
        // metadata() follows symlinks, so a swapped ConfigMap target shows.
        if let Ok(meta) = std::fs::metadata(&path) {
            path.hash(hasher);
            meta.len().hash(hasher);
            if let Ok(modified) = meta.modified() {
                modified.hash(hasher);
            }
        }
    }
}
