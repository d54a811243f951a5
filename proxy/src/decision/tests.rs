use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::catalog::{ActionInfo, RiskClass};
use crate::decision::state::TaskStore;
use crate::identity::{Attributes, IdentitySource};

mod load;
mod report;

const CODER: &str = "spiffe://cluster.local/ns/agents/sa/coder";
const TRIAGE: &str = "spiffe://cluster.local/ns/agents/sa/triage";
const OUTSIDER: &str = "spiffe://cluster.local/ns/batch/sa/report";

/// The actions the test policies and the shipped policies need, named the way
/// the catalogs name them, with each tool's `<tool>:unknown`.
fn actions() -> Vec<ActionInfo> {
    use RiskClass::*;
    [
        ("github:contents.get", Read),
        ("github:pulls.list", Read),
        ("github:pulls.create", Write),
        ("github:repos.delete", ProdChange),
        ("github:unknown", Unknown),
        ("slack:chat.postMessage", Write),
        ("slack:unknown", Unknown),
        ("s3:GetObject", DataExport),
        ("s3:unknown", Unknown),
        ("kubernetes:secrets.get", SecretsRead),
        ("kubernetes:pods.exec", CodeExec),
        ("kubernetes:unknown", Unknown),
        ("openai:chat.completions.create", DataExport),
        ("openai:unknown", Unknown),
    ]
    .into_iter()
    .map(|(name, risk)| info(name, risk))
    .collect()
}

fn info(name: &str, risk: RiskClass) -> ActionInfo {
    ActionInfo {
        name: Arc::from(name),
        tool: Arc::from(name.split(':').next().unwrap()),
        risk,
        arguments: None,
    }
}

fn engine(files: &[(&str, &str)]) -> PolicyEngine {
    PolicyEngine::from_sources(&actions(), &[], &sources(files)).unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(files: &[(&str, &str)]) -> (String, String) {
    match PolicyEngine::from_sources(&actions(), &[], &sources(files)) {
        Err(PolicyError::Invalid { location, message }) => (location, message),
        Err(e) => panic!("expected Invalid, got {e}"),
        Ok(_) => panic!("expected an error, policies loaded"),
    }
}

fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// A request as the classify stage would build it.
fn req(principal: &str, action: &str, resource: &str, sensitivity: &str) -> DecisionRequest {
    let tool = action.split(':').next().unwrap_or_default();
    let risk = actions()
        .iter()
        .find(|a| &*a.name == action)
        .map_or(RiskClass::Unknown, |a| a.risk);
    DecisionRequest {
        attributes: Arc::new(Attributes::of_name(IdentitySource::Static, principal)),
        principal: principal.into(),
        action: action.into(),
        resource: resource.into(),
        context: RequestContext {
            method: "GET".into(),
            host: format!("{tool}.example.com"),
            port: 443,
            path: format!("/{resource}"),
            tool: tool.into(),
            risk,
            sensitivity: sensitivity.into(),
            arguments: None,
            mcp_tool: None,
        },
        task: None,
        held: None,
    }
}

/// One expected decision.
struct Case {
    name: &'static str,
    request: DecisionRequest,
    outcome: Outcome,
    reason: &'static str,
    policy_ids: &'static [&'static str],
    credential: Option<&'static str>,
    message_has: &'static str,
}

fn case(name: &'static str, request: DecisionRequest, reason: &'static str) -> Case {
    Case {
        name,
        request,
        outcome: if reason == "allowed" {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        reason,
        policy_ids: &[],
        credential: None,
        message_has: "",
    }
}

impl Case {
    fn ids(mut self, ids: &'static [&'static str]) -> Case {
        self.policy_ids = ids;
        self
    }
    fn credential(mut self, name: &'static str) -> Case {
        self.credential = Some(name);
        self
    }
    fn message(mut self, part: &'static str) -> Case {
        self.message_has = part;
        self
    }
}

