//! Report mode in the engine and the embedded decider: which denials are
//! let through, with which credential, and what stays enforced.

use std::collections::BTreeMap;

use super::*;
use crate::config::{Enforcement, EnforcementMode, ToolEnforcement};
use crate::decision::tasks::{TaskLimits, TaskSpec};

const POLICIES: &str = r#"
@id("coder-github") @credential("github-token")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"github", resource);

@id("new-no-writes") @reason("no writes while we look")
forbid (principal, action in Action::"write", resource);

@id("deletes-need-approval")
forbid (principal, action == Action::"github:repos.delete", resource) unless { context.approved };
"#;

fn pulls(principal: &str) -> DecisionRequest {
    req(
        principal,
        "github:pulls.create",
        "github/repos/acme/api",
        "internal",
    )
}

#[test]
fn a_forbid_is_reported_with_the_credential_of_the_permit_it_overrode() {
    let e = engine(&[("p.cedar", POLICIES)]);
    let enforced = e.evaluate(&pulls(CODER));
    assert_eq!(enforced.reason, Reason::Forbidden);
    let reported = e.evaluate_reporting(&pulls(CODER), None);
    assert!(reported.is_allow() && reported.would_deny, "{reported:?}");
    assert_eq!(reported.logged_as(), "would_deny");
    // What would have denied it, and only the permit's credential.
    assert_eq!(reported.reason, Reason::Forbidden);
    assert_eq!(reported.policy_ids, ["new-no-writes"]);
    assert_eq!(reported.message, "no writes while we look");
    assert_eq!(reported.credential.as_deref(), Some("github-token"));

    // Default deny: reported, and no permit means no credential.
    let read = |who| {
        req(
            who,
            "github:pulls.list",
            "github/repos/acme/api",
            "internal",
        )
    };
    let outsider = e.evaluate_reporting(&read(OUTSIDER), None);
    assert!(outsider.would_deny && outsider.is_allow());
    assert_eq!(outsider.reason, Reason::NoPermit);
    assert_eq!(outsider.credential, None);

    // An allow stays a plain allow.
    let allowed = e.evaluate_reporting(&read(CODER), None);
    assert!(allowed.is_allow() && !allowed.would_deny);
    assert_eq!(allowed.logged_as(), "allow");

    // A request Cedar cannot be asked is refused in every mode.
    let odd = req(
        CODER,
        "github:repos.nuke",
        "github/repos/acme/api",
        "internal",
    );
    assert_eq!(
        e.evaluate_reporting(&odd, None).reason,
        Reason::InvalidRequest
    );
    assert!(!e.evaluate_reporting(&odd, None).is_allow());
}

#[test]
fn an_approval_gate_still_holds_a_reported_request() {
    let e = engine(&[("p.cedar", POLICIES)]);
    let delete = req(
        CODER,
        "github:repos.delete",
        "github/repos/acme/api",
        "internal",
    );
    // Gated and nothing else: asked for approval in either mode.
    assert_eq!(
        e.evaluate_reporting(&delete, None).reason,
        Reason::ApprovalRequired
    );

    // Gated and forbidden: enforced, the forbid wins and nobody is asked;
    // reported, a person is asked first, and once approved it goes with
    // the denial it would have had.
    let forbidding = format!(
        "{POLICIES}@id(\"no-deletes\") forbid (principal, action == Action::\"github:repos.delete\", resource);\n"
    );
    let e = engine(&[("p.cedar", &forbidding)]);
    assert_eq!(e.evaluate(&delete).reason, Reason::Forbidden);
    let reported = e.evaluate_reporting(&delete, None);
    assert_eq!(reported.outcome, Outcome::ApprovalRequired);
    assert_eq!(reported.policy_ids, ["deletes-need-approval"]);
    let approved = e.report(e.evaluate_approved(&delete, None), &delete, None, true);
    assert!(approved.is_allow() && approved.would_deny, "{approved:?}");
    assert_eq!(approved.policy_ids, ["no-deletes"]);
    assert_eq!(approved.credential.as_deref(), Some("github-token"));
}

#[test]
fn an_erroring_forbid_is_reported_an_erroring_permit_is_not() {
    let forbid = format!(
        r#"@id("ok") @credential("c") permit (principal, action == Action::"github:pulls.list", resource);
           @id("bad-forbid") forbid (principal, action == Action::"github:pulls.list", resource)
           when {{ {OVERFLOW} }};"#
    );
    let e = engine(&[("p.cedar", &forbid)]);
    let list = req(CODER, "github:pulls.list", "github/repos/a", "internal");
    let d = e.evaluate_reporting(&list, None);
    assert!(d.is_allow() && d.would_deny, "{d:?}");
    assert_eq!(
        (d.reason, d.credential.as_deref()),
        (Reason::PolicyError, Some("c"))
    );

    // An error among the permits: nobody can tell what may go out.
    let permit = format!(
        r#"@id("ok") permit (principal, action == Action::"github:pulls.list", resource);
           @id("bad-permit") @credential("c") permit (principal, action == Action::"github:pulls.list", resource)
           when {{ {OVERFLOW} }};"#
    );
    let e = engine(&[("p.cedar", &permit)]);
    let d = e.evaluate_reporting(&list, None);
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::PolicyError));
}

