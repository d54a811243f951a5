//! Authorize: build the `DecisionRequest` and ask the decider. The decider
//! never errors; whatever goes wrong inside it comes back as a deny.

use std::time::Instant;

use http::Method;

use crate::decision::{Decider, Decision, DecisionRequest, RequestContext, TokenHash};

use super::classify::Named;
use super::RequestTarget;

pub fn decision_request(
    workload: &str,
    named: &Named,
    target: &RequestTarget,
    method: &Method,
    path: &str,
    task: Option<TokenHash>,
) -> DecisionRequest {
    DecisionRequest {
        principal: workload.to_string(),
        action: named.action.to_string(),
        resource: named.resource.clone(),
        context: RequestContext {
            method: method.as_str().to_string(),
            host: target.host.clone(),
            port: target.port,
            path: path.to_string(),
            tool: named.tool.as_deref().unwrap_or("").to_string(),
            risk: named.risk.to_string(),
            sensitivity: named.sensitivity.to_string(),
        },
        task,
    }
}

/// Decide and report how long it took, in microseconds.
pub async fn authorize(decider: &dyn Decider, request: &DecisionRequest) -> (Decision, u64) {
    let started = Instant::now();
    let decision = decider.decide(request).await;
    let elapsed = started.elapsed();
    metrics::histogram!("tollgate_decision_duration_seconds").record(elapsed.as_secs_f64());
    (decision, elapsed.as_micros() as u64)
}
