//! tollgate's own gRPC API (`proto/tollgate/authz/v1`) and the conversions
//! between its messages and the decision types. A message that cannot be
//! converted is an `invalid_argument`, never a guess.

pub mod pb {
    tonic::include_proto!("tollgate.authz.v1");
}

/// For gRPC server reflection (`grpcurl list`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tollgate_descriptor");

use super::approvals::{Approval, BodyDigest, HeldCall};
use super::outcome::{ApprovalState, ApprovalStatus, Decision, Outcome, Reason, TaskRef};
use super::pins::ToolPin;
use super::request::{DecisionRequest, RequestContext};
use super::tasks::{from_unix_ms, unix_ms, TaskView, TokenHash};
use std::sync::Arc;

use crate::catalog::RiskClass;
use crate::identity::{Attributes, IdentitySource};

impl From<&DecisionRequest> for pb::DecideRequest {
    fn from(r: &DecisionRequest) -> pb::DecideRequest {
        let c = &r.context;
        pb::DecideRequest {
            principal: r.principal.clone(),
            action: r.action.clone(),
            resource: r.resource.clone(),
            context: Some(pb::RequestContext {
                method: c.method.clone(),
                host: c.host.clone(),
                port: u32::from(c.port),
                path: c.path.clone(),
                tool: c.tool.clone(),
                risk: c.risk.as_str().to_string(),
                sensitivity: c.sensitivity.clone(),
                arguments_json: c.arguments.as_deref().unwrap_or_default().to_string(),
                mcp_tool: c.mcp_tool.as_deref().unwrap_or_default().to_string(),
            }),
            task_token_sha256: r.task.map(|h| h.0.to_vec()).unwrap_or_default(),
            identity: Some(pb::Identity {
                source: r.attributes.source.as_str().to_string(),
                trust_domain: r.attributes.trust_domain.clone(),
                namespace: r.attributes.namespace.clone(),
                service_account: r.attributes.service_account.clone(),
                pod: r.attributes.pod.clone(),
                claims: r.attributes.claims.clone().into_iter().collect(),
            }),
            held: r.held.as_ref().map(|h| pb::HeldCall {
                body_sha256: h.body.0.to_vec(),
                query: h.query.clone(),
            }),
            probe: false,
        }
    }
}

impl TryFrom<pb::DecideRequest> for DecisionRequest {
    type Error = String;

    fn try_from(r: pb::DecideRequest) -> Result<DecisionRequest, String> {
        let c = r.context.ok_or("context is required")?;
        let port = u16::try_from(c.port).map_err(|_| format!("port {} is out of range", c.port))?;
        if r.principal.is_empty() || r.action.is_empty() {
            return Err("principal and action are required".into());
        }
        let risk = RiskClass::from_name(&c.risk)
            .ok_or_else(|| format!("risk `{}` is not a risk class", c.risk))?;
        let task = match r.task_token_sha256.len() {
            0 => None,
            _ => Some(
                TokenHash::from_slice(&r.task_token_sha256)
                    .ok_or("task_token_sha256 must be 32 bytes")?,
            ),
        };
        let attributes = match r.identity {
            None => Attributes::of_name(IdentitySource::Static, &r.principal),
            Some(i) => Attributes {
                source: IdentitySource::parse(&i.source)
                    .ok_or_else(|| format!("identity source `{}` is not known", i.source))?,
                trust_domain: i.trust_domain,
                namespace: i.namespace,
                service_account: i.service_account,
                pod: i.pod,
                claims: i.claims.into_iter().collect(),
            },
        };
        let held = r
            .held
            .map(|h| {
                Ok::<_, String>(HeldCall {
                    body: BodyDigest::from_slice(&h.body_sha256)
                        .ok_or("held.body_sha256 must be 32 bytes")?,
                    query: h.query,
                })
            })
            .transpose()?;
        Ok(DecisionRequest {
            attributes: Arc::new(attributes),
            principal: r.principal,
            action: r.action,
            resource: r.resource,
            context: RequestContext {
                method: c.method,
                host: c.host,
                port,
                path: c.path,
                tool: c.tool,
                risk,
                sensitivity: c.sensitivity,
                arguments: (!c.arguments_json.is_empty()).then(|| Arc::from(c.arguments_json)),
                mcp_tool: (!c.mcp_tool.is_empty()).then(|| Arc::from(c.mcp_tool)),
            },
            task,
            held,
        })
    }
}