fn enforcement(global: EnforcementMode, tools: &[(&str, EnforcementMode)]) -> Enforcement {
    Enforcement {
        mode: global,
        tools: tools
            .iter()
            .map(|(name, mode)| {
                let tool = ToolEnforcement {
                    mode: *mode,
                    at: "t.yaml:1:1".into(),
                };
                (name.to_string(), tool)
            })
            .collect(),
    }
}

struct Plane {
    tasks: Arc<TaskStore>,
    decider: EmbeddedDecider,
    snapshot: crate::decision::snapshot::Snapshot,
}

impl Plane {
    fn new(enforcement: Enforcement) -> Plane {
        let tasks = Arc::new(TaskStore::in_memory(TaskLimits::default()));
        let mut snapshot = snapshot(engine(&[("p.cedar", POLICIES)]), 100);
        snapshot.enforcement = enforcement;
        Plane {
            decider: EmbeddedDecider::new(tasks.clone()),
            tasks,
            snapshot,
        }
    }

    async fn decide(&self, request: &DecisionRequest) -> Decision {
        self.decider.decide_in(&self.snapshot, request).await
    }

    async fn task(&self, spec: TaskSpec) -> (String, TokenHash) {
        let (view, token) = self.tasks.start(spec).await.unwrap();
        (view.id, TokenHash::of(token.expose()))
    }
}

#[tokio::test]
async fn the_mode_is_the_tools_own_or_the_global_one() {
    use EnforcementMode::*;
    let slack = req(
        CODER,
        "slack:chat.postMessage",
        "slack/channels/x",
        "internal",
    );
    for (name, e, github, slack_reported) in [
        ("enforced", enforcement(Enforce, &[]), false, false),
        ("all reported", enforcement(Report, &[]), true, true),
        (
            "one tool reported",
            enforcement(Enforce, &[("github", Report)]),
            true,
            false,
        ),
        (
            "one tool enforced",
            enforcement(Report, &[("github", Enforce)]),
            false,
            true,
        ),
    ] {
        let p = Plane::new(e);
        // Twice: the second answer comes from the snapshot's cache.
        for round in 0..2 {
            let d = p.decide(&pulls(CODER)).await;
            assert_eq!(
                (d.is_allow(), d.would_deny),
                (github, github),
                "{name} {round}"
            );
            let d = p.decide(&slack).await;
            assert_eq!(
                (d.is_allow(), d.would_deny),
                (slack_reported, slack_reported),
                "{name} {round}: {d:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_tasks_limits_stay_enforced_and_a_reported_request_uses_the_budget() {
    let p = Plane::new(enforcement(EnforcementMode::Report, &[]));
    let spec = |scopes: Vec<String>, budget: u32| TaskSpec {
        workload: CODER.into(),
        purpose: "report mode".into(),
        scopes,
        budgets: BTreeMap::from([("write".to_string(), budget)]),
        ..Default::default()
    };
    let (_, token) = p.task(spec(vec!["github:pulls.*".into()], 1)).await;
    let in_task = |action: &str, principal: &str| {
        let mut r = req(principal, action, "github/repos/acme/api", "internal");
        r.task = Some(token);
        r
    };
    let d = p.decide(&in_task("github:pulls.create", CODER)).await;
    assert!(d.is_allow() && d.would_deny, "{d:?}");
    assert!(d.task.is_some(), "decided under the task");
    // The one write of the budget went out: the next is refused.
    let d = p.decide(&in_task("github:pulls.create", CODER)).await;
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::BudgetExhausted)
    );
    let d = p.decide(&in_task("github:contents.get", CODER)).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::OutOfScope));
    let d = p.decide(&in_task("github:pulls.list", TRIAGE)).await;
    assert_eq!(d.reason, Reason::TaskWorkloadMismatch);
    assert!(!d.is_allow());

    let mut forged = pulls(CODER);
    forged.task = Some(TokenHash::of("tgt_forged"));
    assert_eq!(p.decide(&forged).await.reason, Reason::TaskUnknown);

    let (id, ended) = p.task(spec(vec![], 5)).await;
    p.tasks.end(&id).await.unwrap();
    let mut late = pulls(CODER);
    late.task = Some(ended);
    let d = p.decide(&late).await;
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::TaskEnded));
}