fn check(engine: &PolicyEngine, cases: Vec<Case>) {
    for c in cases {
        let d = engine.evaluate(&c.request);
        let ctx = format!("case `{}`: {d:?}", c.name);
        assert_eq!(d.outcome, c.outcome, "{ctx}");
        assert_eq!(d.reason.as_str(), c.reason, "{ctx}");
        assert_eq!(d.policy_ids, c.policy_ids, "{ctx}");
        assert_eq!(d.credential.as_deref(), c.credential, "{ctx}");
        assert!(d.message.contains(c.message_has), "{ctx}");
    }
}

const POLICIES: &str = r#"// Comments may hold ; and "quotes" without splitting a policy.
@id("coder-read")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder",
        action in Action::"read", resource in Target::"github");

@id("agents-open-pulls")
@credential("github-pr")
permit (principal in Namespace::"agents", action == Action::"github:pulls.create",
        resource in Target::"github/repos/acme");

@id("anyone-delete")
permit (principal, action == Action::"github:repos.delete", resource);

@id("no-delete")
@reason("deleting repositories is not allowed")
forbid (principal, action == Action::"github:repos.delete", resource);

forbid (principal, action in Action::"github", resource)
when { context.sensitivity == "restricted" };

permit (principal, action == Action::"connect", resource == Target::"example.com:443");
permit (principal, action == Action::"connect", resource in Target::"internal");
"#;

#[test]
fn decisions() {
    let e = engine(&[("test.cedar", POLICIES)]);
    assert_eq!(e.policy_count(), 7);
    let acme = "github/repos/acme/api";
    check(
        &e,
        vec![
            case("permit", req(CODER, "github:contents.get", acme, "internal"), "allowed")
                .ids(&["coder-read"])
                .message("coder-read"),
            case("default deny", req(CODER, "slack:chat.postMessage", "slack/channels/C1", "internal"), "no_permit")
                .message("no policy permits `slack:chat.postMessage` for `spiffe://cluster.local/ns/agents/sa/coder` on `slack/channels/C1`"),
            case("forbid overrides permit", req(CODER, "github:repos.delete", acme, "internal"), "forbidden")
                .ids(&["no-delete"])
                .message("deleting repositories is not allowed"),
            case("namespace member", req(TRIAGE, "github:pulls.create", acme, "internal"), "allowed")
                .ids(&["agents-open-pulls"])
                .credential("github-pr"),
            case("other namespace", req(OUTSIDER, "github:pulls.create", acme, "internal"), "no_permit"),
            case("not a SPIFFE id", req("agents", "github:pulls.create", acme, "internal"), "no_permit"),
            case("ns not first in path", req("spiffe://td/x/ns/agents/sa/a", "github:pulls.create", acme, "internal"), "no_permit"),
            case("target itself", req(TRIAGE, "github:pulls.create", "github/repos/acme", "internal"), "allowed")
                .ids(&["agents-open-pulls"])
                .credential("github-pr"),
            case("sibling target", req(TRIAGE, "github:pulls.create", "github/repos/other/api", "internal"), "no_permit"),
            case("string prefix is not a parent", req(TRIAGE, "github:pulls.create", "github/repos/acme-evil/api", "internal"), "no_permit"),
            case("forbid without @reason", req(CODER, "github:contents.get", acme, "restricted"), "forbidden")
                .ids(&["test.cedar:18"])
                .message("policy `test.cedar:18` forbids `github:contents.get`"),
            case("connect by host:port", req(CODER, CONNECT_ACTION, "example.com:443", ""), "allowed")
                .ids(&["test.cedar:21"]),
            case("connect other port", req(CODER, CONNECT_ACTION, "example.com:8443", ""), "no_permit"),
            case("connect targets have no parents", req(CODER, CONNECT_ACTION, "internal/x:443", ""), "no_permit"),
            case("unknown action", req(CODER, "github:pulls.merge", acme, "internal"), "invalid_request")
                .message("github:pulls.merge"),
            case("group is not an action", req(CODER, "read", acme, "internal"), "invalid_request"),
            case("empty principal", req("", "github:contents.get", acme, "internal"), "invalid_request"),
        ],
    );
}

