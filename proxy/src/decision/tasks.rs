//! Tasks: what an agent may do, for how long, with which budgets. The agent
//! holds only the task's token; the decision plane keeps the token's
//! SHA-256, never the token, so neither a dump of its memory nor a proxy's
//! cache holds anything an agent could present.
//!
//! A task ends by `EndTask` or when its TTL passes. Either way every
//! subscriber hears a [`TaskRevoked`], so proxies refuse its token at once
//! and close the tunnels that carry it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use super::credentials::Secret;
use super::outcome::{Decision, Reason, TaskRef};
use crate::catalog::RiskClass;

/// Every task token starts with this, so tollgate (and secret scanners)
/// can tell a task token from a real credential the agent was given.
pub const TOKEN_PREFIX: &str = "tgt_";
const TOKEN_BYTES: usize = 32;
/// How long an ended task is remembered, so its token keeps being refused
/// as `task_ended` rather than `task_unknown`.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// SHA-256 of a task token: how the decision plane stores tokens and how
/// proxies send them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(sha256(token.as_bytes()))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<TokenHash> {
        Some(TokenHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in logs.
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// What `StartTask` asks for.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    pub workload: String,
    pub purpose: String,
    /// Zero: the store's default.
    pub ttl: Duration,
    pub scopes: Vec<String>,
    /// Risk class name → how many allowed requests of that class.
    pub budgets: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Active,
    Ended,
    Expired,
}

impl TaskState {
    pub fn from_name(name: &str) -> Option<TaskState> {
        [TaskState::Active, TaskState::Ended, TaskState::Expired]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Active => "active",
            TaskState::Ended => "ended",
            TaskState::Expired => "expired",
        }
    }
}

/// A task as the API shows it: everything but the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub workload: String,
    pub purpose: String,
    pub scopes: Vec<String>,
    /// class → (limit, used)
    pub budgets: BTreeMap<RiskClass, (u32, u32)>,
    pub created: SystemTime,
    pub expires: SystemTime,
    pub state: TaskState,
    pub ended: Option<SystemTime>,
}

/// What a task was started with: everything but its state and the use of
/// its budgets. Never changes once started, so every store and replica may
/// hold a copy.
#[derive(Debug, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: String,
    pub workload: String,
    pub purpose: String,
    pub scopes: Vec<String>,
    /// Risk class → how many allowed requests of that class.
    pub limits: BTreeMap<RiskClass, u32>,
    pub token: TokenHash,
    pub created: SystemTime,
    pub expires: SystemTime,
}

impl TaskRecord {
    /// `github:pulls.create` against `github:pulls.*`, `github:*`, `*`.
    pub fn in_scope(&self, action: &str) -> bool {
        self.scopes.is_empty()
            || self.scopes.iter().any(|s| match s.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => s == action,
            })
    }

    /// The task as a decision names it.
    pub fn reference(&self) -> TaskRef {
        TaskRef {
            id: self.id.clone(),
            expires: self.expires,
            no_cache: false,
        }
    }

    /// Refuse a request by `workload` for `action` under this task, as of
    /// `ended` (its end, if it has ended).
    pub fn admits(
        &self,
        ended: Option<TaskState>,
        workload: &str,
        action: &str,
    ) -> Result<(), TaskRefusal> {
        if ended.is_some() || SystemTime::now() >= self.expires {
            return Err(TaskRefusal::Ended);
        }
        if self.workload != workload {
            return Err(TaskRefusal::OtherWorkload);
        }
        if !self.in_scope(action) {
            return Err(TaskRefusal::OutOfScope);
        }
        Ok(())
    }

    /// The task as the API shows it, given its end and budgets' use.
    pub fn view(
        &self,
        ended: Option<(SystemTime, TaskState)>,
        used: impl Fn(RiskClass) -> u32,
    ) -> TaskView {
        let now = SystemTime::now();
        let state = match ended {
            Some((_, state)) => state,
            None if now >= self.expires => TaskState::Expired,
            None => TaskState::Active,
        };
        TaskView {
            id: self.id.clone(),
            workload: self.workload.clone(),
            purpose: self.purpose.clone(),
            scopes: self.scopes.clone(),
            budgets: self
                .limits
                .iter()
                .map(|(class, limit)| (*class, (*limit, used(*class))))
                .collect(),
            created: self.created,
            expires: self.expires,
            state,
            ended: ended
                .map(|(at, _)| at)
                .or_else(|| (now >= self.expires).then_some(self.expires)),
        }
    }
}

/// A task as one request was admitted under it: its record, and how much of
/// each budget was used when it was admitted (what `context.task.used`
/// shows policies).
#[derive(Debug)]
pub struct Task {
    pub record: Arc<TaskRecord>,
    pub used: BTreeMap<RiskClass, u32>,
    /// What admission did about the request's class's budget.
    pub budget: Admitted,
}

/// A store may take a request's unit of budget when it admits the request
/// (Redis: one round trip instead of two), giving it back if policy then
/// refuses; or count it only once policy has allowed (memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Nothing taken: the class has no budget, or it is counted later.
    NotTaken,
    /// One unit taken for this request.
    Taken,
    /// None was left to take.
    Exhausted,
}

impl Task {
    pub fn has_budget_for(&self, class: RiskClass) -> bool {
        self.record.limits.contains_key(&class)
    }

    pub fn has_budgets(&self) -> bool {
        !self.record.limits.is_empty()
    }

