//! The catalog names requests: host → tool, method + path template → action,
//! path parameters → resource, plus risk class and data sensitivity.
//!
//! INTERFACE (owned by the catalog helper; signatures are relied on by the
//! pipeline, the decision engine and the CLI).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Method};

/// Risk classes, ordered from least to most dangerous. The names are the
/// Cedar action groups (`Action::"prod_change"`) and appear in audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    Read,
    Write,
    CodeExec,
    SecretsRead,
    DataExport,
    ProdChange,
    Unknown,
}

impl RiskClass {
    pub const ALL: [RiskClass; 7] = [
        RiskClass::Read,
        RiskClass::Write,
        RiskClass::CodeExec,
        RiskClass::SecretsRead,
        RiskClass::DataExport,
        RiskClass::ProdChange,
        RiskClass::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskClass::Read => "read",
            RiskClass::Write => "write",
            RiskClass::CodeExec => "code_exec",
            RiskClass::SecretsRead => "secrets_read",
            RiskClass::DataExport => "data_export",
            RiskClass::ProdChange => "prod_change",
            RiskClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RiskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the catalog says a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// `github`
    pub tool: Arc<str>,
    /// `github:pulls.create`
    pub action: Arc<str>,
    /// `github/repos/acme/api`
    pub resource: String,
    pub risk: RiskClass,
    /// `public`, `internal`, `confidential`, `restricted`, …
    pub sensitivity: Arc<str>,
}

/// One action the catalog can produce; the decision engine builds its Cedar
/// schema (actions and their groups) from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInfo {
    pub name: Arc<str>,
    pub tool: Arc<str>,
    pub risk: RiskClass,
}

/// A catalog file or entry that is wrong, with where.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `location` is `file:line:column` when known, else the file.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// The compiled, immutable catalog.
#[derive(Debug, Default)]
pub struct Catalog {}

impl Catalog {
    /// Load every `*.yaml` / `*.yml` file in `dir` (not recursive), sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let _ = dir;
        todo!()
    }

    /// Compile from in-memory sources: `(file name for errors, YAML text)`.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Catalog, CatalogError> {
        let _ = sources;
        todo!()
    }

    /// Whether any tool claims this host (lower-case, no port, no trailing dot).
    pub fn covers(&self, host: &str) -> bool {
        let _ = host;
        todo!()
    }

    /// Name a request. `None` when no tool claims the host. A claimed host
    /// with no matching route gives `<tool>:unknown` with risk `unknown`.
    /// `path` is the path only (no query); `query` the raw query string.
    pub fn classify(
        &self,
        host: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Classification> {
        let _ = (host, method, path, query, headers);
        todo!()
    }

    /// Every action the catalog can produce, including each tool's
    /// `<tool>:unknown`. Stable order.
    pub fn actions(&self) -> &[ActionInfo] {
        todo!()
    }

    /// Tool names, sorted.
    pub fn tools(&self) -> Vec<Arc<str>> {
        todo!()
    }

    /// Number of routes over all tools (for `validate` output and metrics).
    pub fn route_count(&self) -> usize {
        todo!()
    }
}