#[test]
fn credential_comes_from_first_permit_that_names_one() {
    let e = engine(&[(
        "c.cedar",
        r#"@id("plain") permit (principal, action in Action::"read", resource);
           @id("named") @credential("gh-read") permit (principal, action in Action::"github", resource);
           @id("second") @credential("other") permit (principal, action in Action::"github", resource);"#,
    )]);
    check(
        &e,
        vec![
            case(
                "first named",
                req(CODER, "github:pulls.list", "github/repos/a", "public"),
                "allowed",
            )
            .ids(&["plain", "named", "second"])
            .credential("gh-read"),
            case(
                "none named",
                req(CODER, "s3:GetObject", "s3/b/k", "public"),
                "no_permit",
            ),
        ],
    );
}

/// `port * i64::MAX` validates (both are Long) and overflows for port > 1.
const OVERFLOW: &str = "context.port * 9223372036854775807 > 1";

#[test]
fn evaluation_error_denies_even_when_another_permit_allows() {
    let e = engine(&[(
        "err.cedar",
        &format!(
            r#"@id("list-ok") permit (principal, action == Action::"github:pulls.list", resource);
               @id("overflow") permit (principal, action == Action::"github:pulls.list", resource)
               when {{ {OVERFLOW} }};"#
        ),
    )]);
    let mut no_error = req(CODER, "github:pulls.list", "github/repos/a", "internal");
    no_error.context.port = 1;
    check(
        &e,
        vec![
            case(
                "erroring permit",
                req(CODER, "github:pulls.list", "github/repos/a", "internal"),
                "policy_error",
            )
            .ids(&["overflow"])
            .message("overflow"),
            case("same policy without overflow", no_error, "allowed").ids(&["list-ok", "overflow"]),
        ],
    );
}

#[test]
fn erroring_forbid_still_denies() {
    let e = engine(&[(
        "err.cedar",
        &format!(
            r#"@id("list-ok") permit (principal, action == Action::"github:pulls.list", resource);
               @id("bad-forbid") forbid (principal, action == Action::"github:pulls.list", resource)
               when {{ {OVERFLOW} }};"#
        ),
    )]);
    let mut applies = req(CODER, "github:pulls.list", "github/repos/a", "internal");
    applies.context.port = 1;
    check(
        &e,
        vec![
            // Cedar alone would skip the forbid and allow.
            case(
                "erroring forbid",
                req(CODER, "github:pulls.list", "github/repos/a", "internal"),
                "policy_error",
            )
            .ids(&["bad-forbid"]),
            case("forbid that evaluates", applies, "forbidden").ids(&["bad-forbid"]),
        ],
    );
}

