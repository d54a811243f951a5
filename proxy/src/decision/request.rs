//! What a decision is asked: the principal, the action, the resource, the
//! request's attributes and the task token presented. Two equal requests get
//! equal decisions (for one policy snapshot), which is what makes a decision
//! cache sound.

use std::fmt;
use std::sync::Arc;

use crate::catalog::RiskClass;
use crate::identity::Attributes;

use super::tasks::{hex, sha256, TokenHash};

/// The built-in action for traffic the catalog does not cover: decided on
/// host:port alone and tunnelled blind if allowed.
pub const CONNECT_ACTION: &str = "connect";

/// Everything a decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionRequest {
    /// Workload identity, e.g. `spiffe://cluster.local/ns/agents/sa/coder`.
    pub principal: String,
    /// What the principal's identity says of it (Cedar attributes of the
    /// `Workload` entity): trust domain, namespace, service account, pod,
    /// selected claims, and how it was identified.
    pub attributes: Arc<Attributes>,
    /// `github:pulls.create`, or [`CONNECT_ACTION`].
    pub action: String,
    /// `github/repos/acme/api`, or `host:port` for `connect`.
    pub resource: String,
    pub context: RequestContext,
    /// The task token the agent presented, hashed; `None` when it presented
    /// none. The decision plane resolves it to a task.
    pub task: Option<TokenHash>,
    /// Set once a proxy holds a request an approval gate stopped: what the
    /// approval is bound to and records beyond the above.
    pub held: Option<HeldCall>,
}

/// The request attributes policies may look at (Cedar `context`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestContext {
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Path without the query string.
    pub path: String,
    /// Empty for traffic the catalog does not cover.
    pub tool: String,
    pub risk: RiskClass,
    pub sensitivity: String,
    /// An MCP tool call's declared arguments as one JSON object, keys
    /// sorted; checked against the catalog again where it is decided.
    pub arguments: Option<Arc<str>>,
    /// The MCP tool a `tools/call` names, listed in the catalog or not:
    /// what its pin is looked up by.
    pub mcp_tool: Option<Arc<str>>,
}

impl Default for RequestContext {
    fn default() -> RequestContext {
        RequestContext {
            method: String::new(),
            host: String::new(),
            port: 0,
            path: String::new(),
            tool: String::new(),
            risk: RiskClass::Unknown,
            sensitivity: String::new(),
            arguments: None,
            mcp_tool: None,
        }
    }
}

/// SHA-256 of a request body, as the holding proxy computed it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyDigest(pub [u8; 32]);

impl BodyDigest {
    pub fn of(body: &[u8]) -> BodyDigest {
        BodyDigest(sha256(body))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<BodyDigest> {
        Some(BodyDigest(bytes.try_into().ok()?))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.hex()[..12])
    }
}

/// What a proxy holding a gated request adds to its decision request: the
/// body's digest and the query string, which the approval records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeldCall {
    pub body: BodyDigest,
    pub query: String,
}
