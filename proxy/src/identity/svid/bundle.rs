//! The trust bundle: the CA certificates client SVIDs must chain to, read
//! from a PEM file and reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ring::digest::{digest, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor};

/// Why a trust bundle was not loaded. The problems are fixed texts: a PEM
/// parser's message can quote the file's lines, and those stay out of logs.
#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("cannot read the trust bundle {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trust bundle {}: {problem}", origin(.path))]
    Invalid {
        /// `None` for a bundle given as PEM text.
        path: Option<PathBuf>,
        problem: &'static str,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "(PEM text)".to_string(),
    }
}

impl TrustBundleError {
    fn at(self, path: &Path) -> TrustBundleError {
        match self {
            TrustBundleError::Invalid { problem, .. } => TrustBundleError::Invalid {
                path: Some(path.to_path_buf()),
                problem,
            },
            read => read,
        }
    }
}

/// PEM CA certificates (a SPIFFE trust bundle as a file), parsed once.
pub struct TrustBundle {
    anchors: Vec<TrustAnchor<'static>>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("len", &self.len())
            .finish()
    }
}

impl TrustBundle {
    pub fn load(path: &Path) -> Result<TrustBundle, TrustBundleError> {
        let pem = read(path)?;
        TrustBundle::from_pem(&pem).map_err(|e| e.at(path))
    }

    /// Every `CERTIFICATE` block becomes a trust anchor; other blocks are
    /// skipped. A bundle with no certificate is an error rather than a
    /// listener that trusts nobody without saying so.
    pub fn from_pem(pem: &[u8]) -> Result<TrustBundle, TrustBundleError> {
        let invalid = |problem| TrustBundleError::Invalid {
            path: None,
            problem,
        };
        let mut anchors = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|_| invalid("a PEM block does not decode"))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|_| invalid("a certificate does not parse"))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(invalid("holds no PEM certificate"));
        }
        Ok(TrustBundle { anchors })
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Never true for a loaded bundle; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    pub(super) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TrustBundleError> {
    std::fs::read(path).map_err(|source| TrustBundleError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What the last look at the file found.
#[derive(PartialEq)]
enum Seen {
    /// The content's SHA-256, whether it loaded or not: a bad file is
    /// reported once, not at every poll.
    Content([u8; 32]),
    Unreadable,
}

fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Shared, swappable bundle, reloaded when its file changes.
pub struct TrustBundleHandle {
    path: PathBuf,
    current: ArcSwap<TrustBundle>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for TrustBundleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundleHandle")
            .field("path", &self.path)
            .field("len", &self.current().len())
            .finish()
    }
}

impl TrustBundleHandle {
    /// The first load must succeed: a listener never starts without a
    /// bundle.
    pub fn load(path: &Path) -> Result<TrustBundleHandle, TrustBundleError> {
        let pem = read(path)?;
        let bundle = TrustBundle::from_pem(&pem).map_err(|e| e.at(path))?;
        Ok(TrustBundleHandle {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(bundle),
            seen: Mutex::new(Seen::Content(fingerprint(&pem))),
        })
    }

    pub fn current(&self) -> Arc<TrustBundle> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One poll: when the file's content differs from what was last seen,
    /// load it and swap it in. Returns whether a new bundle is in use.
    /// The content is compared, not mtime and size: a CA rotated within one
    /// mtime tick has the same size (same key type, same names), and
    /// Kubernetes swaps mounted files through a symlink. A bundle is a few
    /// kilobytes, so reading it every poll costs nothing.
    pub fn reload_if_changed(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let pem = match read(&self.path) {
            Ok(pem) => pem,
            Err(e) => {
                if *seen != Seen::Unreadable {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "trust bundle unreadable; the last good bundle stays");
                    *seen = Seen::Unreadable;
                }
                return false;
            }
        };
        let now = Seen::Content(fingerprint(&pem));
        if *seen == now {
            return false;
        }
        *seen = now;
        self.install(&pem)
    }

    fn install(&self, pem: &[u8]) -> bool {
        match TrustBundle::from_pem(pem) {
            Ok(bundle) => {
                tracing::info!(path = %self.path.display(), certificates = bundle.len(),
                    "trust bundle reloaded");
                self.current.store(Arc::new(bundle));
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e.at(&self.path),
                    "trust bundle refused; the last good bundle stays");
                false
            }
        }
    }

    /// Polls the file every `interval` forever; the caller spawns it.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and would only re-read what `load` read.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.reload_if_changed();
        }
    }
}