#[test]
fn shipped_policies() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/policies");
    let e = PolicyEngine::load_dir(&actions(), &[], &dir).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(e.policy_count(), 9, "base, guardrails and the demo policy");
    let acme = "github/repos/acme/api";
    check(
        &e,
        vec![
            case(
                "coder reads",
                req(
                    CODER,
                    "github:contents.get",
                    "github/repos/kubernetes/kubernetes",
                    "public",
                ),
                "allowed",
            )
            .ids(&["coder-github-read"])
            .credential("github-readonly"),
            case(
                "coder opens a PR in acme outside a task",
                req(CODER, "github:pulls.create", acme, "internal"),
                "forbidden",
            )
            .ids(&["writes-need-a-task"])
            .message("needs a task token"),
            case(
                "coder PR elsewhere",
                req(
                    CODER,
                    "github:pulls.create",
                    "github/repos/other/x",
                    "internal",
                ),
                "forbidden",
            )
            .ids(&["writes-need-a-task"]),
            case(
                "triage lists acme PRs",
                req(TRIAGE, "github:pulls.list", acme, "internal"),
                "allowed",
            )
            .ids(&["agents-list-acme-pulls"])
            .credential("github-readonly"),
            case(
                "coder lists acme PRs",
                req(CODER, "github:pulls.list", acme, "internal"),
                "allowed",
            )
            .ids(&["coder-github-read", "agents-list-acme-pulls"])
            .credential("github-readonly"),
            case(
                "outsider lists",
                req(OUTSIDER, "github:pulls.list", acme, "internal"),
                "no_permit",
            ),
            case(
                "prod change",
                req(CODER, "github:repos.delete", acme, "internal"),
                "forbidden",
            )
            .ids(&["forbid-prod-change"])
            .message("agents may not change production"),
            case(
                "secrets",
                req(
                    CODER,
                    "kubernetes:secrets.get",
                    "kubernetes/namespaces/prod/secrets/db",
                    "restricted",
                ),
                "forbidden",
            )
            .ids(&["forbid-secrets-read"]),
            case(
                "restricted export",
                req(
                    CODER,
                    "s3:GetObject",
                    "s3/buckets/hr/payroll.csv",
                    "restricted",
                ),
                "forbidden",
            )
            .ids(&["forbid-restricted-export"])
            .message("restricted data"),
            case(
                "internal export not granted",
                req(CODER, "s3:GetObject", "s3/buckets/docs/a", "internal"),
                "no_permit",
            ),
            case(
                "unknown route",
                req(CODER, "github:unknown", acme, "internal"),
                "forbidden",
            )
            .ids(&["forbid-unknown-actions"]),
            case(
                "code exec not granted",
                req(
                    CODER,
                    "kubernetes:pods.exec",
                    "kubernetes/namespaces/dev/pods/p",
                    "internal",
                ),
                "no_permit",
            ),
            case(
                "connect default denied",
                req(CODER, CONNECT_ACTION, "pypi.org:443", ""),
                "no_permit",
            ),
        ],
    );

    // Inside a task, the same pull request is allowed, with its credential.
    let tasks = crate::decision::state::memory::MemoryTasks::new(
        crate::decision::tasks::TaskLimits::default(),
        tokio::sync::broadcast::channel(1).0,
    );
    let (_, token) = tasks
        .start(crate::decision::tasks::TaskSpec {
            workload: CODER.into(),
            purpose: "open the fix".into(),
            ..Default::default()
        })
        .unwrap();
    let task = tasks
        .admit(&TokenHash::of(token.expose()), CODER, "github:pulls.create")
        .unwrap_or_else(|(refusal, _)| panic!("{refusal:?}"));
    let d = e.evaluate_in_task(
        &req(CODER, "github:pulls.create", acme, "internal"),
        Some(&task),
    );
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.policy_ids, ["coder-open-pull-requests"]);
    assert_eq!(d.credential.as_deref(), Some("github-pull-requests"));
}

#[test]
fn guardrails_load_when_a_risk_group_has_no_actions() {
    // A catalog without secrets_read or data_export actions must not make
    // the central forbids invalid.
    let only_github: Vec<ActionInfo> = actions()
        .into_iter()
        .filter(|a| a.tool.as_ref() == "github")
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/policies");
    PolicyEngine::load_dir(&only_github, &[], &dir).unwrap_or_else(|err| panic!("{err}"));
}

/// A snapshot of `engine` with an empty catalog and no credentials.
fn snapshot(engine: PolicyEngine, cache_size: usize) -> crate::decision::snapshot::Snapshot {
    crate::decision::snapshot::Snapshot {
        catalog: crate::catalog::Catalog::default(),
        engine,
        credentials: Default::default(),
        enforcement: Default::default(),
        decisions: DecisionCache::new(cache_size),
        epoch: 1,
        loaded_at: std::time::SystemTime::now(),
    }
}

#[tokio::test]
async fn the_embedded_decider_decides_as_the_engine_evaluates() {
    let s = snapshot(engine(&[("test.cedar", POLICIES)]), 100);
    let decider: SharedDecider = Arc::new(EmbeddedDecider::new(Arc::new(TaskStore::in_memory(
        tasks::TaskLimits::default(),
    ))));
    let acme = "github/repos/acme/api";
    let requests = [
        req(CODER, "github:contents.get", acme, "internal"),
        req(CODER, "github:repos.delete", acme, "internal"),
        req(OUTSIDER, "github:contents.get", acme, "internal"),
        req(CODER, "github:contents.get", acme, "restricted"),
        req(CODER, "github:repos.nuke", acme, "internal"),
    ];
    let mut reasons = std::collections::HashSet::new();
    // Twice: the second round is answered from the snapshot's cache.
    for round in 0..2 {
        for r in &requests {
            let through_the_seam = decider.decide(&s, r).await;
            assert_eq!(
                through_the_seam,
                s.engine.evaluate(r),
                "round {round}: {r:?}"
            );
            reasons.insert(through_the_seam.reason);
        }
    }
    assert!(
        s.decisions.len() >= requests.len() - 1,
        "the cache was not used"
    );
    for reason in [
        Reason::Allowed,
        Reason::Forbidden,
        Reason::NoPermit,
        Reason::InvalidRequest,
    ] {
        assert!(reasons.contains(&reason), "no {reason} among {reasons:?}");
    }
}

