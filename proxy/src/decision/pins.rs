//! MCP tool pins, as the decision plane speaks of them: a tool's
//! definition as listed, a pin, a change. Kept by the state store
//! ([`super::state::pins`]).

/// One tool as a server's `tools/list` answer defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTool {
    pub name: String,
    /// Hex SHA-256 of the definition's canonical JSON.
    pub fingerprint: String,
}

/// A tool whose definition differs from its pin, first seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolChange {
    pub name: String,
    pub pinned: String,
    pub seen: String,
}

/// What is kept of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPin {
    /// The catalog tool the MCP server belongs to.
    pub server: String,
    pub name: String,
    /// The fingerprint calls are allowed under.
    pub pinned: String,
    /// The latest one seen.
    pub seen: String,
    pub pinned_ms: i64,
    /// When `seen` started to differ from `pinned`; 0 while it does not.
    pub changed_ms: i64,
}

impl ToolPin {
    pub fn changed(&self) -> bool {
        self.pinned != self.seen
    }

    /// `pinned seen pinned_ms changed_ms`: fingerprints are hex, so spaces
    /// separate. (The Redis scripts write it themselves.)
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.pinned, self.seen, self.pinned_ms, self.changed_ms
        )
    }

    pub(crate) fn decode(server: &str, name: &str, text: &str) -> Option<ToolPin> {
        let mut parts = text.split(' ');
        let pin = ToolPin {
            server: server.to_string(),
            name: name.to_string(),
            pinned: parts.next()?.to_string(),
            seen: parts.next()?.to_string(),
            pinned_ms: parts.next()?.parse().ok()?,
            changed_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(pin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("no definition of MCP tool `{1}` of `{0}` has been seen")]
    NotFound(String, String),
    #[error("MCP tool `{name}` is served as {seen} now, not {expected}: list it again")]
    Conflict {
        name: String,
        seen: String,
        expected: String,
    },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Told of each pin event where the pins are kept (the audit output, in a
/// running process): `mcp_tool_changed`, a definition differs from its pin;
/// `mcp_tool_accepted`, an operator pinned what is served now.
pub trait PinEvents: Send + Sync {
    fn pin_event(
        &self,
        event: &'static str,
        server: &str,
        change: &ToolChange,
        pinning: crate::catalog::McpPinning,
    );
}
