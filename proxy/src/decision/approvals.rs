//! Approvals: a person's yes or no to one exact call, asked before it
//! leaves. A policy gate (`forbid … unless { context.approved }`) makes a
//! request `approval_required`; the decision plane records what is asked
//! (never the body, only its SHA-256), an approver decides, and the held or
//! repeated request is decided again with `context.approved` set.
//!
//! An approval is bound to the call by a digest of the workload, the task,
//! the action, the resource and the body's digest ([`Binding`]): approving
//! one call approves no other. By default it is used once.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use super::outcome::{ApprovalState, ApprovalStatus};
use super::request::DecisionRequest;
pub use super::request::{BodyDigest, HeldCall};
use super::tasks::{hex, sha256, unix_ms, Task};
pub use crate::config::ApprovalRules;

/// Which calls an approval is good for: the digest of everything it is
/// bound to — workload, task, action, resource, and the request itself
/// (method, host, port, path, query, body). Two requests with the same
/// binding are the same call; approving a merge of pull request 7 does
/// not approve one of pull request 8, though both name the same resource.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding(pub [u8; 32]);

impl Binding {
    pub fn of(request: &DecisionRequest, task: Option<&Task>, held: &HeldCall) -> Binding {
        let task = task.map_or("", |t| t.record.id.as_str());
        let c = &request.context;
        let port = c.port.to_be_bytes();
        // Length-prefixed, so no two different calls spell the same bytes.
        let parts: [&[u8]; 10] = [
            request.principal.as_bytes(),
            task.as_bytes(),
            request.action.as_bytes(),
            request.resource.as_bytes(),
            c.method.as_bytes(),
            c.host.as_bytes(),
            &port,
            c.path.as_bytes(),
            held.query.as_bytes(),
            &held.body.0,
        ];
        let mut framed = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            framed.extend_from_slice(&(part.len() as u64).to_be_bytes());
            framed.extend_from_slice(part);
        }
        Binding(sha256(&framed))
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.hex()[..12])
    }
}

/// One approval as it is stored and shown. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    /// [`Binding`] in hex.
    pub binding: String,
    pub workload: String,
    pub task_id: String,
    pub task_purpose: String,
    /// When its task expires (0: no task); nothing outlives its task.
    pub task_expires_ms: i64,
    pub action: String,
    pub resource: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub query: String,
    /// SHA-256 of the body, hex. The body stays in the holding proxy.
    pub body_sha256: String,
    /// The gates that asked for it, and what they say.
    pub policy_ids: Vec<String>,
    pub message: String,
    pub state: ApprovalState,
    pub created_ms: i64,
    /// Pending: when it expires undecided. Approved: the last moment it
    /// may be used. Denied: until when the same call is answered denied.
    pub expires_ms: i64,
    /// Who decided, why and when (empty while pending).
    pub approver: String,
    pub reason: String,
    pub decided_ms: i64,
    /// How many requests it has let through.
    pub uses: u32,
    /// Usable until its task ends, not once.
    pub reusable: bool,
}

impl Approval {
    /// A new pending approval for `request`, held with `held`.
    pub fn ask(
        request: &DecisionRequest,
        task: Option<&Task>,
        held: &HeldCall,
        gate: &GateInfo,
        rules: &ApprovalRules,
        now: SystemTime,
    ) -> Approval {
        let task_expires_ms = task.map_or(0, |t| unix_ms(t.record.expires));
        let mut approval = Approval {
            id: format!("apr_{}", uuid::Uuid::now_v7().simple()),
            binding: Binding::of(request, task, held).hex(),
            workload: request.principal.clone(),
            task_id: task.map(|t| t.record.id.clone()).unwrap_or_default(),
            task_purpose: task.map(|t| t.record.purpose.clone()).unwrap_or_default(),
            task_expires_ms,
            action: request.action.clone(),
            resource: request.resource.clone(),
            method: request.context.method.clone(),
            host: request.context.host.clone(),
            port: request.context.port,
            path: request.context.path.clone(),
            query: held.query.clone(),
            body_sha256: held.body.hex(),
            policy_ids: gate.policy_ids.clone(),
            message: gate.message.clone(),
            state: ApprovalState::Pending,
            created_ms: unix_ms(now),
            expires_ms: 0,
            approver: String::new(),
            reason: String::new(),
            decided_ms: 0,
            uses: 0,
            reusable: rules.reusable,
        };
        approval.last(rules.ttl, now);
        approval
    }