mod task_decisions {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::decision::tasks::{TaskLimits, TaskSpec, TaskState, TOKEN_PREFIX};

    const POLICIES: &str = r#"
@id("coder-github")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"github", resource);

@id("writes-need-a-task")
@reason("writes need a task")
forbid (principal, action in Action::"write", resource) unless { context has task };

@id("no-deletes-while-triaging")
forbid (principal, action == Action::"github:repos.delete", resource)
  when { context has task && context.task.purpose like "*triage*" };
"#;

    struct Plane {
        tasks: Arc<TaskStore>,
        decider: EmbeddedDecider,
        snapshot: crate::decision::snapshot::Snapshot,
    }

    impl Plane {
        fn new() -> Plane {
            Plane::with_policies(POLICIES)
        }

        fn with_policies(policies: &str) -> Plane {
            let tasks = Arc::new(TaskStore::in_memory(TaskLimits::default()));
            Plane {
                decider: EmbeddedDecider::new(tasks.clone()),
                tasks,
                snapshot: snapshot(engine(&[("tasks.cedar", policies)]), 100),
            }
        }

        async fn start(&self, spec: TaskSpec) -> TokenHash {
            let (_, token) = self.tasks.start(spec).await.unwrap();
            assert!(token.expose().starts_with(TOKEN_PREFIX));
            TokenHash::of(token.expose())
        }

        async fn decide(&self, principal: &str, action: &str, task: Option<TokenHash>) -> Decision {
            let mut request = req(principal, action, "github/repos/acme/api", "internal");
            request.task = task;
            self.decider.decide_in(&self.snapshot, &request).await
        }
    }

    fn spec(purpose: &str) -> TaskSpec {
        TaskSpec {
            workload: CODER.into(),
            purpose: purpose.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn policies_see_the_task_and_only_a_valid_token_brings_one() {
        let p = Plane::new();
        let d = p.decide(CODER, "github:pulls.create", None).await;
        assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, "forbidden"));
        assert_eq!(d.message, "writes need a task");

        let token = p.start(spec("fix the build")).await;
        let d = p.decide(CODER, "github:pulls.create", Some(token)).await;
        assert!(d.is_allow(), "{d:?}");
        assert!(d.task.as_ref().is_some_and(|t| t.id.starts_with("task_")));

        let triage = p.start(spec("triage issues")).await;
        let d = p.decide(CODER, "github:repos.delete", Some(triage)).await;
        assert_eq!(d.policy_ids, ["no-deletes-while-triaging"]);

        let d = p
            .decide(
                CODER,
                "github:pulls.create",
                Some(TokenHash::of("tgt_forged")),
            )
            .await;
        assert_eq!(d.reason, Reason::TaskUnknown);
        assert!(d.task.is_none());
    }

    #[tokio::test]
    async fn ended_expired_foreign_and_out_of_scope_tokens_are_refused() {
        let p = Plane::new();
        let token = p
            .start(TaskSpec {
                scopes: vec!["github:pulls.*".into()],
                ..spec("review")
            })
            .await;
        assert!(p
            .decide(CODER, "github:pulls.list", Some(token))
            .await
            .is_allow());
        let d = p.decide(CODER, "github:contents.get", Some(token)).await;
        assert_eq!(d.reason, Reason::OutOfScope);
        let d = p.decide(TRIAGE, "github:pulls.list", Some(token)).await;
        assert_eq!(d.reason, Reason::TaskWorkloadMismatch);

        let id = p.tasks.list().await.unwrap()[0].id.clone();
        let mut revoked = p.tasks.subscribe();
        let view = p.tasks.end(&id).await.unwrap();
        assert_eq!(view.state, TaskState::Ended);
        assert_eq!(revoked.try_recv().unwrap().token, token);
        // Even a decision the cache holds for this exact request.
        let d = p.decide(CODER, "github:pulls.list", Some(token)).await;
        assert_eq!(
            (d.outcome, d.reason.as_str()),
            (Outcome::Deny, "task_ended")
        );

        let short = p
            .start(TaskSpec {
                ttl: Duration::from_millis(30),
                ..spec("short")
            })
            .await;
        assert!(p
            .decide(CODER, "github:pulls.list", Some(short))
            .await
            .is_allow());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            p.decide(CODER, "github:pulls.list", Some(short))
                .await
                .reason,
            Reason::TaskEnded
        );
        p.tasks.sweep().await;
        let expired = p
            .tasks
            .list()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.purpose == "short");
        assert_eq!(expired.map(|t| t.state), Some(TaskState::Expired));
        assert_eq!(revoked.try_recv().unwrap().token, short);
    }

    #[tokio::test]
    async fn a_budget_allows_exactly_n_requests_of_its_class() {
        let p = Plane::new();
        let token = p
            .start(TaskSpec {
                budgets: BTreeMap::from([("write".to_string(), 3)]),
                ..spec("three writes")
            })
            .await;
        for i in 0..3 {
            let d = p.decide(CODER, "github:pulls.create", Some(token)).await;
            assert!(d.is_allow(), "write {i}: {d:?}");
            assert!(d.task.as_ref().is_some_and(|t| t.no_cache));
        }
        let d = p.decide(CODER, "github:pulls.create", Some(token)).await;
        assert_eq!(d.reason, Reason::BudgetExhausted);
        // Other classes are not counted, and denied requests use nothing.
        for _ in 0..5 {
            assert!(p
                .decide(CODER, "github:pulls.list", Some(token))
                .await
                .is_allow());
        }
        let view = &p.tasks.list().await.unwrap()[0];
        assert_eq!(view.budgets[&RiskClass::Write], (3, 3));
    }

    #[tokio::test]
    async fn policies_see_the_tasks_scopes_and_budget_use() {
        let policies = r#"
@id("coder-github")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"github", resource)
when { context has task && context.task.scopes.contains("github:*") };

