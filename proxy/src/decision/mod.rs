//! The decision plane: given who is calling and what the request is, allow,
//! deny, or ask for approval. The `Decider` trait is the seam between the
//! request path and wherever decisions are made: embedded Cedar with tasks
//! (`embedded`) or a remote `tollgate decision` (`client`).
//!
//! The vocabulary (`request`, `outcome`) imports nothing else of this
//! module; the engine, cache, tasks and credentials build on it, the
//! `snapshot` holds one loaded set of them with the catalog, `state` keeps
//! the tasks (in memory, or in Redis shared by replicas), and `embedded`
//! decides with a snapshot under them.

pub mod approvals;
pub mod approvers;
pub mod cache;
mod cedar;
pub mod client;
pub mod credentials;
pub mod embedded;
pub mod engine;
mod outcome;
pub mod pins;
pub(crate) mod policies;
pub mod proto;
mod request;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod tasks;
#[cfg(test)]
mod tests;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::catalog::McpPinning;

pub use cache::DecisionCache;
pub use embedded::EmbeddedDecider;
pub use engine::PolicyEngine;
pub use outcome::{ApprovalState, ApprovalStatus, Decision, Outcome, Reason, TaskRef, WOULD_DENY};
pub use pins::{ObservedTool, ToolChange};
pub use policies::PolicyError;
pub use request::{DecisionRequest, RequestContext, CONNECT_ACTION};
pub use schema::schema_text;
pub use snapshot::{Snapshot, SnapshotHandle};
pub use tasks::{TaskRevoked, TokenHash};

pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;
/// `None`: the approval is not known, or cannot be asked about now.
/// Whether some call may be allowed (`None`: the decider could not be
/// asked): [`Decider::may_allow`].
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Option<bool>> + Send + 'a>>;
/// The changes an MCP server's listing showed, or why it could not be
/// recorded: [`Decider::observe_tools`].
pub type ObserveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<ToolChange>, String>> + Send + 'a>>;
pub type ApprovalFuture<'a> = Pin<Box<dyn Future<Output = Option<ApprovalStatus>> + Send + 'a>>;

/// Where decisions come from. Implementations never fail: any internal error
/// is a `Deny` (fail closed).
pub trait Decider: Send + Sync + 'static {
    /// Decide `request`, which was named with `snapshot`'s catalog. A
    /// decider that evaluates policy in this process uses that snapshot's
    /// policies and never loads another: a reload between classifying and
    /// deciding must not pair one catalog with another's policies.
    fn decide<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> DecisionFuture<'a>;

    /// Whether some call of `request`'s action by its principal may be
    /// allowed, whatever its resource, arguments or task (the engine's
    /// `may_permit`, where policy is evaluated; always in report mode):
    /// listings hide what may not. `None` when it cannot be asked; a
    /// listing then shows everything, and no call is ever let through on
    /// it.
    fn may_allow<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> ProbeFuture<'a>;

    /// Record the tool definitions an MCP server listed (`server`: its
    /// catalog tool) against their pins, where the pins are kept: a tool
    /// never seen is pinned, one whose definition differs is reported
    /// there (audit line, metric) and returned, once per new definition.
    /// `pinning` is what the caller's catalog says of the server, for the
    /// record; a remote decision plane goes by its own.
    fn observe_tools<'a>(
        &'a self,
        server: &'a str,
        pinning: McpPinning,
        tools: &'a [ObservedTool],
    ) -> ObserveFuture<'a>;

    /// Tasks ending from now on, so connections carrying them can close.
    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked>;

    /// Wait up to `timeout` for approval `id` to stop being pending, on the
    /// store's stream of changes (never polling); its status then.
    fn await_approval<'a>(
        &'a self,
        id: &'a str,
        timeout: std::time::Duration,
    ) -> ApprovalFuture<'a>;
}

/// Shared handle used by the request path.
pub type SharedDecider = Arc<dyn Decider>;
