//! Approvals shared by `tollgate decision` replicas on one real Redis: a
//! call held behind one replica is approved or denied on another, asked
//! for once however many replicas ask at once, and used once; a replica
//! that loses Redis refuses rather than guess, and a request waiting on it
//! hears a verdict given meanwhile once Redis is back.
//!
//! The calls are made the way a holding proxy and an approver make them:
//! `Decide` with `held` set, `AwaitApproval`, and the approver's RPCs.

use std::time::{Duration, Instant};

use tollgate_e2e::grpc::{self, pb, DecisionClient};
use tollgate_e2e::redis::Reply;
use tollgate_e2e::{random_secret, DecisionService, RedisServer, Relay, Setup, CODER};

const CATALOG: &str = r#"
tool: deploys
description: a test deploy service
endpoints:
  - hosts: [deploys.test]
    routes:
      - { method: POST, path: "/deploy/{app}", action: deploy, risk: prod_change, resource: "apps/{app}" }
      - { method: GET, path: "/apps/{app}", action: status, risk: read, resource: "apps/{app}" }
"#;

const POLICIES: &str = r#"
@id("coder-deploys")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"deploys", resource);

@id("deploys-need-a-person")
@reason("a deploy needs a person's yes")
forbid (principal, action == Action::"deploys:deploy", resource) unless { context.approved };
"#;

const APPROVER: &str = "ana";
/// What anything a user waits for may take here: far more than it should,
/// yet bounded.
const PATIENCE: Duration = Duration::from_secs(15);

/// A `tollgate decision` replica on the Redis at `url`, with one approver
/// whose token is `token`.
fn replica(url: &str, token: &str) -> DecisionService {
    replica_with(url, token, "")
}

/// With `more` lines (indented two spaces) under `approvals:`.
fn replica_with(url: &str, token: &str, more: &str) -> DecisionService {
    let service = DecisionService::start(Setup {
        extra_catalog: vec![("deploys.yaml".into(), CATALOG.into())],
        policies: Some(vec![("deploys.cedar".into(), POLICIES.into())]),
        extra_yaml: format!(
            "state:\n  redis:\n    url: \"{url}\"\n    timeout: 500ms\n\
             approvals:\n  approvers:\n    - {{ name: {APPROVER}, token: {{ env: TOLLGATE_APPROVER_TOKEN }} }}\n{more}"
        ),
        env: vec![("TOLLGATE_APPROVER_TOKEN".into(), token.into())],
        ..Setup::default()
    });
    service.wait_log("state store connected");
    service
}

/// Two replicas on `redis` and the approver's token.
fn two_replicas(redis: &RedisServer) -> (DecisionService, DecisionService, String) {
    let token = random_secret("approver");
    let a = replica(&redis.url(), &token);
    let b = replica(&redis.url(), &token);
    (a, b, token)
}

/// A deploy of `app` with `body`, held by its proxy for approval.
fn held_deploy(app: &str, body: &[u8]) -> pb::DecideRequest {
    pb::DecideRequest {
        principal: CODER.into(),
        action: "deploys:deploy".into(),
        resource: format!("apps/{app}"),
        context: Some(pb::RequestContext {
            method: "POST".into(),
            host: "deploys.test".into(),
            port: 80,
            path: format!("/deploy/{app}"),
            tool: "deploys".into(),
            risk: "prod_change".into(),
            sensitivity: "internal".into(),
            ..pb::RequestContext::default()
        }),
        held: Some(pb::HeldCall {
            body_sha256: grpc::sha256(body),
            query: "wait=1".into(),
        }),
        ..pb::DecideRequest::default()
    }
}

async fn decide(client: &mut DecisionClient, request: &pb::DecideRequest) -> pb::DecideResponse {
    client.decide(request.clone()).await.unwrap().into_inner()
}

/// The approval a decision carries; panics without one.
fn approval_of(decided: &pb::DecideResponse) -> pb::ApprovalStatus {
    decided
        .approval
        .clone()
        .unwrap_or_else(|| panic!("no approval in {decided:?}"))
}