@id("second-write-needs-less-risk")
forbid (principal, action in Action::"write", resource)
when { context has task && context.task.used.write >= 1 && context.task.purpose == "careful" };
"#;
        let p = Plane::with_policies(policies);
        let narrow = p
            .start(TaskSpec {
                scopes: vec!["github:pulls.*".into()],
                ..spec("narrow")
            })
            .await;
        assert_eq!(
            p.decide(CODER, "github:pulls.list", Some(narrow))
                .await
                .reason,
            Reason::NoPermit
        );
        let careful = p
            .start(TaskSpec {
                scopes: vec!["github:*".into()],
                budgets: BTreeMap::from([("write".to_string(), 10)]),
                ..spec("careful")
            })
            .await;
        assert!(p
            .decide(CODER, "github:pulls.create", Some(careful))
            .await
            .is_allow());
        // The same request again: `used.write` is 1 now, and the decision
        // is not served from the cache.
        let d = p.decide(CODER, "github:pulls.create", Some(careful)).await;
        assert_eq!(d.policy_ids, ["second-write-needs-less-risk"]);
    }

    #[tokio::test]
    async fn task_specs_are_checked() {
        let tasks = TaskStore::in_memory(TaskLimits {
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(600),
        });
        let bad = [
            TaskSpec {
                workload: String::new(),
                ..spec("x")
            },
            TaskSpec {
                ttl: Duration::from_secs(601),
                ..spec("x")
            },
            TaskSpec {
                scopes: vec!["git*hub".into()],
                ..spec("x")
            },
            TaskSpec {
                budgets: BTreeMap::from([("writes".to_string(), 1)]),
                ..spec("x")
            },
        ];
        for s in bad {
            assert!(tasks.start(s.clone()).await.is_err(), "{s:?}");
        }
        let (view, token) = tasks.start(spec("ok")).await.unwrap();
        assert_eq!(
            view.expires.duration_since(view.created).unwrap(),
            Duration::from_secs(60)
        );
        // The token is never shown by the store's views or its Debug.
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert!(!format!("{view:?}").contains(token.expose()));
    }
}

