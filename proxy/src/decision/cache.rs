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
        self.decide_in_task(engine, request, None, false)
    }

    /// Sound with a task too: the key holds the task token's hash, and a
    /// token names one task for good. Whether the task may still be used
    /// is checked by the caller on every request, outside the cache.
    ///
    /// `report`: the request's tool is in report mode. Sound without being
    /// in the key: the mode comes from the snapshot this cache belongs to
    /// and the tool in the request, so an enforced and a reported answer
    /// never meet in one cache — a reload that changes the mode starts
    /// another.
    pub fn decide_in_task(
        &self,
        engine: &PolicyEngine,
        request: &DecisionRequest,
        task: Option<&Task>,
        report: bool,
    ) -> Decision {
        let evaluate = || match report {
            true => engine.evaluate_reporting(request, task),
            false => engine.evaluate_in_task(request, task),
        };
        let Some(entries) = &self.entries else {
            return evaluate();
        };
        if let Some(hit) = entries.get(request) {
            metrics::counter!(crate::telemetry::DECISION_CACHE, "result" => "hit").increment(1);
            return hit;
        }
        metrics::counter!(crate::telemetry::DECISION_CACHE, "result" => "miss").increment(1);
        let decision = evaluate();
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