    /// Allowed requests of `class` counted against its budget when the
    /// request was admitted (0 for a class without one).
    pub fn used(&self, class: RiskClass) -> u32 {
        self.used.get(&class).copied().unwrap_or(0)
    }
}

/// A token that does not admit its request: why, and the task when known.
pub type Refused = (TaskRefusal, Option<TaskRef>);

/// Why a presented task token does not admit the request. Each is a deny
/// with a stable reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRefusal {
    /// Ended or expired: `task_ended` (401).
    Ended,
    /// Not a token this decision plane issued: `task_unknown` (401).
    Unknown,
    /// Issued to another workload: `task_workload_mismatch` (403).
    OtherWorkload,
    /// The action is outside the task's scopes: `out_of_scope` (403).
    OutOfScope,
    /// The risk class's budget is used up: `budget_exhausted` (403).
    BudgetExhausted,
    /// The shared state store cannot be reached: `state_unavailable` (503).
    Unavailable,
}

impl TaskRefusal {
    pub fn reason(self) -> Reason {
        match self {
            TaskRefusal::Ended => Reason::TaskEnded,
            TaskRefusal::Unknown => Reason::TaskUnknown,
            TaskRefusal::OtherWorkload => Reason::TaskWorkloadMismatch,
            TaskRefusal::OutOfScope => Reason::OutOfScope,
            TaskRefusal::BudgetExhausted => Reason::BudgetExhausted,
            TaskRefusal::Unavailable => Reason::StateUnavailable,
        }
    }

    /// The refusal as a decision, naming the task when it is known.
    pub fn decision(self, task: Option<TaskRef>) -> Decision {
        let message = match (self, &task) {
            (TaskRefusal::Ended, Some(t)) => format!("task {} has ended", t.id),
            (TaskRefusal::Ended, None) => "the task has ended".into(),
            (TaskRefusal::Unknown, _) => "the task token is not known".into(),
            (TaskRefusal::OtherWorkload, _) => {
                "the task token was issued to another workload".into()
            }
            (TaskRefusal::OutOfScope, Some(t)) => {
                format!("the action is outside task {}'s scopes", t.id)
            }
            (TaskRefusal::BudgetExhausted, Some(t)) => {
                format!("task {} has used its budget for this risk class", t.id)
            }
            (TaskRefusal::Unavailable, _) => {
                "the task state store cannot be reached; requests under tasks are refused until it can".into()
            }
            (_, None) => String::new(),
        };
        Decision {
            task,
            ..Decision::deny(self.reason(), message)
        }
    }
}

/// A task stopped: refuse its token, drop what was decided under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRevoked {
    pub task_id: String,
    pub token: TokenHash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    #[error("no task `{0}`")]
    NotFound(String),
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The state store cannot be reached: nothing about tasks can be
    /// known or changed until it can.
    #[error("the task state store is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct TaskLimits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for TaskLimits {
    fn default() -> TaskLimits {
        TaskLimits {
            default_ttl: crate::config::DEFAULT_TASK_TTL,
            max_ttl: crate::config::DEFAULT_MAX_TASK_TTL,
        }
    }
}

impl TaskLimits {
    /// Check `spec` against these limits and mint its token: the record a
    /// store keeps, and the token, which only the caller of `StartTask`
    /// ever sees.
    pub fn issue(&self, spec: TaskSpec) -> Result<(TaskRecord, Secret), TaskError> {
        if spec.workload.trim().is_empty() {
            return Err(TaskError::Invalid("a workload is required".into()));
        }
        let ttl = if spec.ttl.is_zero() {
            self.default_ttl
        } else {
            spec.ttl
        };
        if ttl > self.max_ttl {
            return Err(TaskError::Invalid(format!(
                "ttl {} is above the maximum {}",
                humantime::format_duration(ttl),
                humantime::format_duration(self.max_ttl)
            )));
        }
        for scope in &spec.scopes {
            let body = scope.strip_suffix('*').unwrap_or(scope);
            if body.contains('*') || scope.trim() != scope || scope.is_empty() {
                return Err(TaskError::Invalid(format!(
                    "scope `{scope}`: an action name, optionally ending in `*`"
                )));
            }
        }
        let mut limits = BTreeMap::new();
        for (class, limit) in spec.budgets {
            let Some(risk) = RiskClass::from_name(&class) else {
                let known: Vec<&str> = RiskClass::ALL.iter().map(|r| r.as_str()).collect();
                return Err(TaskError::Invalid(format!(
                    "budget class `{class}`: one of {}",
                    known.join(", ")
                )));
            };
            limits.insert(risk, limit);
        }
        let mut raw = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
        SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| TaskError::Invalid("no randomness available".into()))?;
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        token.push_str(TOKEN_PREFIX);
        for b in raw.iter() {
            token.push_str(&format!("{b:02x}"));
        }
        let token = Secret::new(token);
        // Whole milliseconds: what every store can keep exactly.
        let now = from_unix_ms(unix_ms(SystemTime::now()));
        let record = TaskRecord {
            id: format!("task_{}", uuid::Uuid::now_v7().simple()),
            workload: spec.workload,
            purpose: spec.purpose,
            scopes: spec.scopes,
            limits,
            token: TokenHash::of(token.expose()),
            created: now,
            expires: now + Duration::from_millis(ttl.as_millis() as u64),
        };
        Ok((record, token))
    }
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// SHA-256 of `data`: token hashes, body digests, approval bindings.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Lowercase hex. On every task-bound request's path (Redis keys): a
/// `format!` per byte cost more than the rest of building the keys.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}
