//! Named credentials the decision plane injects into allowed requests. The
//! agent never holds them; a policy names one with `@credential("…")`, and
//! the credential's binding (`services:`) says which catalog tools it may
//! ever be sent to, whatever the policy says.
//!
//! Values live in [`Secret`]: never printed (Debug and Display show
//! `[redacted]`), zeroized when dropped. File and folder sources are
//! re-checked on every use (one `stat` per file) and re-read when they
//! changed, so rotating a mounted Kubernetes Secret needs no restart and the
//! very next request carries the new value.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::HeaderName;
use zeroize::Zeroizing;

use crate::config::{
    CredentialConfig as Credential, CredentialInjection as Injection, CredentialSource as Source,
};

/// A secret value. Deliberately not `Clone`-able into a plain `String`.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for building the one header (or query parameter) that
    /// carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a credential cannot be injected. Messages name the credential and its
/// source, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("no credential named `{0}` is configured")]
    Unknown(String),
    /// The policy named a credential for a tool outside its binding.
    #[error("credential `{name}` is not bound to {}", tool.as_deref().map_or("traffic outside the catalog".to_string(), |t| format!("tool `{t}`")))]
    NotBound { name: String, tool: Option<String> },
    #[error("credential `{name}` cannot be read from {source_name}")]
    Unreadable { name: String, source_name: String },
    #[error("credential `{name}` from {source_name} is {problem}")]
    Unusable {
        name: String,
        source_name: String,
        problem: &'static str,
    },
}

/// Where an injected credential goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Set this header (replacing any the agent sent).
    Header(HeaderName),
    /// Set this query parameter (replacing any the agent sent). The value is
    /// not percent-encoded.
    Query(String),
}

/// A credential a decision named, checked against its binding for the
/// request's tool. Its value is read when it is sent ([`Bound::value`]), so
/// naming it (an offline `check`, a plan) reads no secret.
#[derive(Clone, Copy)]
pub struct Bound<'a> {
    entry: &'a Entry,
}

impl fmt::Debug for Bound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("name", &self.entry.name)
            .field("placement", &self.entry.placement)
            .finish()
    }
}

impl<'a> Bound<'a> {
    pub fn name(&self) -> &'a str {
        &self.entry.name
    }

    /// Where it goes.
    pub fn placement(&self) -> &'a Placement {
        &self.entry.placement
    }

    /// The full value to send (for headers, `Bearer …`, `Basic …` or the
    /// rendered template): cached, re-read when a source file changed.
    pub fn value(&self) -> Result<Arc<Secret>, CredentialError> {
        self.entry.value()
    }
}

/// How recently a file may have changed before its cached value is trusted
/// without re-reading: timestamps are coarse (a kernel tick or worse), so a
/// file rewritten within one tick of being read can keep its (mtime, size)
/// while its content changed. Values read that close to their file's mtime
/// are re-read until the file is older than this.
const RACY_WINDOW: Duration = Duration::from_secs(1);

/// What identifies one version of a file without reading it. `metadata()`
/// follows symlinks, so a Kubernetes `..data` swap shows as a new inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.modified().ok(),
        }
    }
}

struct Cached {
    stamps: Vec<Stamp>,
    /// When the files were read (taken before reading).
    read_at: SystemTime,
    value: Arc<Secret>,
}

impl Cached {
    fn trusted(&self, now: &[Stamp]) -> bool {
        self.stamps == now
            && self
                .stamps
                .iter()
                .all(|s| s.mtime.is_some_and(|m| m + RACY_WINDOW < self.read_at))
    }
}

struct Entry {
    name: String,
    source: Source,
    injection: Injection,
    placement: Placement,
    services: Box<[String]>,
    /// The files the value is read from (none for `env`).
    files: Box<[PathBuf]>,
    cache: ArcSwapOption<Cached>,
}

/// The configured credentials. Cheap to clone: clones share one cache.
#[derive(Clone, Default)]
pub struct CredentialStore {
    entries: Arc<HashMap<String, Entry>>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("CredentialStore")
            .field("names", &names)
            .finish()
    }
}

impl CredentialStore {
    pub fn new(credentials: impl IntoIterator<Item = (String, Credential)>) -> CredentialStore {
        let entries = credentials
            .into_iter()
            .map(|(name, c)| {
                let placement = match &c.injection {
                    Injection::Bearer | Injection::Basic => {
                        Placement::Header(http::header::AUTHORIZATION)
                    }
                    Injection::Header { name, .. } => Placement::Header(
                        // Validated at load; a bad name cannot reach here.
                        HeaderName::from_bytes(name.as_bytes())
                            .unwrap_or(http::header::AUTHORIZATION),
                    ),
                    Injection::Query { param } => Placement::Query(param.clone()),
                };
                let files: Vec<PathBuf> = match (&c.source, &c.injection) {
                    (Source::Env(_), _) => Vec::new(),
                    (Source::File(path), _) => vec![path.clone()],
                    (Source::Dir { path, .. }, Injection::Basic) => {
                        vec![path.join("username"), path.join("password")]
                    }
                    (Source::Dir { path, key }, _) => vec![path.join(key)],
                };
                let entry = Entry {
                    name: name.clone(),
                    source: c.source,
                    injection: c.injection,
                    placement,
                    services: c.services.into_iter().map(|s| s.tool).collect(),
                    files: files.into(),
                    cache: ArcSwapOption::empty(),
                };
                (name, entry)
            })
            .collect();
        CredentialStore {
            entries: Arc::new(entries),
        }
    }

