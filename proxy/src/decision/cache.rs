//! A bounded cache of decisions keyed by the complete `DecisionRequest`.
//!
//! Sound because a decision is a pure function of the request and the
//! policy set: the context carries everything policies can see (no clock),
//! and each cache belongs to one policy snapshot — a reload starts an empty
//! one, so no decision outlives the policies that made it.

use quick_cache::sync::Cache;

use super::engine::PolicyEngine;
use super::outcome::Decision;
use super::request::DecisionRequest;
use super::tasks::Task;

pub struct DecisionCache {
    entries: Option<Cache<DecisionRequest, Decision>>,
}

impl DecisionCache {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub fn decide(&self, engine: &PolicyEngine, request: &DecisionRequest) -> Decision {
        self.decide_in_task(engine, request, None)
    }

    /// Sound with a task too: the key holds the task token's hash, and a
    /// token names one task for good. Whether the task may still be used
    /// is checked by the caller on every request, outside the cache.
    pub fn decide_in_task(
        &self,
        engine: &PolicyEngine,
        request: &DecisionRequest,
        task: Option<&Task>,
    ) -> Decision {
        let Some(entries) = &self.entries else {
            return engine.evaluate_in_task(request, task);
        };
        if let Some(hit) = entries.get(request) {
            metrics::counter!(crate::telemetry::DECISION_CACHE, "result" => "hit").increment(1);
            return hit;
        }
        metrics::counter!(crate::telemetry::DECISION_CACHE, "result" => "miss").increment(1);
        let decision = engine.evaluate_in_task(request, task);
        entries.insert(request.clone(), decision.clone());
        decision
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
