//! The catalog file as written: raw serde types, no validation beyond shape.
//! `compile.rs` turns these into the matcher; every check that needs more
//! than one field lives there.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{CatalogError, RiskClass};

/// One tool, one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ToolFile {
    pub tool: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub credential_headers: Vec<Spanned<String>>,
    #[serde(default)]
    pub credential_query: Vec<Spanned<String>>,
    #[serde(default)]
    pub agent_query_credentials: QueryCredentialRule,
    #[serde(default)]
    pub error_format: ErrorFormat,
    pub endpoints: Vec<Spanned<EndpointFile>>,
}

/// What happens to a request that carries an agent's own credential in
/// one of the tool's `credential_query` parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryCredentialRule {
    /// Refused before anything is decided: it would leave with the
    /// agent's credential, and stripped it would fail at the upstream
    /// without saying why.
    #[default]
    Refuse,
    /// Forwarded as sent: the agent's presigned URLs, where a security
    /// team allows them.
    Forward,
}

/// How tollgate writes its own refusals of a tool's requests: as its JSON
/// body, or in the API's own error format, which the API's SDKs parse into
/// the error they raise (so the agent reads tollgate's reason there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorFormat {
    #[default]
    Json,
    /// Amazon S3's `<Error><Code>…</Code><Message>…</Message></Error>`.
    S3Xml,
}

/// A set of hosts that share one route table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointFile {
    pub hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub defaults: Defaults,
    /// An MCP server on these hosts, at one path.
    pub mcp: Option<Spanned<McpFile>>,
    pub routes: Vec<Spanned<RouteFile>>,
}

/// `mcp:` of an endpoint: where its streamable HTTP endpoint is, and what
/// its tools are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct McpFile {
    pub path: String,
    #[serde(default)]
    pub tools: Vec<Spanned<McpToolFile>>,
    /// The risk class of a tool the list leaves out (`unknown` unless set).
    pub unlisted: Option<RiskClass>,
    #[serde(default)]
    pub pinning: super::McpPinning,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct McpToolFile {
    pub name: String,
    pub risk: RiskClass,
    pub sensitivity: Option<String>,
    /// A resource template filled from the call's arguments:
    /// `repos/{owner}/{repo}`.
    pub resource: Option<String>,
    /// The arguments policies may name (`context.arguments.<name>`), with
    /// their types: `repo: string`, `limit: long?`.
    pub arguments: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Defaults {
    pub sensitivity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    pub method: Methods,
    pub path: String,
    pub action: String,
    pub risk: RiskClass,
    pub resource: Option<String>,
    pub sensitivity: Option<String>,
    #[serde(default)]
    pub when: When,
}

/// Extra conditions that pick one of several routes sharing method + path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct When {
    /// `key` (present) or `key=value` (present with exactly that raw value).
    #[serde(default)]
    pub query: Vec<String>,
    /// Header names that must be present.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `method: GET` or `method: [GET, POST]`. A hand-written visitor rather
/// than `#[serde(untagged)]`, which would replace the parser's located error
/// with "did not match any variant".
#[derive(Debug)]
pub(super) struct Methods(pub Vec<String>);

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MethodsVisitor;

        impl<'de> Visitor<'de> for MethodsVisitor {
            type Value = Methods;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP method or a list of HTTP methods")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Methods, E> {
                Ok(Methods(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Methods, A::Error> {
                let mut methods = Vec::new();
                while let Some(m) = seq.next_element::<String>()? {
                    methods.push(m);
                }
                if methods.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Methods(methods))
            }
        }

        deserializer.deserialize_any(MethodsVisitor)
    }
}

/// Parse one file. Errors carry `file:line:column` when the parser knows it.
pub(super) fn parse(file: &str, text: &str) -> Result<ToolFile, CatalogError> {
    // Snippets are for terminals; our callers print one line per error.
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let err = err.without_snippet();
        let rendered = err.to_string();
        match err.location().filter(|l| *l != Location::UNKNOWN) {
            Some(loc) => {
                // The message repeats the location as a suffix; ours leads.
                let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
                let message = rendered.strip_suffix(&suffix).unwrap_or(&rendered);
                // A hint for programmers using the library, not for the
                // person editing the file.
                let message = message
                    .split(", set DuplicateKeyPolicy")
                    .next()
                    .unwrap_or(message);
                invalid(at(file, &loc), message)
            }
            None => invalid(file.to_owned(), rendered),
        }
    })
}

/// `file:line:column`, or just `file` when the location is unknown.
pub(super) fn at(file: &str, loc: &Location) -> String {
    if *loc == Location::UNKNOWN {
        file.to_owned()
    } else {
        format!("{file}:{}:{}", loc.line(), loc.column())
    }
}

pub(super) fn invalid(location: String, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        location,
        message: message.into(),
    }
}
