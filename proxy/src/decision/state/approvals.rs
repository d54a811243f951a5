//! Approvals in the state store, beside the tasks they may be bound to:
//! in this process's memory, or in Redis so that a verdict given on one
//! replica releases a request held behind another.
//!
//! Every change is announced on [`ApprovalStore::subscribe`], wherever it
//! happened: that stream is what holding proxies wait on (never polling),
//! what `WatchApprovals` and the console follow, and what the webhook
//! reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::decision::approvals::{
    Approval, ApprovalError, ApprovalEvent, ApprovalEventKind, ApprovalRules, ApprovalState,
    Verdict,
};
use crate::decision::tasks::{unix_ms, RETENTION};
use crate::decision::webhook::Webhook;

/// Changes a watcher may fall behind by before it must list again.
const EVENT_BACKLOG: usize = 4096;

pub struct ApprovalStore {
    backend: Backend,
    events: broadcast::Sender<ApprovalEvent>,
    rules: ApprovalRules,
    /// Told of the changes made here (not those relayed from other
    /// replicas, which tell it themselves).
    webhook: Option<Webhook>,
}

enum Backend {
    Memory(MemoryApprovals),
}

impl ApprovalStore {
    pub fn in_memory(rules: ApprovalRules) -> ApprovalStore {
        ApprovalStore {
            backend: Backend::Memory(MemoryApprovals::default()),
            events: broadcast::channel(EVENT_BACKLOG).0,
            rules,
            webhook: None,
        }
    }

    /// Notify `webhook` of every change made through this store.
    pub fn notify(&mut self, webhook: Webhook) {
        self.webhook = Some(webhook);
    }

    pub fn rules(&self) -> &ApprovalRules {
        &self.rules
    }

    /// The approval that answers `asked`'s call now (pending, usable, or a
    /// denial that still stands), or `asked` itself, stored and announced
    /// as requested when there is none. One step, so two requests for the
    /// same call never ask twice.
    pub async fn find_or_ask(&self, asked: Approval) -> Result<Approval, ApprovalError> {
        let (approval, new) = match &self.backend {
            Backend::Memory(m) => m.find_or_ask(asked),
        };
        if new {
            tracing::info!(
                approval = %approval.id, workload = %approval.workload, action = %approval.action,
                resource = %approval.resource, "approval requested"
            );
            self.announce(&approval, ApprovalEventKind::Requested);
        }
        Ok(approval)
    }

    /// Count one use of an approved approval. `false`: it may not be used
    /// (any more): single use and used, or no longer approved.
    pub async fn use_once(&self, id: &str) -> Result<bool, ApprovalError> {
        let used = match &self.backend {
            Backend::Memory(m) => m.use_once(id, SystemTime::now()),
        };
        if let Some(approval) = &used {
            self.announce(approval, ApprovalEventKind::Used);
        }
        Ok(used.is_some())
    }

    /// An approver's verdict on a pending approval.
    pub async fn decide(&self, id: &str, verdict: &Verdict) -> Result<Approval, ApprovalError> {
        let approval = match &self.backend {
            Backend::Memory(m) => m.decide(id, verdict, &self.rules, SystemTime::now())?,
        };
        let kind = if verdict.approve {
            ApprovalEventKind::Approved
        } else {
            ApprovalEventKind::Denied
        };
        tracing::info!(
            approval = %approval.id, approver = %verdict.approver, reason = %verdict.reason,
            verdict = kind.as_str(), workload = %approval.workload, action = %approval.action,
            "approval decided"
        );
        self.announce(&approval, kind);
        Ok(approval)
    }