impl Decision {
    pub fn to_pb(&self, decision_id: &str, policy_epoch: u64) -> pb::DecideResponse {
        pb::DecideResponse {
            outcome: match self.outcome {
                Outcome::Allow => pb::Outcome::Allow,
                Outcome::Deny => pb::Outcome::Deny,
                Outcome::ApprovalRequired => pb::Outcome::ApprovalRequired,
            } as i32,
            reason: self.reason.as_str().to_string(),
            message: self.message.clone(),
            policy_ids: self.policy_ids.clone(),
            decision_id: decision_id.to_string(),
            credential: self.credential.clone().unwrap_or_default(),
            policy_epoch,
            task_id: self.task.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
            task_expires_unix_ms: self.task.as_ref().map_or(0, |t| unix_ms(t.expires)),
            no_cache: self.task.as_ref().is_some_and(|t| t.no_cache) || self.never_cached(),
            approval: self.approval.as_ref().map(pb::ApprovalStatus::from),
            would_deny: self.would_deny,
        }
    }
}

impl From<pb::DecideResponse> for Decision {
    /// An outcome or reason this version does not know is a deny: a newer
    /// decision service is never taken to allow what this proxy cannot
    /// name.
    fn from(r: pb::DecideResponse) -> Decision {
        let outcome = match pb::Outcome::try_from(r.outcome) {
            Ok(pb::Outcome::Allow) => Some(Outcome::Allow),
            Ok(pb::Outcome::Deny) => Some(Outcome::Deny),
            Ok(pb::Outcome::ApprovalRequired) => Some(Outcome::ApprovalRequired),
            _ => None,
        };
        let (outcome, reason) = match (outcome, Reason::from_code(&r.reason)) {
            (Some(outcome), Some(reason)) => (outcome, reason),
            (None, _) => {
                return Decision::unavailable(format!(
                    "the decision service answered an unknown outcome ({})",
                    r.outcome
                ))
            }
            (Some(_), None) => {
                return Decision::unavailable(format!(
                    "the decision service answered an unknown reason `{}`",
                    r.reason
                ))
            }
        };
        Decision {
            outcome,
            reason,
            message: r.message,
            policy_ids: r.policy_ids,
            credential: (!r.credential.is_empty()).then_some(r.credential),
            task: (!r.task_id.is_empty()).then(|| TaskRef {
                id: r.task_id,
                expires: from_unix_ms(r.task_expires_unix_ms),
                no_cache: r.no_cache,
            }),
            approval: r.approval.and_then(|a| {
                Some(ApprovalStatus {
                    state: ApprovalState::from_name(&a.state)?,
                    id: a.approval_id,
                    approver: a.approver,
                    reason: a.reason,
                })
            }),
            // Only an allow can be one that report mode let through.
            would_deny: r.would_deny && outcome == Outcome::Allow,
        }
    }
}

impl From<&ApprovalStatus> for pb::ApprovalStatus {
    fn from(a: &ApprovalStatus) -> pb::ApprovalStatus {
        pb::ApprovalStatus {
            approval_id: a.id.clone(),
            state: a.state.as_str().to_string(),
            approver: a.approver.clone(),
            reason: a.reason.clone(),
        }
    }
}

impl From<&Approval> for pb::Approval {
    fn from(a: &Approval) -> pb::Approval {
        pb::Approval {
            approval_id: a.id.clone(),
            state: a
                .state_at(std::time::SystemTime::now())
                .as_str()
                .to_string(),
            workload: a.workload.clone(),
            task_id: a.task_id.clone(),
            task_purpose: a.task_purpose.clone(),
            action: a.action.clone(),
            resource: a.resource.clone(),
            method: a.method.clone(),
            host: a.host.clone(),
            port: u32::from(a.port),
            path: a.path.clone(),
            query: a.query.clone(),
            body_sha256: a.body_sha256.clone(),
            policy_ids: a.policy_ids.clone(),
            message: a.message.clone(),
            created_unix_ms: a.created_ms,
            expires_unix_ms: a.expires_ms,
            approver: a.approver.clone(),
            reason: a.reason.clone(),
            decided_unix_ms: a.decided_ms,
            uses: a.uses,
            reusable: a.reusable,
        }
    }
}

impl From<&ToolPin> for pb::ToolPin {
    fn from(p: &ToolPin) -> pb::ToolPin {
        pb::ToolPin {
            server: p.server.clone(),
            name: p.name.clone(),
            pinned: p.pinned.clone(),
            seen: p.seen.clone(),
            pinned_unix_ms: p.pinned_ms,
            changed_unix_ms: p.changed_ms,
            changed: p.changed(),
        }
    }
}

