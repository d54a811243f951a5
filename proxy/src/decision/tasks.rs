//! Tasks: what an agent may do, for how long, with which budgets. The agent
//! holds only the task's token; the decision plane keeps the token's
//! SHA-256, never the token, so neither a dump of its memory nor a proxy's
//! cache holds anything an agent could present.
//!
//! A task ends by `EndTask` or when its TTL passes. Either way every
//! subscriber hears a [`TaskRevoked`], so proxies refuse its token at once
//! and close the tunnels that carry it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
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
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// SHA-256 of a task token: how the decision plane stores tokens and how
/// proxies send them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
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

pub struct Task {
    pub id: String,
    pub workload: String,
    pub purpose: String,
    scopes: Vec<String>,
    budgets: BTreeMap<RiskClass, (u32, AtomicU32)>,
    token: TokenHash,
    created: SystemTime,
    pub expires: SystemTime,
    ended: RwLock<Option<(SystemTime, TaskState)>>,
}

impl Task {
    fn state(&self, now: SystemTime) -> TaskState {
        match *self.ended.read().unwrap_or_else(|e| e.into_inner()) {
            Some((_, state)) => state,
            None if now >= self.expires => TaskState::Expired,
            None => TaskState::Active,
        }
    }

    /// `github:pulls.create` against `github:pulls.*`, `github:*`, `*`.
    pub fn in_scope(&self, action: &str) -> bool {
        self.scopes.is_empty()
            || self.scopes.iter().any(|s| match s.strip_suffix('*') {
                Some(prefix) => action.starts_with(prefix),
                None => s == action,
            })
    }

    pub fn has_budget_for(&self, class: RiskClass) -> bool {
        self.budgets.contains_key(&class)
    }

    pub fn has_budgets(&self) -> bool {
        !self.budgets.is_empty()
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Allowed requests of `class` counted against its budget so far (0
    /// for a class without one).
    pub fn used(&self, class: RiskClass) -> u32 {
        self.budgets
            .get(&class)
            .map_or(0, |(_, used)| used.load(Ordering::SeqCst))
    }

    /// Use one unit of `class`'s budget; `false` when none is left. A class
    /// without a budget is unlimited.
    pub fn consume(&self, class: RiskClass) -> bool {
        let Some((limit, used)) = self.budgets.get(&class) else {
            return true;
        };
        used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
            (u < *limit).then_some(u + 1)
        })
        .is_ok()
    }

    /// The task as a decision names it.
    pub fn reference(&self) -> TaskRef {
        TaskRef {
            id: self.id.clone(),
            expires: self.expires,
            no_cache: false,
        }
    }

    pub fn view(&self) -> TaskView {
        let now = SystemTime::now();
        let ended = *self.ended.read().unwrap_or_else(|e| e.into_inner());
        TaskView {
            id: self.id.clone(),
            workload: self.workload.clone(),
            purpose: self.purpose.clone(),
            scopes: self.scopes.clone(),
            budgets: self
                .budgets
                .iter()
                .map(|(class, (limit, used))| (*class, (*limit, used.load(Ordering::SeqCst))))
                .collect(),
            created: self.created,
            expires: self.expires,
            state: self.state(now),
            ended: ended
                .map(|(at, _)| at)
                .or_else(|| (now >= self.expires).then_some(self.expires)),
        }
    }
}

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
}

