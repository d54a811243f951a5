//! The catalog, the policies and the credentials, loaded and validated
//! together, swapped as one unit. A request reads one snapshot from start to
//! end, so a reload can never pair an old catalog with new policies, nor a
//! policy with a credential binding from another set.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError, Enforcement};

use super::cache::DecisionCache;
use super::credentials::CredentialStore;
use super::engine::PolicyEngine;
use super::policies::PolicyError;

pub struct Snapshot {
    pub catalog: Catalog,
    pub engine: PolicyEngine,
    /// The secrets policies name with `@credential`, bound to this
    /// catalog's tools.
    pub credentials: CredentialStore,
    /// Which tools' policy denials are only reported: swapped with the
    /// policies, so a reload that changes a mode also starts a new
    /// decision cache and a new epoch.
    pub enforcement: Enforcement,
    /// Decisions made with exactly this catalog and these policies.
    pub decisions: DecisionCache,
    /// Grows by one on every successful reload; decision caches key on it.
    pub epoch: u64,
    pub loaded_at: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl Snapshot {
    /// The catalog and policies from the folders `config` names, and its
    /// credentials, each bound only to tools of that catalog. `cache_size`
    /// 0: decide every request afresh (offline verbs).
    pub fn load(config: &Config, epoch: u64, cache_size: usize) -> Result<Snapshot, SnapshotError> {
        let mut snapshot = Snapshot::without_credentials(
            &config.catalog_dir,
            &config.policy_dir,
            &config.identity.claims,
            epoch,
            cache_size,
        )?;
        config.check_credential_bindings(|tool| {
            snapshot.catalog.credential_headers(tool).is_some()
        })?;
        config.check_limit_tools(|tool| snapshot.catalog.credential_headers(tool).is_some())?;
        snapshot.credentials = CredentialStore::new(config.credentials.clone());
        let is_tool = |tool: &str| snapshot.catalog.credential_headers(tool).is_some();
        config.enforcement.check_tools(is_tool)?;
        snapshot.enforcement = config.enforcement.clone();
        Ok(snapshot)
    }

    /// Catalog and policies only: a decision naming a credential finds none
    /// (benches that decide without injecting), and every denial is
    /// enforced.
    pub fn without_credentials(
        catalog_dir: &Path,
        policy_dir: &Path,
        claims: &[String],
        epoch: u64,
        cache_size: usize,
    ) -> Result<Snapshot, SnapshotError> {
        let catalog = Catalog::load_dir(catalog_dir)?;
        let engine = PolicyEngine::load_dir(catalog.actions(), claims, policy_dir)?;
        Ok(Snapshot {
            catalog,
            engine,
            credentials: CredentialStore::default(),
            enforcement: Enforcement::default(),
            decisions: DecisionCache::new(cache_size),
            epoch,
            loaded_at: SystemTime::now(),
        })
    }
}

impl Snapshot {
    /// Say, at start and on every reload, which tools' denials are only
    /// reported: enforcement partly off must never go unnoticed. A proxy
    /// deciding `remotely` follows the decision service's modes, whatever
    /// its own file says.
    pub fn log_enforcement(&self, remotely: bool) {
        let reported = self.enforcement.reported();
        if reported.is_empty() {
            return;
        }
        if remotely {
            tracing::warn!(
                "`enforcement:` is not used by a proxy that decides remotely: \
                 the decision service's own configuration says what is reported"
            );
        } else {
            tracing::warn!(
                tools = reported.join(", "),
                "report mode: policy denials for these tools are audited as would_deny \
                 and forwarded, not refused"
            );
        }
    }
}

/// The live snapshot. Readers never block; a reload is one pointer swap.
pub struct SnapshotHandle {
    current: ArcSwap<Snapshot>,
    next_epoch: AtomicU64,
    cache_size: usize,
    /// The current epoch, for subscribers (the revocation stream).
    epochs: tokio::sync::watch::Sender<u64>,
}

impl SnapshotHandle {
    pub fn new(mut initial: Snapshot, cache_size: usize) -> Arc<SnapshotHandle> {
        let next = initial.epoch + 1;
        initial.decisions = DecisionCache::new(cache_size);
        let (epochs, _) = tokio::sync::watch::channel(initial.epoch);
        Arc::new(SnapshotHandle {
            current: ArcSwap::from_pointee(initial),
            next_epoch: AtomicU64::new(next),
            cache_size,
            epochs,
        })
    }

    /// Follow the policy epoch: the current value first, then every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Load what `config` names and swap it in, or keep the running
    /// snapshot and return why the new one was refused.
    pub fn reload(&self, config: &Config) -> Result<u64, SnapshotError> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::load(config, epoch, self.cache_size)?;
        self.current.store(Arc::new(snapshot));
        self.epochs.send_replace(epoch);
        Ok(epoch)
    }
}