/// A request from a principal with these identity attributes.
fn from_identity(principal: &str, edit: impl FnOnce(&mut Attributes)) -> DecisionRequest {
    let mut r = req(
        principal,
        "github:pulls.list",
        "github/repos/acme/api",
        "internal",
    );
    edit(Arc::make_mut(&mut r.attributes));
    r
}

#[test]
fn policies_read_the_principals_identity_attributes() {
    let claims = ["team".to_string()];
    let text = "@id(\"agents\") permit (principal, action in Action::\"read\", resource) \
                when { principal.namespace == \"agents\" && principal.service_account != \"\" };\n\
                @id(\"no-other-domain\") forbid (principal, action, resource) \
                when { principal.trust_domain == \"partner.example\" };\n\
                @id(\"infra-pods\") permit (principal, action, resource) \
                when { principal.claims.team == \"infra\" && principal.pod like \"runner-*\" \
                       && principal.identity_source == \"jwt\" };\n";
    let e = PolicyEngine::from_sources(&actions(), &claims, &sources(&[("p.cedar", text)]))
        .unwrap_or_else(|e| panic!("{e}"));
    let decide = |r: &DecisionRequest| e.evaluate(r).reason.as_str();
    // Namespace and service account come from the SPIFFE ID itself.
    assert_eq!(decide(&from_identity(CODER, |_| {})), "allowed");
    assert_eq!(
        decide(&from_identity(
            "spiffe://cluster.local/ns/other/sa/coder",
            |_| {}
        )),
        "no_permit"
    );
    assert_eq!(
        decide(&from_identity(
            "spiffe://partner.example/ns/agents/sa/x",
            |_| {}
        )),
        "forbidden"
    );
    let runner = |source, team: &str| {
        from_identity("spiffe://cluster.local/ns/ci/sa/runner", |a| {
            a.source = source;
            a.pod = "runner-7f9".into();
            a.claims.insert("team".into(), team.into());
        })
    };
    assert_eq!(decide(&runner(IdentitySource::Jwt, "infra")), "allowed");
    assert_eq!(decide(&runner(IdentitySource::Jwt, "web")), "no_permit");
    assert_eq!(
        decide(&runner(IdentitySource::Static, "infra")),
        "no_permit"
    );
}

#[test]
fn a_policy_naming_an_attribute_no_source_provides_is_refused_at_load() {
    for (claims, text) in [
        (
            &[][..],
            "permit (principal, action, resource) when { principal.claims.team == \"x\" };",
        ),
        (
            &["team".to_string()][..],
            "permit (principal, action, resource) when { principal.claims.tem == \"x\" };",
        ),
        (
            &[][..],
            "permit (principal, action, resource) when { principal.cluster == \"x\" };",
        ),
    ] {
        let result = PolicyEngine::from_sources(&actions(), claims, &sources(&[("p.cedar", text)]));
        assert!(
            matches!(&result, Err(PolicyError::Invalid { location, .. }) if location.starts_with("p.cedar")),
            "{text} loaded with claims {claims:?}"
        );
    }
}

const GATE: &str = "@id(\"allow\") permit (principal, action, resource);\n\
    @id(\"deletes-need-approval\") @reason(\"deleting a repository needs a person\")\n\
    forbid (principal, action == Action::\"github:repos.delete\", resource) unless { context.approved };\n";

