//! What a decision is asked: the principal, the action, the resource, the
//! request's attributes and the task token presented. Two equal requests get
//! equal decisions (for one policy snapshot), which is what makes a decision
//! cache sound.

use std::sync::Arc;

use crate::catalog::RiskClass;
use crate::identity::Attributes;

use super::approvals::HeldCall;
use super::tasks::TokenHash;

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
        }
    }
}
