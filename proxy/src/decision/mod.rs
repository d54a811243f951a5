//! The decision plane: given who is calling and what the request is, allow,
//! deny, or ask for approval. The `Decider` trait is the seam between the data
//! plane and wherever decisions are made: embedded Cedar (`engine`, through
//! `snapshot::EmbeddedDecider`) or a remote `tollgate decision` (`client`).

pub mod cache;
pub mod client;
pub mod credentials;
pub mod engine;
mod policies;
pub mod proto;
mod request;
pub mod schema;
pub mod tasks;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use cache::DecisionCache;
pub use engine::{PolicyEngine, PolicyError};
pub use schema::schema_text;
pub use tasks::{TaskRef, TaskRevoked, TaskStore, TokenHash};

/// The built-in action for traffic the catalog does not cover: decided on
/// host:port alone and tunnelled blind if allowed.
pub const CONNECT_ACTION: &str = "connect";

/// Everything a decision depends on. Two equal requests get equal decisions
/// (for the same policy epoch), which is what makes a decision cache sound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionRequest {
    /// Workload identity, e.g. `spiffe://cluster.local/ns/agents/sa/coder`.
    pub principal: String,
    /// `github:pulls.create`, or [`CONNECT_ACTION`].
    pub action: String,
    /// `github/repos/acme/api`, or `host:port` for `connect`.
    pub resource: String,
    pub context: RequestContext,
    /// The task token the agent presented, hashed; `None` when it presented
    /// none. The decision plane resolves it to a task.
    pub task: Option<TokenHash>,
}

/// The request attributes policies may look at (Cedar `context`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RequestContext {
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Path without the query string.
    pub path: String,
    pub tool: String,
    pub risk: String,
    pub sensitivity: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    ApprovalRequired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
}

/// A decision. `reason` is a stable machine code (`allowed`, `forbidden`,
/// `no_permit`, `policy_error`, `decision_unavailable`, …); `message` is for
/// humans (a forbid policy's `@reason("…")` annotation when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: String,
    pub message: String,
    pub policy_ids: Vec<String>,
    /// Name of the credential to inject (never its value): the
    /// `@credential("…")` of the first allowing policy that has one.
    pub credential: Option<String>,
    /// The task the request ran under, when it presented a known task token.
    pub task: Option<TaskRef>,
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// The fail-closed answer when no decision could be made.
    pub fn unavailable(message: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reason: "decision_unavailable".into(),
            message: message.into(),
            policy_ids: Vec::new(),
            credential: None,
            task: None,
        }
    }
}

pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// Where decisions come from. Implementations never fail: any internal error
/// is a `Deny` (fail closed).
pub trait Decider: Send + Sync + 'static {
    fn decide<'a>(&'a self, request: &'a DecisionRequest) -> DecisionFuture<'a>;

    /// Tasks ending from now on, so connections carrying them can close.
    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked>;
}

/// Shared handle used by the pipeline.
pub type SharedDecider = Arc<dyn Decider>;
