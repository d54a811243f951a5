//! Approvals in the state store, beside the tasks they may be bound to:
//! in this process's memory, or in Redis so that a verdict given on one
//! replica releases a request held behind another.
//!
//! Every change is announced on [`ApprovalStore::subscribe`], wherever it
//! happened: that stream is what holding proxies wait on (never polling)
//! and what `WatchApprovals` and the console follow. The webhook and the
//! metrics hear only the changes made through this store, so a change is
//! posted and counted once however many replicas relay it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use crate::decision::approvals::{
    Approval, ApprovalError, ApprovalEvent, ApprovalEventKind, ApprovalRules, ApprovalState,
    Verdict,
};
use crate::decision::tasks::{unix_ms, RETENTION};
use crate::decision::webhook::Webhook;

use super::redis::RedisApprovals;

/// Changes a watcher may fall behind by before it must list again.
pub(super) const EVENT_BACKLOG: usize = 4096;

pub struct ApprovalStore {
    backend: Backend,
    events: broadcast::Sender<ApprovalEvent>,
    rules: ApprovalRules,
    /// The store's health: after it was lost, changes may have been missed.
    health: watch::Receiver<bool>,
    /// Memory is always there (see `TaskStore`).
    _always_up: Option<watch::Sender<bool>>,
    /// Told of the changes made through this store only: every replica
    /// hears every change, and each must be posted once.
    webhook: Option<Webhook>,
    /// Holding proxies, by the approval they wait for.
    waiters: Arc<Waiters>,
}

/// Each backend announces its own changes on `events`: memory as it makes
/// them, Redis by publishing from the script that made them, which every
/// replica (this one too) relays to its own `events`.
enum Backend {
    Memory(MemoryApprovals),
    Redis(RedisApprovals),
}

impl ApprovalStore {
    pub fn in_memory(rules: ApprovalRules) -> ApprovalStore {
        let events = broadcast::channel(EVENT_BACKLOG).0;
        let (always_up, health) = watch::channel(true);
        ApprovalStore {
            backend: Backend::Memory(MemoryApprovals {
                inner: Mutex::default(),
                events: events.clone(),
            }),
            events,
            rules,
            health,
            _always_up: Some(always_up),
            webhook: None,
            waiters: Arc::default(),
        }
    }

    /// Approvals in Redis; `events` is the sender its connection relays
    /// the announcements to, `health` its health.
    pub(super) fn redis(
        rules: ApprovalRules,
        redis: RedisApprovals,
        events: broadcast::Sender<ApprovalEvent>,
        health: watch::Receiver<bool>,
    ) -> ApprovalStore {
        ApprovalStore {
            backend: Backend::Redis(redis),
            events,
            rules,
            health,
            _always_up: None,
            webhook: None,
            waiters: Arc::default(),
        }
    }

    /// Notify `webhook` of every change made through this store.
    pub fn notify(&mut self, webhook: Webhook) {
        self.webhook = Some(webhook);
    }

    pub fn rules(&self) -> &ApprovalRules {
        &self.rules
    }

    pub(super) fn set_rules(&mut self, rules: ApprovalRules) {
        self.rules = rules;
    }

    /// The approval that answers `asked`'s call now (pending, usable, or a
    /// denial that still stands), or `asked` itself, stored and announced
    /// as requested when there is none. One step, so two requests for the
    /// same call never ask twice.
    pub async fn find_or_ask(&self, asked: Approval) -> Result<Approval, ApprovalError> {
        let now = SystemTime::now();
        let (approval, new) = match &self.backend {
            Backend::Memory(m) => m.find_or_ask(asked, now),
            Backend::Redis(r) => r.find_or_ask(asked, now).await?,
        };
        if new {
            tracing::info!(
                approval = %approval.id, workload = %approval.workload, action = %approval.action,
                resource = %approval.resource, "approval requested"
            );
            self.made(&approval, ApprovalEventKind::Requested);
        }
        Ok(approval)
    }

    /// Count one use of an approved approval. `false`: it may not be used
    /// (any more): single use and used, or no longer approved.
    pub async fn use_once(&self, id: &str) -> Result<bool, ApprovalError> {
        let now = SystemTime::now();
        let used = match &self.backend {
            Backend::Memory(m) => m.use_once(id, now),
            Backend::Redis(r) => r.use_once(id, now).await?,
        };
        if used {
            metrics::counter!(crate::telemetry::APPROVAL_EVENTS, "event" => "used").increment(1);
        }
        Ok(used)
    }

