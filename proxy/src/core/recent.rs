//! The last decisions this process made, kept in memory for the approval
//! console: the key fields of each audit line, newest last, bounded. The
//! audit file stays the record; this is only what a person glances at.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How many decisions a console can look back on.
pub const RECENT_DECISIONS: usize = 1000;

/// One decision as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentDecision {
    pub time: String,
    pub decision_id: String,
    pub workload: Option<Arc<str>>,
    pub action: Option<Arc<str>>,
    pub resource: Option<String>,
    pub method: String,
    pub host: String,
    /// Already redacted as the audit line has it.
    pub path: String,
    /// As the audit line has it (`would_deny` included).
    pub decision: &'static str,
    pub reason: &'static str,
    pub status: u16,
    pub task: Option<String>,
    pub approval: Option<String>,
    /// Who decided that approval, once someone has.
    pub approver: Option<String>,
}

/// Which decisions a reader wants: substrings of workload and action, and
/// the outcome or reason (`approval_denied` is a deny's reason).
#[derive(Debug, Default)]
pub struct RecentFilter {
    pub workload: String,
    pub action: String,
    pub outcome: String,
}

impl RecentFilter {
    fn matches(&self, d: &RecentDecision) -> bool {
        let has = |field: &Option<Arc<str>>, part: &str| {
            part.is_empty() || field.as_deref().is_some_and(|f| f.contains(part))
        };
        has(&d.workload, &self.workload)
            && has(&d.action, &self.action)
            && (self.outcome.is_empty() || d.decision == self.outcome || d.reason == self.outcome)
    }
}

pub struct RecentDecisions {
    ring: Mutex<VecDeque<RecentDecision>>,
    capacity: usize,
    /// Bumped on every push: a reader that saw this number has seen
    /// everything up to it.
    pushed: AtomicU64,
    changed: tokio::sync::Notify,
}

impl RecentDecisions {
    pub fn new(capacity: usize) -> RecentDecisions {
        RecentDecisions {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            pushed: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// On the audit path: one short lock, no allocation once full.
    pub fn push(&self, decision: RecentDecision) {
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(decision);
        }
        self.pushed.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Newest first, at most `limit`.
    pub fn list(&self, filter: &RecentFilter, limit: usize) -> Vec<RecentDecision> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .rev()
            .filter(|d| filter.matches(d))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Acquire)
    }

    /// Resolves at the next push after it is first polled (or enabled):
    /// check [`RecentDecisions::pushed`] after enabling it, so a push in
    /// between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(n: usize, workload: &str, outcome: &'static str) -> RecentDecision {
        RecentDecision {
            time: String::new(),
            decision_id: n.to_string(),
            workload: Some(workload.into()),
            action: Some("github:pulls.create".into()),
            resource: None,
            method: "POST".into(),
            host: "api.github.com".into(),
            path: "/".into(),
            decision: outcome,
            reason: "",
            status: 200,
            task: None,
            approval: None,
            approver: None,
        }
    }

    #[test]
    fn keeps_the_newest_and_filters() {
        let recent = RecentDecisions::new(3);
        for n in 0..5 {
            let (who, outcome) = if n % 2 == 0 {
                ("spiffe://a/coder", "allow")
            } else {
                ("spiffe://a/other", "deny")
            };
            recent.push(decision(n, who, outcome));
        }
        assert_eq!(recent.pushed(), 5);
        let ids = |filter: &RecentFilter| -> Vec<String> {
            recent
                .list(filter, 10)
                .into_iter()
                .map(|d| d.decision_id)
                .collect()
        };
        assert_eq!(ids(&RecentFilter::default()), ["4", "3", "2"]);
        let coder = RecentFilter {
            workload: "coder".into(),
            ..RecentFilter::default()
        };
        assert_eq!(ids(&coder), ["4", "2"]);
        let denied = RecentFilter {
            outcome: "deny".into(),
            ..RecentFilter::default()
        };
        assert_eq!(ids(&denied), ["3"]);
        let none = RecentFilter {
            action: "slack:".into(),
            ..RecentFilter::default()
        };
        assert!(ids(&none).is_empty());
    }
}
