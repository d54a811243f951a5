//! Deciding in this process: Cedar against the snapshot the request was
//! named with, under the task its token admits. The default when no remote
//! decision service is configured, and what `tollgate decision` answers
//! with.

use std::sync::Arc;

use super::snapshot::Snapshot;

use super::outcome::Decision;
use super::request::DecisionRequest;
use super::tasks::TaskRevoked;
use super::{Decider, DecisionFuture};
use crate::decision::state::TaskStore;

pub struct EmbeddedDecider {
    tasks: Arc<TaskStore>,
}

impl EmbeddedDecider {
    pub fn new(tasks: Arc<TaskStore>) -> EmbeddedDecider {
        EmbeddedDecider { tasks }
    }

    pub fn tasks(&self) -> &Arc<TaskStore> {
        &self.tasks
    }

    /// A decision under tasks: the token's task must be known, active, this
    /// workload's and in scope; then policy decides (seeing
    /// `context.task`); then an allowed request uses one unit of the task's
    /// budget for its risk class, if it has one.
    pub async fn decide_in(&self, snapshot: &Snapshot, request: &DecisionRequest) -> Decision {
        let risk = request.context.risk;
        let task = match &request.task {
            None => None,
            Some(token) => {
                let admitted = self
                    .tasks
                    .admit(token, &request.principal, &request.action, risk)
                    .await;
                match admitted {
                    Ok(task) => Some(task),
                    Err((refusal, task)) => return refusal.decision(task),
                }
            }
        };
        // Policies may read `context.task.used`, which changes with every
        // budgeted request: those decisions are never cached.
        let mut decision = match &task {
            Some(t) if t.has_budgets() => snapshot.engine.evaluate_in_task(request, Some(t)),
            t => snapshot
                .decisions
                .decide_in_task(&snapshot.engine, request, t.as_ref()),
        };
        if let Some(task) = task {
            let mut task_ref = task.record.reference();
            task_ref.no_cache = decision.is_allow() && task.has_budget_for(risk);
            if let Err((refusal, task)) = self.tasks.settle(&task, risk, decision.is_allow()).await
            {
                return refusal.decision(task);
            }
            decision.task = Some(task_ref);
        }
        decision
    }
}

impl Decider for EmbeddedDecider {
    fn decide<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> DecisionFuture<'a> {
        Box::pin(self.decide_in(snapshot, request))
    }

    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        self.tasks.subscribe()
    }
}