    /// How many credentials are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The query parameters credentials bound to `tool` are injected into:
    /// whatever the agent sends in them is replaced, never forwarded.
    pub fn query_params(&self, tool: &str) -> Vec<&str> {
        self.entries
            .values()
            .filter(|e| e.services.iter().any(|s| s == tool))
            .filter_map(|e| match &e.placement {
                Placement::Query(param) => Some(param.as_str()),
                Placement::Header(_) => None,
            })
            .collect()
    }

    /// The credential `name`, for a request toward `tool`: refused unless
    /// `tool` is in the credential's binding. Reads no secret.
    pub fn bound(&self, name: &str, tool: Option<&str>) -> Result<Bound<'_>, CredentialError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
        if !tool.is_some_and(|t| entry.services.iter().any(|s| s == t)) {
            return Err(CredentialError::NotBound {
                name: name.to_string(),
                tool: tool.map(str::to_string),
            });
        }
        Ok(Bound { entry })
    }
}

impl Entry {
    /// The rendered value: cached, unless a source file changed.
    fn value(&self) -> Result<Arc<Secret>, CredentialError> {
        let mut stamps = Vec::with_capacity(self.files.len());
        for path in self.files.iter() {
            let meta = std::fs::metadata(path).map_err(|_| self.unreadable(path))?;
            stamps.push(Stamp::of(&meta));
        }
        let cached = self.cache.load();
        if let Some(cached) = cached.as_deref() {
            // The environment of a running process does not change.
            if self.files.is_empty() || cached.trusted(&stamps) {
                return Ok(cached.value.clone());
            }
        }
        let read_at = SystemTime::now();
        let value = Arc::new(self.render()?);
        self.cache.store(Some(Arc::new(Cached {
            stamps,
            read_at,
            value: value.clone(),
        })));
        Ok(value)
    }

    fn render(&self) -> Result<Secret, CredentialError> {
        let rendered = match &self.injection {
            Injection::Basic => {
                let pair = match &self.source {
                    Source::Dir { .. } => {
                        let user = self.read(0)?;
                        let password = self.read(1)?;
                        Zeroizing::new(format!("{}:{}", user.as_str(), password.as_str()))
                    }
                    // One value already in `username:password` form.
                    _ => self.read(0)?,
                };
                let mut encoded = Zeroizing::new(String::from("Basic "));
                base64::engine::general_purpose::STANDARD
                    .encode_string(pair.as_bytes(), &mut encoded);
                encoded
            }
            Injection::Bearer => Zeroizing::new(format!("Bearer {}", self.read(0)?.as_str())),
            Injection::Header { template, .. } => {
                Zeroizing::new(template.replace("{value}", self.read(0)?.as_str()))
            }
            Injection::Query { .. } => self.read(0)?,
        };
        if matches!(self.placement, Placement::Header(_))
            && http::HeaderValue::from_str(&rendered).is_err()
        {
            return Err(self.unusable("not valid in an HTTP header"));
        }
        Ok(Secret(rendered))
    }

    /// The `i`-th source value, trimmed (files usually end in a newline).
    fn read(&self, i: usize) -> Result<Zeroizing<String>, CredentialError> {
        let raw = match (&self.source, self.files.get(i)) {
            (Source::Env(var), _) => {
                Zeroizing::new(std::env::var(var).map_err(|_| CredentialError::Unreadable {
                    name: self.name.clone(),
                    source_name: format!("environment variable {var}"),
                })?)
            }
            (_, Some(path)) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|_| self.unreadable(path))?)
            }
            (_, None) => return Err(self.unusable("missing a source file")),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(self.unusable("empty"));
        }
        Ok(if trimmed.len() == raw.len() {
            raw
        } else {
            Zeroizing::new(trimmed.to_string())
        })
    }

    fn unreadable(&self, path: &std::path::Path) -> CredentialError {
        CredentialError::Unreadable {
            name: self.name.clone(),
            source_name: format!("file {}", path.display()),
        }
    }

    fn unusable(&self, problem: &'static str) -> CredentialError {
        let source_name = match &self.source {
            Source::Env(var) => format!("environment variable {var}"),
            Source::File(path) => format!("file {}", path.display()),
            Source::Dir { path, .. } => format!("folder {}", path.display()),
        };
        CredentialError::Unusable {
            name: self.name.clone(),
            source_name,
            problem,
        }
    }
}

#[cfg(test)]
mod tests;