    /// Expire `ttl` after `now`, or when its task does if sooner.
    fn last(&mut self, ttl: Duration, now: SystemTime) {
        let until = unix_ms(now + ttl);
        self.expires_ms = match self.task_expires_ms {
            0 => until,
            task => until.min(task),
        };
    }

    /// Its state at `now`: an undecided or approved approval past its
    /// expiry is expired, whatever the store last wrote.
    pub fn state_at(&self, now: SystemTime) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Approved if unix_ms(now) >= self.expires_ms => {
                ApprovalState::Expired
            }
            state => state,
        }
    }

    /// May let a request through now: approved, not expired, and unused
    /// unless reusable.
    pub fn usable(&self, now: SystemTime) -> bool {
        self.state_at(now) == ApprovalState::Approved && (self.reusable || self.uses == 0)
    }

    /// Still answers its call (pending, usable, or a denial not yet
    /// expired): a request with the same binding gets this one rather
    /// than a new one.
    pub fn current(&self, now: SystemTime) -> bool {
        match self.state_at(now) {
            ApprovalState::Pending => true,
            ApprovalState::Approved => self.usable(now),
            ApprovalState::Denied => unix_ms(now) < self.expires_ms,
            ApprovalState::Expired => false,
        }
    }

    /// The approver's verdict, applied: only a pending approval can be
    /// decided, once, and never by an approver named as the workload that
    /// asked (an agent configured as an approver must not release itself).
    pub fn decide(
        &mut self,
        verdict: &Verdict,
        rules: &ApprovalRules,
        now: SystemTime,
    ) -> Result<(), ApprovalError> {
        if verdict.approver == self.workload {
            return Err(ApprovalError::OwnWorkload {
                id: self.id.clone(),
            });
        }
        let state = self.state_at(now);
        if state != ApprovalState::Pending {
            return Err(ApprovalError::AlreadyDecided {
                id: self.id.clone(),
                state: state.as_str(),
            });
        }
        self.state = if verdict.approve {
            ApprovalState::Approved
        } else {
            ApprovalState::Denied
        };
        self.approver = verdict.approver.clone();
        self.reason = verdict.reason.clone();
        self.decided_ms = unix_ms(now);
        // Approved: usable for a ttl from the verdict. Denied: the same
        // call is answered with the denial as long.
        self.last(rules.ttl, now);
        Ok(())
    }

    /// What changed, as watchers hear it.
    pub fn event(&self, kind: ApprovalEventKind) -> ApprovalEvent {
        ApprovalEvent {
            kind,
            approval: self.clone(),
        }
    }
}

/// An approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub approve: bool,
    pub approver: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalEventKind {
    Requested,
    Approved,
    Denied,
    Used,
    Expired,
}

impl ApprovalEventKind {
    pub const ALL: [ApprovalEventKind; 5] = [
        ApprovalEventKind::Requested,
        ApprovalEventKind::Approved,
        ApprovalEventKind::Denied,
        ApprovalEventKind::Used,
        ApprovalEventKind::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalEventKind::Requested => "requested",
            ApprovalEventKind::Approved => "approved",
            ApprovalEventKind::Denied => "denied",
            ApprovalEventKind::Used => "used",
            ApprovalEventKind::Expired => "expired",
        }
    }
}

/// A change to one approval, wherever it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    pub kind: ApprovalEventKind,
    pub approval: Approval,
}

/// What a gate said when it asked for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateInfo {
    pub policy_ids: Vec<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approval `{0}` not found")]
    NotFound(String),
    #[error("approval `{id}` is {state}; only a pending approval can be decided")]
    AlreadyDecided { id: String, state: &'static str },
    #[error("approval `{id}` was asked for by the approver's own workload; another approver must decide it")]
    OwnWorkload { id: String },
    #[error("approvals cannot be reached: {0}")]
    Unavailable(String),
}
