//! Deciding in this process: Cedar against the snapshot the request was
//! named with, under the task its token admits. The default when no remote
//! decision service is configured, and what `tollgate decision` answers
//! with.

use std::sync::Arc;

use super::snapshot::Snapshot;

use std::time::{Duration, SystemTime};

use super::approvals::{Approval, GateInfo};
use super::outcome::{ApprovalState, ApprovalStatus, Decision, Outcome, Reason};
use super::pins::{ObservedTool, PinEvents};
use super::request::DecisionRequest;
use super::tasks::{Task, TaskRevoked};
use super::{ApprovalFuture, Decider, DecisionFuture, ObserveFuture, ProbeFuture};
use crate::catalog::McpPinning;
use crate::config::EnforcementMode;
use crate::decision::state::TaskStore;
use crate::telemetry;

pub struct EmbeddedDecider {
    tasks: Arc<TaskStore>,
    /// Told of each changed MCP tool (the audit output).
    pin_events: Option<Arc<dyn PinEvents>>,
}

impl EmbeddedDecider {
    pub fn new(tasks: Arc<TaskStore>) -> EmbeddedDecider {
        EmbeddedDecider {
            tasks,
            pin_events: None,
        }
    }

    /// Tell `events` of the MCP tool changes this decider records.
    pub fn with_pin_events(self, events: Arc<dyn PinEvents>) -> EmbeddedDecider {
        EmbeddedDecider {
            pin_events: Some(events),
            ..self
        }
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
        // Report mode is applied here, where policy is evaluated: a proxy
        // deciding remotely follows the decision plane's modes, never its
        // own, so central deny rules stay central.
        let report =
            snapshot.enforcement.mode_for(&request.context.tool) == EnforcementMode::Report;
        if !report {
            if let Some(refused) = self.unpinned(snapshot, request).await {
                return refused;
            }
        }
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
            Some(t) if t.has_budgets() && report => {
                snapshot.engine.evaluate_reporting(request, Some(t))
            }
            Some(t) if t.has_budgets() => snapshot.engine.evaluate_in_task(request, Some(t)),
            t => snapshot
                .decisions
                .decide_in_task(&snapshot.engine, request, t.as_ref(), report),
        };
        if decision.outcome == Outcome::ApprovalRequired {
            decision = self
                .gated(snapshot, request, task.as_ref(), decision, report)
                .await;
        }
        // A reported request is forwarded: it uses the task's budget like
        // any other, and a task out of budget refuses it.
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

impl EmbeddedDecider {
    /// The refusal of an MCP tool call whose tool's definition differs
    /// from its pin, where the catalog enforces pinning. A tool never
    /// listed has no pin to differ from.
    async fn unpinned(&self, snapshot: &Snapshot, request: &DecisionRequest) -> Option<Decision> {
        let name = request.context.mcp_tool.as_deref()?;
        let server = request.context.tool.as_str();
        if snapshot.catalog.mcp_pinning(server) != McpPinning::Enforce {
            return None;
        }
        match self.tasks.pins().get(server, name).await {
            Ok(Some(pin)) if pin.changed() => Some(Decision::deny(
                Reason::McpToolChanged,
                format!(
                    "the MCP server changed the definition of `{name}` since it was pinned; \
                     an operator must accept it: tollgate mcp tools accept {server} {name}"
                ),
            )),
            Ok(_) => None,
            Err(e) => Some(Decision::deny(Reason::StateUnavailable, e.to_string())),
        }
    }

    /// A request an approval gate stopped. Not held yet: answered as is,
    /// and the proxy holds it and asks again with its body's digest. Held:
    /// the approval for this exact call — asked for now if there is none —
    /// decides: pending waits, denied is refused, and approved is decided
    /// again with `context.approved`, so a forbid added since still wins.
    async fn gated(
        &self,
        snapshot: &Snapshot,
        request: &DecisionRequest,
        task: Option<&Task>,
        gate: Decision,
        report: bool,
    ) -> Decision {
        let Some(held) = &request.held else {
            return gate;
        };
        let store = self.tasks.approvals();
        let info = GateInfo {
            policy_ids: gate.policy_ids.clone(),
            message: gate.message.clone(),
        };
        // Twice at most: a single-use approval another request used in
        // between is not current any more, and the second look asks anew.
        for _ in 0..2 {
            let now = SystemTime::now();
            let asked = Approval::ask(request, task, held, &info, store.rules(), now);
            let approval = match store.find_or_ask(asked).await {
                Ok(approval) => approval,
                Err(e) => return Decision::deny(Reason::StateUnavailable, e.to_string()),
            };
            let status = |approval: &Approval| ApprovalStatus {
                id: approval.id.clone(),
                state: approval.state_at(now),
                approver: approval.approver.clone(),
                reason: approval.reason.clone(),
            };
            match approval.state_at(now) {
                ApprovalState::Approved => {
                    let mut approved = snapshot.engine.evaluate_approved(request, task);
                    if report {
                        approved = snapshot.engine.report(approved, request, task, true);
                    }
                    if !approved.is_allow() {
                        return approved;
                    }
                    match store.use_once(&approval.id).await {
                        Ok(true) => {
                            return Decision {
                                approval: Some(status(&approval)),
                                ..approved
                            }
                        }
                        Ok(false) => continue,
                        Err(e) => return Decision::deny(Reason::StateUnavailable, e.to_string()),
                    }
                }
                ApprovalState::Denied => {
                    let message = match approval.reason.as_str() {
                        "" => format!("denied by {}", approval.approver),
                        reason => format!("denied by {}: {reason}", approval.approver),
                    };
                    return Decision {
                        approval: Some(status(&approval)),
                        ..Decision::deny(Reason::ApprovalDenied, message)
                    };
                }
                ApprovalState::Pending | ApprovalState::Expired => {
                    return Decision {
                        approval: Some(status(&approval)),
                        ..gate
                    };
                }
            }
        }
        Decision {
            approval: None,
            ..gate
        }
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

    fn may_allow<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> ProbeFuture<'a> {
        let report =
            snapshot.enforcement.mode_for(&request.context.tool) == EnforcementMode::Report;
        let may = report || snapshot.engine.may_permit(request);
        Box::pin(std::future::ready(Some(may)))
    }

    fn observe_tools<'a>(
        &'a self,
        server: &'a str,
        pinning: McpPinning,
        tools: &'a [ObservedTool],
    ) -> ObserveFuture<'a> {
        Box::pin(async move {
            let changes = self
                .tasks
                .pins()
                .observe(server, tools)
                .await
                .map_err(|e| e.to_string())?;
            for change in &changes {
                tracing::warn!(
                    tool = %server,
                    mcp_tool = %change.name,
                    pinned = %change.pinned,
                    seen = %change.seen,
                    ?pinning,
                    "an MCP tool's definition differs from its pin"
                );
                metrics::counter!(telemetry::MCP_TOOL_CHANGES, "tool" => server.to_string())
                    .increment(1);
                if let Some(events) = &self.pin_events {
                    events.pin_event("mcp_tool_changed", server, change, pinning);
                }
            }
            Ok(changes)
        })
    }

    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        self.tasks.subscribe()
    }

    fn await_approval<'a>(&'a self, id: &'a str, timeout: Duration) -> ApprovalFuture<'a> {
        Box::pin(async move {
            let approval = self.tasks.approvals().await_verdict(id, timeout).await;
            approval.ok().map(|a| ApprovalStatus {
                state: a.state_at(SystemTime::now()),
                id: a.id,
                approver: a.approver,
                reason: a.reason,
            })
        })
    }
}