    pub async fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        match &self.backend {
            Backend::Memory(m) => m.get(id),
        }
    }

    /// Newest first; `state` filters by the state at this moment.
    pub async fn list(&self, state: Option<ApprovalState>) -> Result<Vec<Approval>, ApprovalError> {
        let mut all = match &self.backend {
            Backend::Memory(m) => m.list(),
        };
        let now = SystemTime::now();
        all.retain(|a| state.is_none_or(|s| a.state_at(now) == s));
        all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Every change from now on, wherever it happened.
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.events.subscribe()
    }

    /// Wait up to `timeout` for `id` to stop being pending; the approval
    /// as it is then (still pending when the time ran out).
    pub async fn await_verdict(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Approval, ApprovalError> {
        // Subscribed before reading, so a verdict in between is heard.
        let mut events = self.subscribe();
        let approval = self.get(id).await?;
        if approval.state_at(SystemTime::now()) != ApprovalState::Pending {
            return Ok(approval);
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(event)
                        if event.approval.id == id && event.kind != ApprovalEventKind::Used =>
                    {
                        return Some(event.approval);
                    }
                    Ok(_) => {}
                    // Missed events: read it again rather than guess.
                    Err(broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        let remaining = Duration::from_millis(
            u64::try_from(approval.expires_ms - unix_ms(SystemTime::now())).unwrap_or(0),
        );
        match tokio::time::timeout(timeout.min(remaining), wait).await {
            Ok(Some(decided)) => Ok(decided),
            _ => self.get(id).await,
        }
    }

    /// Mark pending approvals past their expiry expired (announcing each)
    /// and forget approvals stopped longer ago than the retention.
    pub async fn sweep(&self) {
        let expired = match &self.backend {
            Backend::Memory(m) => m.sweep(SystemTime::now()),
        };
        for approval in expired {
            tracing::info!(approval = %approval.id, "approval expired undecided");
            self.announce(&approval, ApprovalEventKind::Expired);
        }
    }

    fn announce(&self, approval: &Approval, kind: ApprovalEventKind) {
        let event = approval.event(kind);
        if let Some(webhook) = &self.webhook {
            webhook.notify(&event);
        }
        // No watcher is not an error.
        let _ = self.events.send(event);
    }
}

#[derive(Default)]
struct MemoryApprovals {
    inner: Mutex<Approvals>,
}

#[derive(Default)]
struct Approvals {
    by_id: HashMap<String, Approval>,
    /// Binding → the approval that answers that call now.
    by_binding: HashMap<String, String>,
}

impl MemoryApprovals {
    fn lock(&self) -> std::sync::MutexGuard<'_, Approvals> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find_or_ask(&self, asked: Approval) -> (Approval, bool) {
        let now = SystemTime::now();
        let mut all = self.lock();
        let current = all
            .by_binding
            .get(&asked.binding)
            .and_then(|id| all.by_id.get(id))
            .filter(|a| a.current(now))
            .cloned();
        if let Some(current) = current {
            return (current, false);
        }
        all.by_binding
            .insert(asked.binding.clone(), asked.id.clone());
        all.by_id.insert(asked.id.clone(), asked.clone());
        (asked, true)
    }

    fn use_once(&self, id: &str, now: SystemTime) -> Option<Approval> {
        let mut all = self.lock();
        let approval = all.by_id.get_mut(id).filter(|a| a.usable(now))?;
        approval.uses += 1;
        Some(approval.clone())
    }

    fn decide(
        &self,
        id: &str,
        verdict: &Verdict,
        rules: &ApprovalRules,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        let mut all = self.lock();
        let approval = all
            .by_id
            .get_mut(id)
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        approval.decide(verdict, rules, now)?;
        Ok(approval.clone())
    }

    fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        self.lock()
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))
    }

    fn list(&self) -> Vec<Approval> {
        self.lock().by_id.values().cloned().collect()
    }

    fn sweep(&self, now: SystemTime) -> Vec<Approval> {
        let mut all = self.lock();
        let mut expired = Vec::new();
        for approval in all.by_id.values_mut() {
            if approval.state == ApprovalState::Pending
                && approval.state_at(now) == ApprovalState::Expired
            {
                approval.state = ApprovalState::Expired;
                expired.push(approval.clone());
            }
        }
        let forget_before = unix_ms(now) - i64::try_from(RETENTION.as_millis()).unwrap_or(0);
        let old: Vec<(String, String)> = all
            .by_id
            .values()
            .filter(|a| a.expires_ms < forget_before)
            .map(|a| (a.id.clone(), a.binding.clone()))
            .collect();
        for (id, binding) in old {
            all.by_id.remove(&id);
            if all.by_binding.get(&binding) == Some(&id) {
                all.by_binding.remove(&binding);
            }
        }
        expired
    }
}