fn outcome(decided: &pb::DecideResponse) -> pb::Outcome {
    pb::Outcome::try_from(decided.outcome).unwrap()
}

async fn list(
    client: &mut DecisionClient,
    token: &str,
) -> Result<Vec<pb::Approval>, tonic::Status> {
    let request = grpc::bearer(pb::ListApprovalsRequest::default(), token);
    Ok(client.list_approvals(request).await?.into_inner().approvals)
}

fn verdict_on(id: &str, reason: &str, token: &str) -> tonic::Request<pb::DecideApprovalRequest> {
    let message = pb::DecideApprovalRequest {
        approval_id: id.into(),
        reason: reason.into(),
    };
    grpc::bearer(message, token)
}

/// `AwaitApproval` for `id` on `url`, waiting up to `timeout`, in the
/// background; how long it took comes back with the answer.
fn await_in_background(
    url: String,
    id: String,
    timeout: Duration,
) -> tokio::task::JoinHandle<(Result<pb::ApprovalStatus, tonic::Status>, Instant)> {
    tokio::spawn(async move {
        let mut client = grpc::client(&url).await;
        let request = pb::AwaitApprovalRequest {
            approval_id: id,
            timeout_ms: timeout.as_millis() as u64,
        };
        let answer = client.await_approval(request).await;
        (answer.map(tonic::Response::into_inner), Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_on_one_replica_is_approved_on_the_other_and_let_through_once() {
    let redis = RedisServer::start();
    let (a, b, token) = two_replicas(&redis);
    let (mut on_a, mut on_b) = (grpc::client(&a.url()).await, grpc::client(&b.url()).await);
    let call = held_deploy("api", br#"{"version":"1.2.3"}"#);

    let asked = decide(&mut on_a, &call).await;
    assert_eq!(outcome(&asked), pb::Outcome::ApprovalRequired, "{asked:?}");
    assert_eq!(asked.reason, "approval_required");
    let id = approval_of(&asked).approval_id;
    assert_eq!(approval_of(&asked).state, "pending");

    // B never saw the request: it reads the approval from the store.
    let listed = list(&mut on_b, &token).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].approval_id, id);
    assert_eq!(listed[0].state, "pending");
    assert_eq!(listed[0].action, "deploys:deploy");
    assert_eq!(listed[0].query, "wait=1");
    assert_eq!(listed[0].policy_ids, ["deploys-need-a-person"]);

    // The proxy holding the request waits on A; the approver is on B.
    const WAIT: Duration = Duration::from_secs(30);
    let waiter = await_in_background(a.url(), id.clone(), WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "answered before any verdict");
    let approved = on_b
        .approve(verdict_on(&id, "looks right", &token))
        .await
        .unwrap()
        .into_inner();
    let approved_at = Instant::now();
    assert_eq!(approved.state, "approved");
    assert_eq!(approved.approver, APPROVER);

    let (answer, answered_at) = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("AwaitApproval on A never heard the verdict given on B")
        .unwrap();
    let answer = answer.unwrap();
    assert_eq!(answer.state, "approved", "{answer:?}");
    assert_eq!(answer.approver, APPROVER);
    assert_eq!(answer.reason, "looks right");
    let took = answered_at.saturating_duration_since(approved_at);
    assert!(
        took < Duration::from_secs(3),
        "heard after {took:?}: polled?"
    );

    // The held request, asked again, goes through; the same call once
    // more needs a new approval.
    let released = decide(&mut on_a, &call).await;
    assert_eq!(outcome(&released), pb::Outcome::Allow, "{released:?}");
    assert_eq!(approval_of(&released).approval_id, id);
    assert_eq!(approval_of(&released).state, "approved");
    let again = decide(&mut on_b, &call).await;
    assert_eq!(outcome(&again), pb::Outcome::ApprovalRequired, "{again:?}");
    let next = approval_of(&again);
    assert_eq!(next.state, "pending");
    assert_ne!(next.approval_id, id, "a single-use approval answered twice");

    let used = on_a
        .get_approval(grpc::bearer(
            pb::GetApprovalRequest {
                approval_id: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((used.state.as_str(), used.uses), ("approved", 1));
    // Decided once: a second verdict on either replica is refused.
    let twice = on_a
        .deny(verdict_on(&id, "changed my mind", &token))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
}

#[tokio::test]
async fn a_call_denied_on_one_replica_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let (a, b, token) = two_replicas(&redis);
    let (mut on_a, mut on_b) = (grpc::client(&a.url()).await, grpc::client(&b.url()).await);
    let call = held_deploy("api", b"v2");

    let id = approval_of(&decide(&mut on_a, &call).await).approval_id;
    let denied = on_a
        .deny(verdict_on(&id, "not on a Friday", &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.state, "denied");

    let refused = decide(&mut on_b, &call).await;
    assert_eq!(outcome(&refused), pb::Outcome::Deny, "{refused:?}");
    assert_eq!(refused.reason, "approval_denied");
    assert!(refused.message.contains("not on a Friday"), "{refused:?}");
    let status = approval_of(&refused);
    assert_eq!(
        (status.approval_id.as_str(), status.state.as_str()),
        (id.as_str(), "denied")
    );
    // The denial stands for that call only: another body is another call.
    let other = decide(&mut on_b, &held_deploy("api", b"v3")).await;
    assert_eq!(outcome(&other), pb::Outcome::ApprovalRequired, "{other:?}");
    assert_ne!(approval_of(&other).approval_id, id);

    // Kept in Redis no longer than a day past its expiry (an hour from
    // the verdict by default): the store forgets without any replica.
    let mut inspect = redis.client().unwrap();
    let binding = redis.keys("{tollgate}:binding:*");
    assert_eq!(binding.len(), 2, "{binding:?}");
    for key in [format!("{{tollgate}}:approval:{id}"), binding[0].clone()] {
        let left = match inspect.command(&["PTTL", &key]).unwrap() {
            Reply::Integer(ms) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            other => panic!("PTTL {key}: {other:?}"),
        };
        assert!(left > Duration::from_secs(24 * 3600), "{key}: {left:?}");
        assert!(left <= Duration::from_secs(25 * 3600), "{key}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_approval_expires_once_across_replicas() {
    let redis = RedisServer::start();
    let token = random_secret("approver");
    let a = replica_with(&redis.url(), &token, "  ttl: 1s\n");
    let b = replica_with(&redis.url(), &token, "  ttl: 1s\n");
    let call = held_deploy("api", b"nobody answers");
    let id = approval_of(&decide(&mut grpc::client(&a.url()).await, &call).await).approval_id;

    // Each replica relays every change once: two sweeps announcing the same
    // expiry would show here as two `expired` on each stream.
    let mut watchers = Vec::new();
    for url in [a.url(), b.url()] {
        let request = grpc::bearer(pb::WatchApprovalsRequest::default(), &token);
        let stream = grpc::client(&url).await.watch_approvals(request).await;
        watchers.push(stream.unwrap().into_inner());
    }
    let mut kinds = Vec::new();
    for mut stream in watchers {
        let mut heard = Vec::new();
        // Past the expiry, and then long enough for every replica's sweep
        // (each half second) to have run several times.
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while let Ok(Ok(Some(event))) = tokio::time::timeout_at(until, stream.message()).await {
            let approval = event.approval.unwrap();
            assert_eq!(approval.approval_id, id);
            heard.push(event.kind);
        }
        kinds.push(heard);
    }
    for heard in &kinds {
        assert_eq!(heard, &["snapshot", "expired"], "{kinds:?}");
    }
    let mut on_b = grpc::client(&b.url()).await;
    let expired = on_b
        .get_approval(grpc::bearer(
            pb::GetApprovalRequest {
                approval_id: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expired.state, "expired");
    let late = on_b
        .approve(verdict_on(&id, "too late", &token))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
    let asked_again = decide(&mut on_b, &call).await;
    assert_eq!(approval_of(&asked_again).state, "pending");
    assert_ne!(approval_of(&asked_again).approval_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_asking_for_the_same_call_at_once_ask_once() {
    const EACH: usize = 8;
    let redis = RedisServer::start();
    let (a, b, token) = two_replicas(&redis);
    let call = held_deploy("api", b"the same body");
    let mut asked = tokio::task::JoinSet::new();
    for i in 0..2 * EACH {
        let url = [a.url(), b.url()][i % 2].clone();
        let call = call.clone();
        asked.spawn(async move { decide(&mut grpc::client(&url).await, &call).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(decided) = asked.join_next().await {
        let decided = decided.unwrap();
        assert_eq!(
            outcome(&decided),
            pb::Outcome::ApprovalRequired,
            "{decided:?}"
        );
        ids.insert(approval_of(&decided).approval_id);
    }
    assert_eq!(ids.len(), 1, "one call, several approvals: {ids:?}");
    let listed = list(&mut grpc::client(&b.url()).await, &token)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_redis_refuses_and_hears_a_verdict_given_meanwhile_once_back() {
    let redis = RedisServer::start();
    let relay = Relay::to(redis.addr());
    let token = random_secret("approver");
    let a = replica(&redis.url_via(relay.addr), &token);
    let b = replica(&redis.url(), &token);
    let (mut on_a, mut on_b) = (grpc::client(&a.url()).await, grpc::client(&b.url()).await);
    let call = held_deploy("api", b"during the outage");
    let id = approval_of(&decide(&mut on_b, &call).await).approval_id;

    const WAIT: Duration = Duration::from_secs(60);
    let waiter = await_in_background(a.url(), id.clone(), WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Blocking here stalls none of the runtime's workers: the test body
    // runs apart from them.
    relay.cut();
    a.wait_log("state store unreachable");

    // A cannot know: it says so, promptly, rather than guess.
    let started = Instant::now();
    let refused = decide(&mut on_a, &call).await;
    assert_eq!(outcome(&refused), pb::Outcome::Deny, "{refused:?}");
    assert_eq!(refused.reason, "state_unavailable");
    let listed = list(&mut on_a, &token).await.unwrap_err();
    assert_eq!(listed.code(), tonic::Code::Unavailable, "{listed:?}");
    let approve_on_a = on_a
        .approve(verdict_on(&id, "via A", &token))
        .await
        .unwrap_err();
    assert_eq!(approve_on_a.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Approved through B while A's subscription is down: A cannot hear it.
    on_b.approve(verdict_on(&id, "via B", &token))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "answered while A could not know");

    relay.restore();
    let restored_at = Instant::now();
    let (answer, answered_at) = tokio::time::timeout(PATIENCE, waiter)
        .await
        .unwrap_or_else(|_| panic!("the waiter on A never heard:\n{}", a.logs()))
        .unwrap();
    let answer = answer.unwrap();
    assert_eq!(answer.state, "approved", "{answer:?}");
    assert_eq!(answer.reason, "via B");
    let took = answered_at.saturating_duration_since(restored_at);
    assert!(
        took < Duration::from_secs(10),
        "heard {took:?} after Redis was back"
    );

    let released = decide(&mut on_a, &call).await;
    assert_eq!(outcome(&released), pb::Outcome::Allow, "{released:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_named_as_the_workload_cannot_decide_its_call_in_redis_either() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let own = random_secret("own");
    let file = dir.path().join("coder-approver");
    std::fs::write(&file, &own).unwrap();
    let token = random_secret("approver");
    let more = format!(
        "    - {{ name: \"{CODER}\", token: {{ file: {} }} }}\n",
        file.display()
    );
    let a = replica_with(&redis.url(), &token, &more);
    let mut on_a = grpc::client(&a.url()).await;
    let id = approval_of(&decide(&mut on_a, &held_deploy("api", b"v9")).await).approval_id;
    let refused = on_a
        .approve(verdict_on(&id, "my own", &own))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let listed = list(&mut on_a, &token).await.unwrap();
    assert_eq!(listed[0].state, "pending");
}