#[test]
fn a_gate_asks_for_approval_and_approval_lets_only_the_gate_through() {
    let e = engine(&[("p.cedar", GATE)]);
    let delete = req(
        CODER,
        "github:repos.delete",
        "github/repos/acme/api",
        "internal",
    );
    let gated = e.evaluate(&delete);
    assert_eq!(gated.outcome, Outcome::ApprovalRequired);
    assert_eq!(gated.reason, Reason::ApprovalRequired);
    assert_eq!(gated.policy_ids, ["deletes-need-approval"]);
    assert_eq!(gated.message, "deleting a repository needs a person");
    assert!(e.evaluate_approved(&delete, None).is_allow());
    // Other actions are not gated at all.
    let read = req(
        CODER,
        "github:pulls.list",
        "github/repos/acme/api",
        "internal",
    );
    assert!(e.evaluate(&read).is_allow());

    // A forbid always wins: forbidden and gated is denied by the forbid,
    // never offered for approval, and approval does not lift it.
    let guarded = format!(
        "{GATE}@id(\"no-prod\") forbid (principal, action, resource == Target::\"github/repos/acme/prod\");\n"
    );
    let e = engine(&[("p.cedar", &guarded)]);
    let prod = req(
        CODER,
        "github:repos.delete",
        "github/repos/acme/prod",
        "internal",
    );
    let denied = e.evaluate(&prod);
    assert_eq!(denied.reason, Reason::Forbidden);
    assert_eq!(denied.policy_ids, ["no-prod"]);
    assert_eq!(e.evaluate_approved(&prod, None).reason, Reason::Forbidden);

    // Nothing permits: approval would not help, so none is asked.
    let e = engine(&[(
        "p.cedar",
        "forbid (principal, action == Action::\"github:repos.delete\", resource) unless { context.approved };",
    )]);
    assert_eq!(e.evaluate(&delete).reason, Reason::NoPermit);
}

#[test]
fn context_approved_is_refused_anywhere_but_a_gate() {
    for (text, why) in [
        (
            "permit (principal, action, resource) when { context.approved };",
            "a permit approval would widen",
        ),
        (
            "forbid (principal, action, resource) when { !context.approved };",
            "a gate written as `when`",
        ),
        (
            "forbid (principal, action, resource) unless { context.approved || context.port == 1 };",
            "a gate mixed into a larger condition",
        ),
        (
            "forbid (principal, action, resource) unless { context.approved } unless { context.approved };",
            "two gates in one policy",
        ),
    ] {
        let (location, message) = load_error(&[("gate.cedar", text)]);
        assert_eq!(location, "gate.cedar:1:1", "{why}");
        assert!(message.contains("approval gate"), "{why}: {message}");
    }
    // A gate may narrow what it covers with `when`.
    engine(&[(
        "p.cedar",
        "forbid (principal, action, resource) when { context.method == \"DELETE\" } unless { context.approved };",
    )]);
}

/// A listing shows a tool when some call of it may be allowed: a permit's
/// resource scope and conditions do not hide it, a forbid with neither
/// does, an approval gate does not.
#[test]
fn some_call_may_be_permitted_unless_no_permit_scope_matches_or_a_plain_forbid_does() {
    let engine = engine(&[(
        "p.cedar",
        r#"
        permit (principal == Workload::"spiffe://d/ns/agents/sa/coder", action == Action::"github:pulls.create", resource in Target::"github/repos/acme")
        when { context has task };
        permit (principal in Namespace::"agents", action in [Action::"read", Action::"slack:chat.postMessage"], resource);
        forbid (principal, action == Action::"github:contents.get", resource);
        forbid (principal, action == Action::"github:pulls.list", resource) when { context.method == "GET" };
        forbid (principal, action == Action::"slack:chat.postMessage", resource) unless { context.approved };
        "#,
    )]);
    let may = |principal: &str, action: &str| {
        let mut request = req(principal, action, "github", "internal");
        Arc::make_mut(&mut request.attributes).namespace = "agents".into();
        engine.may_permit(&request)
    };
    let coder = "spiffe://d/ns/agents/sa/coder";
    assert!(
        may(coder, "github:pulls.create"),
        "scoped and conditional: shown"
    );
    assert!(!may("spiffe://d/ns/agents/sa/other", "github:pulls.create"));
    assert!(
        !may(coder, "github:contents.get"),
        "a plain forbid hides it"
    );
    assert!(
        may(coder, "github:pulls.list"),
        "a conditional forbid does not"
    );
    assert!(
        may(coder, "slack:chat.postMessage"),
        "nor does an approval gate"
    );
    assert!(!may(coder, "github:repos.delete"), "no permit names it");
}
