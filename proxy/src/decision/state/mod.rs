//! The state store: what the decision plane changes while it runs — tasks,
//! the use of their budgets, their ends — as opposed to the catalog and
//! policies, which are files every replica loads. Two backends behind one
//! [`TaskStore`]: memory (one process; the default) and Redis (shared by
//! every replica that names the same server, and outliving all of them).
//! Approvals and MCP tool pins, which must be seen by every replica too,
//! belong here as well.
//!
//! A store that cannot be reached answers nothing it would have to guess:
//! requests under a task are refused with `state_unavailable`, task
//! administration fails, and [`TaskStore::health`] says so, which is what
//! `/readyz` and the revocation streams follow.

pub mod approvals;
pub mod memory;
pub mod pins;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::catalog::RiskClass;
use crate::config::RedisConfig;
use crate::decision::approvals::ApprovalRules;
use crate::decision::credentials::Secret;
use crate::decision::tasks::{
    Admitted, Refused, Task, TaskError, TaskLimits, TaskRefusal, TaskRevoked, TaskSpec, TaskView,
    TokenHash,
};
use crate::decision::webhook::Webhook;

pub use approvals::ApprovalStore;
use memory::MemoryTasks;
pub use pins::PinStore;
use redis::{RedisApprovals, RedisPins, RedisStore, RedisTasks};

/// How many task ends a subscriber may fall behind by before its stream is
/// cut (and it resubscribes, hearing every remembered end again).
const REVOCATION_BACKLOG: usize = 1024;

pub struct TaskStore {
    backend: Backend,
    approvals: ApprovalStore,
    pins: PinStore,
    revoked: broadcast::Sender<TaskRevoked>,
    health: watch::Receiver<bool>,
    /// Memory is always there: this keeps its health open and `true`, so
    /// waiting for it to be lost waits for ever.
    _always_up: Option<watch::Sender<bool>>,
}

enum Backend {
    Memory(MemoryTasks),
    Redis(RedisTasks),
}

impl TaskStore {
    pub fn in_memory(limits: TaskLimits) -> TaskStore {
        let (revoked, _) = broadcast::channel(REVOCATION_BACKLOG);
        let (always_up, health) = watch::channel(true);
        TaskStore {
            backend: Backend::Memory(MemoryTasks::new(limits, revoked.clone())),
            approvals: ApprovalStore::in_memory(ApprovalRules::default()),
            pins: PinStore::in_memory(),
            revoked,
            health,
            _always_up: Some(always_up),
        }
    }

    /// Tasks and approvals in the Redis `config` names, on one connection
    /// made (and remade) in the background: until connected the store is
    /// unhealthy. Needs a runtime.
    pub fn redis(limits: TaskLimits, config: &RedisConfig) -> Result<TaskStore, String> {
        let (revoked, _) = broadcast::channel(REVOCATION_BACKLOG);
        let (events, _) = broadcast::channel(approvals::EVENT_BACKLOG);
        let redis = RedisStore::connect(config, revoked.clone(), events.clone())?;
        let approvals = ApprovalStore::redis(
            ApprovalRules::default(),
            RedisApprovals::new(redis.clone()),
            events,
            redis.health(),
        );
        Ok(TaskStore {
            approvals,
            pins: PinStore::Redis(RedisPins::new(redis.clone())),
            health: redis.health(),
            backend: Backend::Redis(RedisTasks::new(redis, limits)),
            revoked,
            _always_up: None,
        })
    }

    /// Approvals behaving as `rules` say, wherever they are kept. Before
    /// the store is shared: the rules never change while it serves.
    pub fn with_approval_rules(mut self, rules: ApprovalRules) -> TaskStore {
        self.approvals.set_rules(rules);
        self
    }

    /// Notify `webhook` of the approval changes made here.
    pub fn with_webhook(mut self, webhook: Webhook) -> TaskStore {
        self.approvals.notify(webhook);
        self
    }

    /// The approvals kept beside the tasks, in the same store.
    pub fn approvals(&self) -> &ApprovalStore {
        &self.approvals
    }

    /// The MCP tool pins kept beside the tasks, in the same store.
    pub fn pins(&self) -> &PinStore {
        &self.pins
    }

    /// `memory` or `redis`, for logs.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Start a task; the token is returned here only.
    pub async fn start(&self, spec: TaskSpec) -> Result<(TaskView, Secret), TaskError> {
        let (task, token) = match &self.backend {
            Backend::Memory(m) => m.start(spec)?,
            Backend::Redis(r) => r.start(spec).await?,
        };
        let ttl = task
            .expires
            .duration_since(task.created)
            .unwrap_or_default();
        tracing::info!(task = %task.id, workload = %task.workload, ttl = %humantime::format_duration(ttl), "task started");
        Ok((task, token))
    }

    pub async fn end(&self, id: &str) -> Result<TaskView, TaskError> {
        match &self.backend {
            Backend::Memory(m) => m.end(id),
            Backend::Redis(r) => r.end(id).await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<TaskView, TaskError> {
        match &self.backend {
            Backend::Memory(m) => m.get(id),
            Backend::Redis(r) => r.get(id).await,
        }
    }

    /// Newest first.
    pub async fn list(&self) -> Result<Vec<TaskView>, TaskError> {
        let mut all = match &self.backend {
            Backend::Memory(m) => m.list(),
            Backend::Redis(r) => r.list().await?,
        };
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Tasks that have stopped and are still remembered: what a proxy
    /// (re)subscribing must hear, since it may hold their tunnels.
    pub async fn ended_tokens(&self) -> Result<Vec<(String, TokenHash)>, TaskError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.ended_tokens()),
            Backend::Redis(r) => r.ended_tokens().await,
        }
    }

    /// The task behind `token`, if it may carry a request by `workload`
    /// for `action` of risk `class`. Call [`TaskStore::settle`] once policy
    /// has decided.
    pub async fn admit(
        &self,
        token: &TokenHash,
        workload: &str,
        action: &str,
        class: RiskClass,
    ) -> Result<Task, Refused> {
        match &self.backend {
            Backend::Memory(m) => m.admit(token, workload, action),
            Backend::Redis(r) => r.admit(token, workload, action, class).await,
        }
    }

    /// After policy: an allowed request uses one unit of its class's budget
    /// (refused when none is left); a refused one uses none. Without a
    /// budget for the class, nothing is counted.
    pub async fn settle(
        &self,
        task: &Task,
        class: RiskClass,
        allowed: bool,
    ) -> Result<(), Refused> {
        let exhausted = || Err((TaskRefusal::BudgetExhausted, Some(task.record.reference())));
        match (&self.backend, task.budget, allowed) {
            (Backend::Memory(m), _, true) if !m.consume(task, class) => exhausted(),
            (_, Admitted::Exhausted, true) => exhausted(),
            (Backend::Redis(r), Admitted::Taken, false) => {
                r.give_back(task, class).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every task end and expiry from now on, wherever it happened.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskRevoked> {
        self.revoked.subscribe()
    }

    /// `true` while the store can be reached.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }

    /// Announce tasks whose TTL passed, every `interval`, until the store
    /// is dropped. Expired tokens are refused at once regardless; this
    /// bounds how long a tunnel of an expired task may stay open.
    pub fn spawn_sweeper(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.sweep().await;
            }
        });
    }

    /// End (and announce) tasks whose TTL has passed; forget those ended
    /// longer ago than the retention.
    pub async fn sweep(&self) {
        match &self.backend {
            Backend::Memory(m) => m.sweep(),
            Backend::Redis(r) => r.sweep().await,
        }
        self.approvals.sweep().await;
    }
}