    /// An approver's verdict on a pending approval.
    pub async fn decide(&self, id: &str, verdict: &Verdict) -> Result<Approval, ApprovalError> {
        let now = SystemTime::now();
        let approval = match &self.backend {
            Backend::Memory(m) => m.decide(id, verdict, &self.rules, now)?,
            Backend::Redis(r) => {
                // The script checks the state; who asked never changes, so
                // it is checked here, as `Approval::decide` does in memory.
                let asked = r.get(id).await?;
                if asked.workload == verdict.approver {
                    return Err(ApprovalError::OwnWorkload { id: asked.id });
                }
                r.decide(id, verdict, &self.rules, now).await?
            }
        };
        tracing::info!(
            approval = %approval.id, approver = %verdict.approver, reason = %verdict.reason,
            verdict = approval.state.as_str(), workload = %approval.workload,
            action = %approval.action, "approval decided"
        );
        let kind = if verdict.approve {
            ApprovalEventKind::Approved
        } else {
            ApprovalEventKind::Denied
        };
        self.made(&approval, kind);
        Ok(approval)
    }

    pub async fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        match &self.backend {
            Backend::Memory(m) => m.get(id),
            Backend::Redis(r) => r.get(id).await,
        }
    }

    /// Newest first; `state` filters by the state at this moment.
    pub async fn list(&self, state: Option<ApprovalState>) -> Result<Vec<Approval>, ApprovalError> {
        let mut all = match &self.backend {
            Backend::Memory(m) => m.list(),
            Backend::Redis(r) => r.list().await?,
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

    /// `true` while the store can be reached. Changes made while it could
    /// not be are never heard on [`ApprovalStore::subscribe`]: whoever
    /// follows it reads again when it is back.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.health.clone()
    }

    /// Wait up to `timeout` for `id` to stop being pending; the approval
    /// as it is then (still pending when the time ran out).
    ///
    /// A waiter is woken only for its own approval (or when changes may
    /// have been missed), then reads it again: a thousand requests held
    /// cost a thousand wake-ups for a thousand verdicts, not a million.
    pub async fn await_verdict(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Approval, ApprovalError> {
        self.waiters.follow(self.subscribe(), self.health());
        let waiting = self.waiters.register(id);
        let mut deadline = None;
        loop {
            // Armed before reading, so a verdict in between still wakes it.
            let woken = waiting.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let approval = self.get(id).await?;
            if approval.state_at(SystemTime::now()) != ApprovalState::Pending {
                return Ok(approval);
            }
            let until = *deadline.get_or_insert_with(|| {
                let remaining = Duration::from_millis(
                    u64::try_from(approval.expires_ms - unix_ms(SystemTime::now())).unwrap_or(0),
                );
                Instant::now() + timeout.min(remaining)
            });
            if tokio::time::timeout_at(until, woken).await.is_err() {
                return self.get(id).await;
            }
        }
    }

    /// Mark pending approvals past their expiry expired (announcing each)
    /// and forget approvals stopped longer ago than the retention.
    pub async fn sweep(&self) {
        let now = SystemTime::now();
        let expired = match &self.backend {
            Backend::Memory(m) => m.sweep(now),
            Backend::Redis(r) => r.sweep(now).await,
        };
        for id in expired {
            tracing::info!(approval = %id, "approval expired undecided");
            if self.webhook.is_some() {
                if let Ok(approval) = self.get(&id).await {
                    self.made(&approval, ApprovalEventKind::Expired);
                }
            }
        }
    }

    /// A change made here: counted, and told to the webhook.
    fn made(&self, approval: &Approval, kind: ApprovalEventKind) {
        metrics::counter!(crate::telemetry::APPROVAL_EVENTS, "event" => kind.as_str()).increment(1);
        if let Some(webhook) = &self.webhook {
            webhook.notify(&approval.event(kind));
        }
    }
}

/// What ends a wait for a verdict: the verdict, or the approval expiring
/// undecided. Not its use, and not its request: with Redis, a request's
/// own announcement reaches this replica's subscribers a little after it
/// was made, and may arrive once the holding proxy already waits.
fn ends_the_wait(kind: ApprovalEventKind) -> bool {
    matches!(
        kind,
        ApprovalEventKind::Approved | ApprovalEventKind::Denied | ApprovalEventKind::Expired
    )
}

/// Who waits for which approval, and the one task that wakes them from
/// the store's stream of changes.
#[derive(Default)]
struct Waiters {
    by_id: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    following: std::sync::OnceLock<()>,
}

/// One waiter's place; leaving it (dropped) unregisters it.
struct Waiting<'w> {
    waiters: &'w Waiters,
    id: String,
    notify: Arc<Notify>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: &str) -> Waiting<'_> {
        let mut all = self.lock();
        let entry = all
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiting {
            waiters: self,
            id: id.to_string(),
            notify: entry.0.clone(),
        }
    }

    fn wake(&self, id: &str) {
        if let Some((notify, _)) = self.lock().get(id) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for (notify, _) in self.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Start the task that wakes waiters, once (it needs a runtime, which
    /// a waiter has). It ends when the store's stream does.
    fn follow(
        self: &Arc<Self>,
        mut events: broadcast::Receiver<ApprovalEvent>,
        mut health: watch::Receiver<bool>,
    ) {
        let waiters = Arc::downgrade(self);
        self.following.get_or_init(|| {
            tokio::spawn(async move {
                loop {
                    let woke = tokio::select! {
                        event = events.recv() => match event {
                            Ok(event) if ends_the_wait(event.kind) => Some(event.approval.id),
                            Ok(_) => continue,
                            // Missed changes: everyone reads again.
                            Err(broadcast::error::RecvError::Lagged(_)) => None,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        changed = health.changed() => match changed {
                            // Back after it was lost: changes may have been missed.
                            Ok(()) if *health.borrow_and_update() => None,
                            Ok(()) => continue,
                            Err(_) => std::future::pending().await,
                        },
                    };
                    let Some(waiters) = waiters.upgrade() else {
                        return;
                    };
                    match woke {
                        Some(id) => waiters.wake(&id),
                        None => waiters.wake_all(),
                    }
                }
            });
        });
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut all = self.waiters.lock();
        if let Some(entry) = all.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                all.remove(&self.id);
            }
        }
    }
}

