//! The catalog names requests: host → tool, method + path template → action,
//! path parameters → resource, plus risk class and data sensitivity.
//!
//! Catalog files (YAML, one tool per file; format in `docs/catalog.md`) are
//! parsed (`file`), checked and compiled (`compile`) into one host matcher
//! for all tools (`host`) and one route table per endpoint (`router`).
//! Lookups never scan the catalog: cost depends on the request, not on how
//! many tools are loaded.

mod arguments;
mod compile;
mod file;
mod host;
mod mcp;
mod router;
mod template;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

pub use arguments::{Argument, ArgumentError, ArgumentType, ArgumentValue, Arguments, Given};
pub use file::{ErrorFormat, QueryCredentialRule};
pub use mcp::{McpPinning, McpServerRef};

/// Risk classes, ordered from least to most dangerous. The names are the
/// Cedar action groups (`Action::"prod_change"`) and appear in audit lines.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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

    /// The class spelled `name` (its Cedar group name).
    pub fn from_name(name: &str) -> Option<RiskClass> {
        RiskClass::ALL.into_iter().find(|r| r.as_str() == name)
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
    /// An MCP tool's declared arguments: `context.arguments` in policies.
    pub arguments: Option<Arguments>,
}

/// A catalog file or entry that is wrong, with where.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `location` is `file:line:column` when known, else the file.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
}

/// The compiled, immutable catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Sorted by name.
    tools: Vec<Tool>,
    endpoints: Vec<Endpoint>,
    hosts: host::HostMatcher,
    /// Sorted by name.
    actions: Vec<ActionInfo>,
    route_count: usize,
    /// The paths MCP servers are declared at (few, usually one): a request
    /// to any other path pays no second host lookup, which the shipped
    /// catalog's MCP server would otherwise cost every request.
    mcp_paths: Vec<Box<str>>,
}

#[derive(Debug)]
struct Tool {
    name: Arc<str>,
    description: String,
    credential_headers: Vec<HeaderName>,
    credential_query: Vec<String>,
    agent_query_credentials: QueryCredentialRule,
    error_format: ErrorFormat,
    /// `<tool>:unknown`, allocated once.
    unknown: Arc<str>,
}

#[derive(Debug)]
struct Endpoint {
    /// Index into `Catalog::tools`.
    tool: usize,
    tool_name: Arc<str>,
    default_sensitivity: Arc<str>,
    router: router::EndpointRouter,
    mcp: Option<mcp::McpServer>,
}

impl Catalog {
    /// Load every `*.yaml` / `*.yml` file in `dir` (not recursive), sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let io = |path: &Path, source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if is_yaml && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            sources.push((path.display().to_string(), text));
        }
        Catalog::from_sources(&sources)
    }

    /// Compile from in-memory sources: `(file name for errors, YAML text)`.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Catalog, CatalogError> {
        let files = sources
            .iter()
            .map(|(name, text)| Ok((name.clone(), file::parse(name, text)?)))
            .collect::<Result<Vec<_>, CatalogError>>()?;
        compile::compile(files)
    }

    /// Whether any tool claims this host (lower-case, no port, no trailing dot).
    pub fn covers(&self, host: &str) -> bool {
        self.hosts.find(&normalize_host(host)).is_some()
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
        let host = normalize_host(host);
        let found = self.hosts.find(&host)?;
        let endpoint = &self.endpoints[found.endpoint];
        let tool = &self.tools[endpoint.tool];
        let matched = router::normalize_path(path)
            .and_then(|path| endpoint.router.find(method, path, query, headers));
        let Some((route, params)) = matched else {
            return Some(Classification {
                tool: tool.name.clone(),
                action: tool.unknown.clone(),
                resource: tool.name.to_string(),
                risk: RiskClass::Unknown,
                sensitivity: endpoint.default_sensitivity.clone(),
            });
        };
        let resource = route.resource.expand(|name| {
            params.get(name).or_else(|| {
                found
                    .captures
                    .iter()
                    .find(|(n, _)| &**n == name)
                    .map(|(_, v)| *v)
            })
        });
        Some(Classification {
            tool: tool.name.clone(),
            action: route.action.clone(),
            resource,
            risk: route.risk,
            sensitivity: route.sensitivity.clone(),
        })
    }

    /// Every action the catalog can produce, including each tool's
    /// `<tool>:unknown`. Stable order.
    pub fn actions(&self) -> &[ActionInfo] {
        &self.actions
    }

    /// Tool names, sorted.
    pub fn tools(&self) -> Vec<Arc<str>> {
        self.tools.iter().map(|t| t.name.clone()).collect()
    }

    /// Number of routes over all tools (for `validate` output and metrics).
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// The MCP server at `host` and `path`, when an endpoint declares one
    /// there: its messages are named by what the request body says.
    pub fn mcp_server(&self, host: &str, path: &str) -> Option<McpServerRef<'_>> {
        let path = match path {
            p if p.len() > 1 => p.strip_suffix('/').unwrap_or(p),
            p => p,
        };
        if !self.mcp_paths.iter().any(|p| **p == *path) {
            return None;
        }
        let host = normalize_host(host);
        let found = self.hosts.find(&host)?;
        let server = self.endpoints[found.endpoint].mcp.as_ref()?;
        (path == &*server.path).then_some(McpServerRef { server })
    }

    /// How the MCP servers of catalog tool `tool` are pinned (the
    /// strictest, should it declare several); `Off` for a tool without one.
    pub fn mcp_pinning(&self, tool: &str) -> McpPinning {
        self.endpoints
            .iter()
            .filter_map(|e| e.mcp.as_ref())
            .filter(|m| &*m.tool == tool)
            .map(|m| m.pinning)
            .max()
            .unwrap_or(McpPinning::Off)
    }

    /// Headers besides `Authorization` / `Proxy-Authorization` that carry
    /// credentials for `tool` (e.g. `x-api-key`), to strip before injecting.
    /// `None` for an unknown tool.
    pub fn credential_headers(&self, tool: &str) -> Option<&[HeaderName]> {
        self.tool(tool).map(|t| t.credential_headers.as_slice())
    }

    /// Query parameters that carry credentials for `tool` (e.g. S3's
    /// `X-Amz-Signature`), besides the ones every tool has, and what
    /// becomes of a request whose agent sends its own in them. `None` for
    /// an unknown tool.
    pub fn credential_query(&self, tool: &str) -> Option<(&[String], QueryCredentialRule)> {
        self.tool(tool)
            .map(|t| (t.credential_query.as_slice(), t.agent_query_credentials))
    }

    /// How refusals of `tool`'s requests are written: JSON unless its
    /// catalog file says otherwise (and for hosts it does not cover).
    pub fn error_format(&self, tool: &str) -> ErrorFormat {
        self.tool(tool)
            .map_or(ErrorFormat::Json, |t| t.error_format)
    }

    /// The tool's `description`, for listings. `None` for an unknown tool.
    pub fn description(&self, tool: &str) -> Option<&str> {
        self.tool(tool).map(|t| t.description.as_str())
    }

    fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools
            .binary_search_by(|t| (*t.name).cmp(name))
            .ok()
            .map(|i| &self.tools[i])
    }
}

/// Callers promise lower case without a trailing dot; tolerate both anyway,
/// allocating only when the host is not already in that form.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
