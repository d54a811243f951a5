//! What a decision answers: the outcome, a reason code from a closed set,
//! and what the data plane needs to act on it (the credential to inject,
//! the task it ran under).

use std::fmt;
use std::time::SystemTime;

/// The audit line's `decision` (and the request counter's label) for a
/// request report mode let through although policy denies it.
pub const WOULD_DENY: &str = "would_deny";

/// The three answers a decision can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    ApprovalRequired,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
}

/// Why a decision came out as it did: the stable machine code agents,
/// audit lines and the gRPC API carry. Its spelling on the wire is
/// [`Reason::as_str`]; code matches on the variants, never on the strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A permit matched and no forbid did.
    Allowed,
    /// A forbid matched.
    Forbidden,
    /// Nothing permits it (default deny).
    NoPermit,
    /// A policy failed to evaluate: denied, naming the policy.
    PolicyError,
    /// The request cannot be put to Cedar (an action outside the schema).
    InvalidRequest,
    /// No decision could be had (decision service down or too slow).
    DecisionUnavailable,
    /// The task token's task has ended or expired.
    TaskEnded,
    /// The task token is not one this decision plane issued.
    TaskUnknown,
    /// The task token was issued to another workload.
    TaskWorkloadMismatch,
    /// The action is outside the task's scopes.
    OutOfScope,
    /// The task's budget for the risk class is used up.
    BudgetExhausted,
    /// The request needs shared state (its task, a budget) and the state
    /// store cannot be reached.
    StateUnavailable,
    /// An approval gate stopped it: a person must approve this exact call.
    ApprovalRequired,
    /// A person denied this exact call.
    ApprovalDenied,
    /// The MCP server's definition of the tool differs from its pin, and
    /// the catalog enforces pinning: an operator must accept it first.
    McpToolChanged,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Allowed,
        Reason::Forbidden,
        Reason::NoPermit,
        Reason::PolicyError,
        Reason::InvalidRequest,
        Reason::DecisionUnavailable,
        Reason::TaskEnded,
        Reason::TaskUnknown,
        Reason::TaskWorkloadMismatch,
        Reason::OutOfScope,
        Reason::BudgetExhausted,
        Reason::StateUnavailable,
        Reason::ApprovalRequired,
        Reason::ApprovalDenied,
        Reason::McpToolChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Forbidden => "forbidden",
            Reason::NoPermit => "no_permit",
            Reason::PolicyError => "policy_error",
            Reason::InvalidRequest => "invalid_request",
            Reason::DecisionUnavailable => "decision_unavailable",
            Reason::TaskEnded => "task_ended",
            Reason::TaskUnknown => "task_unknown",
            Reason::TaskWorkloadMismatch => "task_workload_mismatch",
            Reason::OutOfScope => "out_of_scope",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::StateUnavailable => "state_unavailable",
            Reason::ApprovalRequired => "approval_required",
            Reason::ApprovalDenied => "approval_denied",
            Reason::McpToolChanged => "mcp_tool_changed",
        }
    }

    /// The reason spelled `code`, as the gRPC API carries it.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// About the task token itself rather than about policy: the agent
    /// fixes it by getting a new task (answered 401, not 403).
    pub fn is_about_the_token(self) -> bool {
        matches!(self, Reason::TaskEnded | Reason::TaskUnknown)
    }

    /// Policy's own denials, which report mode may let through: a forbid,
    /// no permit (default deny), a policy that failed to evaluate. Never
    /// the task's limits (ended, unknown, another workload's, out of
    /// scope, budget), an approval gate or a person's refusal, a request
    /// Cedar cannot be asked, or tollgate's own trouble (no decision, no
    /// state store): those are enforced in every mode.
    pub fn is_reportable(self) -> bool {
        Reason::REPORTABLE.contains(&self)
    }

    pub const REPORTABLE: [Reason; 3] = [Reason::Forbidden, Reason::NoPermit, Reason::PolicyError];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision. `message` is for humans (a forbid policy's `@reason("…")`
/// annotation when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Reason,
    pub message: String,
    pub policy_ids: Vec<String>,
    /// Name of the credential to inject (never its value): the
    /// `@credential("…")` of the first allowing policy that has one.
    pub credential: Option<String>,
    /// The task the request ran under, when it presented a known task token.
    pub task: Option<TaskRef>,
    /// `approval_required`: the approval asked for (`None` until the
    /// request is held). An allow or `approval_denied`: the approval that
    /// decided it.
    pub approval: Option<ApprovalStatus>,
    /// Report mode let an allow through that policy denies: `reason`,
    /// `message` and `policy_ids` are the denial's, `credential` only
    /// what a permit matching the request names. Never set on a deny.
    pub would_deny: bool,
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// What the audit line's `decision` says: the outcome, or
    /// `would_deny` for a request report mode let through.
    pub fn logged_as(&self) -> &'static str {
        if self.would_deny && self.is_allow() {
            WOULD_DENY
        } else {
            self.outcome.as_str()
        }
    }

    /// Asking again may answer differently whatever the policies: an
    /// approval was asked for, used or refused. Never cached.
    pub fn never_cached(&self) -> bool {
        self.approval.is_some() || self.outcome == Outcome::ApprovalRequired
    }

    /// A deny for `reason`, naming no policy.
    pub fn deny(reason: Reason, message: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reason,
            message: message.into(),
            policy_ids: Vec::new(),
            credential: None,
            task: None,
            approval: None,
            would_deny: false,
        }
    }

    /// The fail-closed answer when no decision could be made.
    pub fn unavailable(message: impl Into<String>) -> Decision {
        Decision::deny(Reason::DecisionUnavailable, message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 4] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Denied,
        ApprovalState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<ApprovalState> {
        ApprovalState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// An approval as a decision carries it: what the agent is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalStatus {
    pub id: String,
    pub state: ApprovalState,
    /// Who decided and why (empty while pending).
    pub approver: String,
    pub reason: String,
}

/// The task a decision was made under, as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub id: String,
    pub expires: SystemTime,
    /// The decision used a budget: never serve it from a cache.
    pub no_cache: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_code() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::from_code("Allowed"), None);
        let codes: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len(), "two reasons share a code");
    }
}