impl From<&TaskView> for pb::Task {
    fn from(t: &TaskView) -> pb::Task {
        pb::Task {
            task_id: t.id.clone(),
            workload: t.workload.clone(),
            purpose: t.purpose.clone(),
            scopes: t.scopes.clone(),
            budgets: t
                .budgets
                .iter()
                .map(|(class, (limit, used))| pb::Budget {
                    class: class.as_str().to_string(),
                    limit: *limit,
                    used: *used,
                })
                .collect(),
            created_unix_ms: unix_ms(t.created),
            expires_unix_ms: unix_ms(t.expires),
            state: t.state.as_str().to_string(),
            ended_unix_ms: t.ended.map_or(0, unix_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Attributes, IdentitySource};

    fn request() -> DecisionRequest {
        DecisionRequest {
            attributes: Arc::new(Attributes::of_name(
                IdentitySource::Jwt,
                "spiffe://cluster.local/ns/agents/sa/coder",
            )),
            principal: "spiffe://cluster.local/ns/agents/sa/coder".into(),
            action: "github:pulls.create".into(),
            resource: "github/repos/acme/api".into(),
            context: RequestContext {
                method: "POST".into(),
                host: "api.github.com".into(),
                port: 443,
                path: "/repos/acme/api/pulls".into(),
                tool: "github".into(),
                risk: RiskClass::Write,
                sensitivity: "internal".into(),
                arguments: Some(Arc::from(r#"{"repo":"acme/api"}"#)),
                mcp_tool: Some(Arc::from("search")),
            },
            task: Some(TokenHash::of("tgt_example")),
            held: None,
        }
    }

    #[test]
    fn requests_round_trip() {
        let r = request();
        assert_eq!(
            DecisionRequest::try_from(pb::DecideRequest::from(&r)),
            Ok(r)
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut m = pb::DecideRequest::from(&request());
        m.context.as_mut().unwrap().port = 70_000;
        assert!(DecisionRequest::try_from(m).is_err());
        let mut m = pb::DecideRequest::from(&request());
        m.context = None;
        assert!(DecisionRequest::try_from(m).is_err());
        let mut m = pb::DecideRequest::from(&request());
        m.principal.clear();
        assert!(DecisionRequest::try_from(m).is_err());
        let mut m = pb::DecideRequest::from(&request());
        m.task_token_sha256 = vec![1, 2, 3];
        assert!(DecisionRequest::try_from(m).is_err());
        let mut m = pb::DecideRequest::from(&request());
        m.context.as_mut().unwrap().risk = "dangerous".into();
        assert!(DecisionRequest::try_from(m).is_err());
    }

    #[test]
    fn decisions_round_trip_with_their_task() {
        let d = Decision {
            outcome: Outcome::Allow,
            reason: Reason::Allowed,
            message: String::new(),
            policy_ids: vec!["p".into()],
            credential: Some("github".into()),
            task: Some(TaskRef {
                id: "task_1".into(),
                expires: from_unix_ms(1_700_000_000_123),
                no_cache: true,
            }),
            approval: None,
            would_deny: false,
        };
        assert_eq!(Decision::from(d.to_pb("id", 3)), d);
    }

    #[test]
    fn a_reported_denial_round_trips_and_never_rides_on_a_deny() {
        let d = Decision {
            outcome: Outcome::Allow,
            credential: Some("github".into()),
            would_deny: true,
            policy_ids: vec!["forbid-x".into()],
            ..Decision::deny(Reason::Forbidden, "no")
        };
        let wire = d.to_pb("id", 3);
        assert!(wire.would_deny);
        assert_eq!(Decision::from(wire), d);
        let deny = Decision::from(pb::DecideResponse {
            outcome: pb::Outcome::Deny as i32,
            reason: "forbidden".into(),
            would_deny: true,
            ..Default::default()
        });
        assert!(!deny.is_allow() && !deny.would_deny);
    }

    #[test]
    fn unspecified_outcome_or_unknown_reason_is_a_deny() {
        let d = Decision::from(pb::DecideResponse {
            outcome: 0,
            reason: "allowed".into(),
            ..Default::default()
        });
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Deny, Reason::DecisionUnavailable)
        );
        let d = Decision::from(pb::DecideResponse {
            outcome: 99,
            reason: "allowed".into(),
            ..Default::default()
        });
        assert_eq!(d.outcome, Outcome::Deny);
        let d = Decision::from(pb::DecideResponse {
            outcome: pb::Outcome::Allow as i32,
            reason: "allowed_by_a_newer_rule".into(),
            ..Default::default()
        });
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Deny, Reason::DecisionUnavailable)
        );
        assert!(
            d.message.contains("allowed_by_a_newer_rule"),
            "{}",
            d.message
        );
    }
}
