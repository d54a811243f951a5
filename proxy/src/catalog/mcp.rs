//! An MCP server an endpoint declares (`mcp:`): its path, and the actions
//! its messages are named by. A `tools/call` of a listed tool is
//! `<tool>:<mcp tool name>`, with the risk class, sensitivity and resource
//! the catalog gives it; the protocol's own messages, `resources/read` and
//! `prompts/get` have fixed actions of their own; a tool the list leaves
//! out is `<tool>:unknown` (or `<tool>:mcp.unlisted` when `unlisted:` gives
//! such tools a risk class).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::arguments::{ArgumentError, Arguments, Given};
use super::template::ResourceTemplate;
use super::{Classification, RiskClass};

/// The actions every MCP server has, after `<tool>:`, with their classes.
pub(super) const PROTOCOL_ACTION: &str = "mcp.protocol";
pub(super) const RESOURCES_READ_ACTION: &str = "mcp.resources.read";
pub(super) const PROMPTS_GET_ACTION: &str = "mcp.prompts.get";
pub(super) const UNLISTED_ACTION: &str = "mcp.unlisted";

#[derive(Debug)]
pub(super) struct McpServer {
    /// Without a trailing `/`.
    pub path: Box<str>,
    pub tool: Arc<str>,
    pub tools: HashMap<Box<str>, McpTool>,
    pub unlisted: Named,
    /// `<tool>:unknown`, for a method no revision defines.
    pub unknown: Named,
    pub protocol: Named,
    pub resources_read: Named,
    pub prompts_get: Named,
    pub sensitivity: Arc<str>,
    pub pinning: McpPinning,
}

/// What becomes of a tool whose definition (name, description, input
/// schema) differs from the first one seen: `mcp.pinning`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum McpPinning {
    /// Definitions are not looked at.
    Off,
    /// A change is written to the audit trail and counted.
    #[default]
    Report,
    /// Also: its calls are refused (`mcp_tool_changed`) until an operator
    /// accepts the new definition.
    Enforce,
}

#[derive(Debug)]
pub(super) struct McpTool {
    pub action: Arc<str>,
    pub risk: RiskClass,
    pub sensitivity: Arc<str>,
    pub resource: ResourceTemplate,
    pub arguments: Option<Arguments>,
}

#[derive(Debug)]
pub(super) struct Named {
    pub action: Arc<str>,
    pub risk: RiskClass,
}

/// Whether `name` may be an MCP tool's name: what the MCP specification
/// recommends (1 to 128 of `A-Z a-z 0-9 _ - .`), which also keeps
/// `<tool>:<name>` a valid action name.
pub(super) fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(format!(
            "MCP tool name `{name}`: use 1 to 128 of `[A-Za-z0-9_.-]`"
        ));
    }
    if name == "unknown" || name.starts_with("mcp.") {
        return Err(format!(
            "MCP tool name `{name}`: `unknown` and `mcp.…` name tollgate's own actions"
        ));
    }
    Ok(())
}

/// What a server's message is named, for the catalog's public
/// [`super::Catalog::mcp_server`].
#[derive(Debug, Clone, Copy)]
pub struct McpServerRef<'c> {
    pub(super) server: &'c McpServer,
}

impl<'c> McpServerRef<'c> {
    /// The catalog tool this server belongs to.
    pub fn tool(&self) -> &'c str {
        &self.server.tool
    }

    pub fn pinning(&self) -> McpPinning {
        self.server.pinning
    }

    /// Which arguments naming a call of tool `name` reads: those declared,
    /// and those that fill the resource. The others are never parsed.
    pub fn reads(&self, name: &str) -> impl Fn(&str) -> bool + 'c {
        let tool = self.server.tools.get(name);
        move |argument| {
            tool.is_some_and(|tool| {
                tool.resource.params().any(|p| p == argument)
                    || tool
                        .arguments
                        .as_ref()
                        .is_some_and(|declared| declared.iter().any(|a| &*a.name == argument))
            })
        }
    }

    /// `tools/call` of `name` with its `arguments`: named, with the
    /// declared arguments as [`Arguments::project`] writes them for the
    /// decision; `Err` when those do not match their declaration.
    pub fn tool_call(
        &self,
        name: &str,
        arguments: &dyn Given,
    ) -> Result<(Classification, Option<String>), ArgumentError> {
        let s = self.server;
        let Some(tool) = s.tools.get(name) else {
            return Ok((self.named(&s.unlisted), None));
        };
        let declared = tool
            .arguments
            .as_ref()
            .map(|declared| declared.project(arguments))
            .transpose()?;
        // One argument is one resource segment: a `/` in a value cannot
        // forge more (nor `%2F`, kept as sent).
        let values: Vec<(&str, String)> = tool
            .resource
            .params()
            .filter_map(|p| {
                let text = match arguments.argument(p)? {
                    Value::String(s) => segment(s),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((p, text))
            })
            .collect();
        let resource = if values.len() == tool.resource.params().count() {
            tool.resource.expand(|p| {
                values
                    .iter()
                    .find(|(name, _)| *name == p)
                    .map(|(_, text)| text.as_str())
            })
        } else {
            // An argument the template needs is missing: the tool as a
            // whole, which a narrower permit does not match.
            s.tool.to_string()
        };
        let named = Classification {
            tool: s.tool.clone(),
            action: tool.action.clone(),
            resource,
            risk: tool.risk,
            sensitivity: tool.sensitivity.clone(),
        };
        Ok((named, declared))
    }

    /// Every tool the catalog lists: its MCP name and what a call of it is
    /// named, before its arguments fill the resource.
    pub fn listed(&self) -> impl Iterator<Item = (&'c str, Classification)> + 'c {
        let s = self.server;
        s.tools.iter().map(move |(name, tool)| {
            let c = Classification {
                tool: s.tool.clone(),
                action: tool.action.clone(),
                resource: s.tool.to_string(),
                risk: tool.risk,
                sensitivity: tool.sensitivity.clone(),
            };
            (&**name, c)
        })
    }

    /// What a call of a tool the catalog does not list is named.
    pub fn unlisted(&self) -> Classification {
        self.named(&self.server.unlisted)
    }

    pub fn resources_read(&self) -> Classification {
        self.named(&self.server.resources_read)
    }

    pub fn prompts_get(&self) -> Classification {
        self.named(&self.server.prompts_get)
    }

    /// The handshake, `ping`, listings, notifications, responses.
    pub fn protocol(&self) -> Classification {
        self.named(&self.server.protocol)
    }

    /// A method no revision this reader knows defines.
    pub fn unknown_method(&self) -> Classification {
        self.named(&self.server.unknown)
    }

    fn named(&self, named: &Named) -> Classification {
        Classification {
            tool: self.server.tool.clone(),
            action: named.action.clone(),
            resource: self.server.tool.to_string(),
            risk: named.risk,
            sensitivity: self.server.sensitivity.clone(),
        }
    }
}

/// A string argument as one resource segment: `%` and `/` escaped, the
/// text unchanged (and not copied twice) when it has neither.
fn segment(value: &str) -> String {
    if value.contains(['%', '/']) {
        value.replace('%', "%25").replace('/', "%2F")
    } else {
        value.to_string()
    }
}