impl TaskRefusal {
    pub fn reason(self) -> Reason {
        match self {
            TaskRefusal::Ended => Reason::TaskEnded,
            TaskRefusal::Unknown => Reason::TaskUnknown,
            TaskRefusal::OtherWorkload => Reason::TaskWorkloadMismatch,
            TaskRefusal::OutOfScope => Reason::OutOfScope,
            TaskRefusal::BudgetExhausted => Reason::BudgetExhausted,
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

/// Tasks of one decision plane, in memory.
pub struct TaskStore {
    by_id: RwLock<HashMap<String, Arc<Task>>>,
    by_token: RwLock<HashMap<TokenHash, Arc<Task>>>,
    revoked: tokio::sync::broadcast::Sender<TaskRevoked>,
    limits: TaskLimits,
    rng: SystemRandom,
}

impl TaskStore {
    pub fn new(limits: TaskLimits) -> TaskStore {
        let (revoked, _) = tokio::sync::broadcast::channel(1024);
        TaskStore {
            by_id: RwLock::default(),
            by_token: RwLock::default(),
            revoked,
            limits,
            rng: SystemRandom::new(),
        }
    }

    /// Every task end and expiry, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        self.revoked.subscribe()
    }

    /// Start a task; the token is returned here only.
    pub fn start(&self, spec: TaskSpec) -> Result<(TaskView, Secret), TaskError> {
        if spec.workload.trim().is_empty() {
            return Err(TaskError::Invalid("a workload is required".into()));
        }
        let ttl = if spec.ttl.is_zero() {
            self.limits.default_ttl
        } else {
            spec.ttl
        };
        if ttl > self.limits.max_ttl {
            return Err(TaskError::Invalid(format!(
                "ttl {} is above the maximum {}",
                humantime::format_duration(ttl),
                humantime::format_duration(self.limits.max_ttl)
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
        let mut budgets = BTreeMap::new();
        for (class, limit) in spec.budgets {
            let Some(risk) = RiskClass::from_name(&class) else {
                let known: Vec<&str> = RiskClass::ALL.iter().map(|r| r.as_str()).collect();
                return Err(TaskError::Invalid(format!(
                    "budget class `{class}`: one of {}",
                    known.join(", ")
                )));
            };
            budgets.insert(risk, (limit, AtomicU32::new(0)));
        }
        let mut raw = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
        self.rng
            .fill(raw.as_mut())
            .map_err(|_| TaskError::Invalid("no randomness available".into()))?;
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        token.push_str(TOKEN_PREFIX);
        for b in raw.iter() {
            token.push_str(&format!("{b:02x}"));
        }
        let token = Secret::new(token);
        let now = SystemTime::now();
        let task = Arc::new(Task {
            id: format!("task_{}", uuid::Uuid::now_v7().simple()),
            workload: spec.workload,
            purpose: spec.purpose,
            scopes: spec.scopes,
            budgets,
            token: TokenHash::of(token.expose()),
            created: now,
            expires: now + ttl,
            ended: RwLock::new(None),
        });
        write(&self.by_token).insert(task.token, task.clone());
        write(&self.by_id).insert(task.id.clone(), task.clone());
        tracing::info!(task = %task.id, workload = %task.workload, ttl = %humantime::format_duration(ttl), "task started");
        Ok((task.view(), token))
    }

    pub fn end(&self, id: &str) -> Result<TaskView, TaskError> {
        let task = self.by_id_or_err(id)?;
        self.stop(&task, TaskState::Ended);
        Ok(task.view())
    }

    pub fn get(&self, id: &str) -> Result<TaskView, TaskError> {
        Ok(self.by_id_or_err(id)?.view())
    }

    /// Newest first.
    pub fn list(&self) -> Vec<TaskView> {
        let mut all: Vec<TaskView> = read(&self.by_id).values().map(|t| t.view()).collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        all
    }

    /// Tasks that have stopped and are still remembered.
    pub fn ended_tokens(&self) -> Vec<(String, TokenHash)> {
        read(&self.by_id)
            .values()
            .filter(|t| t.ended.read().unwrap_or_else(|e| e.into_inner()).is_some())
            .map(|t| (t.id.clone(), t.token))
            .collect()
    }

    /// The task behind `token`, if it may carry a request by `workload`
    /// for `action`. Budgets are used later, once policy has allowed.
    pub fn admit(
        &self,
        token: &TokenHash,
        workload: &str,
        action: &str,
    ) -> Result<Arc<Task>, (TaskRefusal, Option<Arc<Task>>)> {
        let task = read(&self.by_token)
            .get(token)
            .cloned()
            .ok_or((TaskRefusal::Unknown, None))?;
        if task.state(SystemTime::now()) != TaskState::Active {
            return Err((TaskRefusal::Ended, Some(task)));
        }
        if task.workload != workload {
            return Err((TaskRefusal::OtherWorkload, Some(task)));
        }
        if !task.in_scope(action) {
            return Err((TaskRefusal::OutOfScope, Some(task)));
        }
        Ok(task)
    }

    /// End tasks whose TTL has passed (announcing each), and forget tasks
    /// that ended longer ago than the retention. Run periodically.
    pub fn sweep(&self) {
        let now = SystemTime::now();
        let expired: Vec<Arc<Task>> = read(&self.by_id)
            .values()
            .filter(|t| {
                t.ended.read().unwrap_or_else(|e| e.into_inner()).is_none() && now >= t.expires
            })
            .cloned()
            .collect();
        for task in expired {
            self.stop(&task, TaskState::Expired);
        }
        let old: Vec<Arc<Task>> = read(&self.by_id)
            .values()
            .filter(|t| {
                t.ended
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|(at, _)| now.duration_since(at).unwrap_or_default() > RETENTION)
            })
            .cloned()
            .collect();
        for task in old {
            write(&self.by_id).remove(&task.id);
            write(&self.by_token).remove(&task.token);
        }
    }

    fn stop(&self, task: &Task, state: TaskState) {
        {
            let mut ended = task.ended.write().unwrap_or_else(|e| e.into_inner());
            if ended.is_some() {
                return;
            }
            *ended = Some((SystemTime::now(), state));
        }
        tracing::info!(task = %task.id, state = state.as_str(), "task stopped; revoking");
        // No subscriber is not an error: nobody holds anything to drop.
        let _ = self.revoked.send(TaskRevoked {
            task_id: task.id.clone(),
            token: task.token,
        });
    }

    fn by_id_or_err(&self, id: &str) -> Result<Arc<Task>, TaskError> {
        read(&self.by_id)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(id.to_string()))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Run [`TaskStore::sweep`] every `interval` until the store is dropped.
pub fn spawn_sweeper(store: &Arc<TaskStore>, interval: Duration) {
    let weak = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(store) => store.sweep(),
                None => return,
            }
        }
    });
}