struct MemoryApprovals {
    inner: Mutex<Approvals>,
    events: broadcast::Sender<ApprovalEvent>,
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

    fn announce(&self, approval: &Approval, kind: ApprovalEventKind) {
        // No watcher is not an error.
        let _ = self.events.send(approval.event(kind));
    }

    fn find_or_ask(&self, asked: Approval, now: SystemTime) -> (Approval, bool) {
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
        self.announce(&asked, ApprovalEventKind::Requested);
        (asked, true)
    }

    fn use_once(&self, id: &str, now: SystemTime) -> bool {
        let mut all = self.lock();
        let Some(approval) = all.by_id.get_mut(id).filter(|a| a.usable(now)) else {
            return false;
        };
        approval.uses += 1;
        self.announce(approval, ApprovalEventKind::Used);
        true
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
        let kind = if verdict.approve {
            ApprovalEventKind::Approved
        } else {
            ApprovalEventKind::Denied
        };
        self.announce(approval, kind);
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

    fn sweep(&self, now: SystemTime) -> Vec<String> {
        let mut all = self.lock();
        let mut expired = Vec::new();
        for approval in all.by_id.values_mut() {
            if approval.state == ApprovalState::Pending
                && approval.state_at(now) == ApprovalState::Expired
            {
                approval.state = ApprovalState::Expired;
                self.announce(approval, ApprovalEventKind::Expired);
                expired.push(approval.id.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn rules(reusable: bool) -> ApprovalRules {
        ApprovalRules { ttl: TTL, reusable }
    }

    /// A pending approval of the call `binding`, asked at `now`.
    fn asked(binding: &str, now: SystemTime, reusable: bool) -> Approval {
        Approval {
            id: format!("apr_{}", uuid::Uuid::now_v7().simple()),
            binding: binding.into(),
            workload: "spiffe://d/ns/a/sa/coder".into(),
            task_id: String::new(),
            task_purpose: String::new(),
            task_expires_ms: 0,
            action: "demo:deploy".into(),
            resource: "demo/api".into(),
            method: "POST".into(),
            host: "demo.test".into(),
            port: 443,
            path: "/deploy".into(),
            query: String::new(),
            body_sha256: "00".repeat(32),
            policy_ids: vec!["gate".into()],
            message: String::new(),
            state: ApprovalState::Pending,
            created_ms: unix_ms(now),
            expires_ms: unix_ms(now + TTL),
            approver: String::new(),
            reason: String::new(),
            decided_ms: 0,
            uses: 0,
            reusable,
        }
    }

    fn verdict(approve: bool) -> Verdict {
        Verdict {
            approve,
            approver: "ana".into(),
            reason: "checked".into(),
        }
    }

    fn memory() -> (MemoryApprovals, broadcast::Receiver<ApprovalEvent>) {
        let (events, heard) = broadcast::channel(EVENT_BACKLOG);
        let store = MemoryApprovals {
            inner: Mutex::default(),
            events,
        };
        (store, heard)
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_verdict_not_at_the_requests_late_announcement() {
        let store = Arc::new(ApprovalStore::in_memory(rules(false)));
        let now = SystemTime::now();
        let a = store.find_or_ask(asked("call", now, false)).await.unwrap();
        let waiter = {
            let (store, id) = (store.clone(), a.id.clone());
            tokio::spawn(async move { store.await_verdict(&id, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The request's own announcement, heard late (as with Redis).
        store
            .events
            .send(a.event(ApprovalEventKind::Requested))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a late announcement ended the wait");
        store.decide(&a.id, &verdict(true)).await.unwrap();
        let decided = waiter.await.unwrap().unwrap();
        assert_eq!(decided.state, ApprovalState::Approved);
        assert!(store.waiters.lock().is_empty(), "the waiter left its place");
    }

    fn kinds(heard: &mut broadcast::Receiver<ApprovalEvent>) -> Vec<&'static str> {
        std::iter::from_fn(|| heard.try_recv().ok())
            .map(|e| e.kind.as_str())
            .collect()
    }

    #[test]
    fn an_approval_lets_its_call_through_once_and_the_next_asks_anew() {
        let (m, mut heard) = memory();
        let now = SystemTime::now();
        let (first, new) = m.find_or_ask(asked("call", now, false), now);
        assert!(new);
        let (again, new) = m.find_or_ask(asked("call", now, false), now);
        assert_eq!((again.id.as_str(), new), (first.id.as_str(), false));
        let (other, new) = m.find_or_ask(asked("another call", now, false), now);
        assert!(new && other.id != first.id);

        m.decide(&first.id, &verdict(true), &rules(false), now)
            .unwrap();
        let (approved, _) = m.find_or_ask(asked("call", now, false), now);
        assert_eq!(approved.id, first.id);
        assert_eq!(approved.state, ApprovalState::Approved);
        assert!(m.use_once(&first.id, now));
        assert!(!m.use_once(&first.id, now), "used twice");
        let (next, new) = m.find_or_ask(asked("call", now, false), now);
        assert!(
            new && next.id != first.id,
            "the used approval answered again"
        );
        assert_eq!(
            kinds(&mut heard),
            ["requested", "requested", "approved", "used", "requested"]
        );
    }

    #[test]
    fn a_reusable_approval_lets_its_call_through_until_it_expires() {
        let (m, _heard) = memory();
        let now = SystemTime::now();
        let (a, _) = m.find_or_ask(asked("call", now, true), now);
        m.decide(&a.id, &verdict(true), &rules(true), now).unwrap();
        for _ in 0..3 {
            assert!(m.use_once(&a.id, now));
        }
        let (same, new) = m.find_or_ask(asked("call", now, true), now);
        assert_eq!((same.id, same.uses, new), (a.id.clone(), 3, false));
        let later = now + TTL;
        assert!(!m.use_once(&a.id, later), "used after it expired");
        assert!(m.find_or_ask(asked("call", later, true), later).1);
    }

    #[test]
    fn a_denial_answers_its_call_until_it_expires() {
        let (m, _heard) = memory();
        let now = SystemTime::now();
        let (a, _) = m.find_or_ask(asked("call", now, false), now);
        let denied = m
            .decide(&a.id, &verdict(false), &rules(false), now)
            .unwrap();
        assert_eq!(denied.state, ApprovalState::Denied);
        assert!(!m.use_once(&a.id, now));
        let soon = now + TTL / 2;
        let (standing, new) = m.find_or_ask(asked("call", soon, false), soon);
        assert_eq!((standing.id.as_str(), new), (a.id.as_str(), false));
        let later = now + TTL;
        let (fresh, new) = m.find_or_ask(asked("call", later, false), later);
        assert!(new && fresh.id != a.id);
    }

    #[test]
    fn only_a_pending_approval_can_be_decided_and_only_once() {
        let (m, _heard) = memory();
        let now = SystemTime::now();
        let (a, _) = m.find_or_ask(asked("call", now, false), now);
        m.decide(&a.id, &verdict(true), &rules(false), now).unwrap();
        let again = m.decide(&a.id, &verdict(false), &rules(false), now);
        assert!(
            matches!(
                again,
                Err(ApprovalError::AlreadyDecided {
                    state: "approved",
                    ..
                })
            ),
            "{again:?}"
        );
        let (b, _) = m.find_or_ask(asked("other", now, false), now);
        let late = m.decide(&b.id, &verdict(true), &rules(false), now + TTL);
        assert!(
            matches!(
                late,
                Err(ApprovalError::AlreadyDecided {
                    state: "expired",
                    ..
                })
            ),
            "{late:?}"
        );
        let unknown = m.decide("apr_none", &verdict(true), &rules(false), now);
        assert!(matches!(unknown, Err(ApprovalError::NotFound(_))));
    }

    #[test]
    fn an_undecided_approval_expires_once_and_is_forgotten_after_the_retention() {
        let (m, mut heard) = memory();
        let now = SystemTime::now();
        let (a, _) = m.find_or_ask(asked("call", now, false), now);
        assert!(m.sweep(now).is_empty());
        let expiry = now + TTL;
        assert_eq!(m.sweep(expiry), vec![a.id.clone()]);
        assert!(m.sweep(expiry).is_empty(), "announced twice");
        assert_eq!(m.get(&a.id).unwrap().state, ApprovalState::Expired);
        assert_eq!(kinds(&mut heard), ["requested", "expired"]);

        m.sweep(expiry + RETENTION + Duration::from_millis(1));
        assert!(matches!(m.get(&a.id), Err(ApprovalError::NotFound(_))));
        assert!(m.lock().by_binding.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_hears_the_verdict_as_it_is_given() {
        let store = Arc::new(ApprovalStore::in_memory(rules(false)));
        let now = SystemTime::now();
        let a = store.find_or_ask(asked("call", now, false)).await.unwrap();
        let approver = store.clone();
        let id = a.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            approver.decide(&id, &verdict(true)).await.unwrap();
        });
        let started = Instant::now();
        let waited = store.await_verdict(&a.id, Duration::from_secs(30)).await;
        assert_eq!(waited.unwrap().state, ApprovalState::Approved);
        assert!(started.elapsed() < Duration::from_secs(5));

        // Already decided: answered at once; unknown: not found.
        let waited = store.await_verdict(&a.id, Duration::from_secs(30)).await;
        assert_eq!(waited.unwrap().state, ApprovalState::Approved);
        let unknown = store
            .await_verdict("apr_none", Duration::from_secs(1))
            .await;
        assert!(matches!(unknown, Err(ApprovalError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_waiter_reads_again_when_the_store_is_back_and_otherwise_times_out() {
        // A verdict announced where this replica could not hear it, as one
        // published while its subscription was down.
        let (unheard, _) = broadcast::channel(EVENT_BACKLOG);
        let (up, health) = watch::channel(true);
        let store = Arc::new(ApprovalStore {
            backend: Backend::Memory(MemoryApprovals {
                inner: Mutex::default(),
                events: unheard,
            }),
            events: broadcast::channel(EVENT_BACKLOG).0,
            rules: rules(false),
            health,
            _always_up: None,
            webhook: None,
            waiters: Arc::default(),
        });
        let now = SystemTime::now();
        let a = store.find_or_ask(asked("call", now, false)).await.unwrap();
        let pending = store
            .await_verdict(&a.id, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(
            pending.state,
            ApprovalState::Pending,
            "waited past its time"
        );

        let waiter = {
            let store = store.clone();
            let id = a.id.clone();
            tokio::spawn(async move { store.await_verdict(&id, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        up.send_replace(false);
        store.decide(&a.id, &verdict(false)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "answered while the store was lost");
        let started = Instant::now();
        up.send_replace(true);
        let waited = waiter.await.unwrap().unwrap();
        assert_eq!(waited.state, ApprovalState::Denied);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
