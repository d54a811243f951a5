//! Human approval before execution, end to end: a request an approval gate
//! stops is held by the proxy while a person decides with `tollgate
//! approvals`; approved, it reaches the upstream once; denied, the agent
//! gets the approver's reason; nothing else ever lets it out.

use std::sync::Arc;

use serde_json::Value;
use tollgate_e2e::approvals::{
    approvals_cli, approvals_yaml, approver_env, decide, gated_policies, pending, wait_pending,
    APPROVER, APPROVER_TOKEN,
};
use tollgate_e2e::tasks::{admin_cli, start_task};
use tollgate_e2e::{curl_answer, DecisionService, Setup, Tollgate, Upstream, CODER};

const MERGE: &str = "http://api.github.com/repos/acme/api/pulls/7/merge";
const BODY: &str = r#"{"merge_method":"squash"}"#;

fn gated(upstream: &Upstream, hold: &str) -> Setup {
    Setup {
        policies: Some(gated_policies()),
        tasks: true,
        extra_yaml: approvals_yaml(hold, ""),
        env: vec![approver_env()],
        ..Setup::routing("api.github.com:80", upstream.addr)
    }
}

/// The agent's merge, through the proxy, in the background.
fn merge(tg: &Arc<Tollgate>, body: &str) -> tokio::task::JoinHandle<tollgate_e2e::CurlOutput> {
    let tg = tg.clone();
    let body = body.to_string();
    tokio::spawn(async move { tg.curl(&["-X", "PUT", MERGE, "-d", &body]).await })
}

fn sha256_hex(data: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, data.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_approved_while_held_reaches_the_upstream_once() {
    let upstream = Upstream::http().await;
    let tg = Arc::new(Tollgate::start(gated(&upstream, "30s")));
    let api = tg.decision_url();
    let held = merge(&tg, BODY);

    let asked = wait_pending(&api, 1);
    let approval = &asked[0];
    // Everything a person needs to decide, and only the body's digest.
    assert_eq!(approval["workload"], CODER);
    assert_eq!(approval["action"], "github:pulls.merge");
    assert_eq!(approval["resource"], "github/repos/acme/api");
    assert_eq!(approval["method"], "PUT");
    assert_eq!(approval["host"], "api.github.com");
    assert_eq!(approval["path"], "/repos/acme/api/pulls/7/merge");
    assert_eq!(approval["body_sha256"], sha256_hex(BODY));
    assert_eq!(approval["policy_ids"][0], "merge-needs-approval");
    assert_eq!(approval["message"], "merging needs a person's approval");
    assert_eq!(upstream.count(), 0, "nothing leaves before the verdict");

    let id = approval["id"].as_str().unwrap();
    let metrics = || async {
        tollgate_e2e::curl(&[&format!("http://{}/metrics", tg.admin)])
            .await
            .body
    };
    assert!(metrics().await.contains("tollgate_held_requests 1\n"));
    let approved = decide(&api, "approve", id, "release 1.4 is planned");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["approver"], APPROVER);

    let out = held.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "exactly once");
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].body_len, BODY.len() as u64);

    let line = tg.wait_audit(|l| l["action"] == "github:pulls.merge" && l["status"] == 200);
    assert_eq!(line["approval"]["id"], id);
    assert_eq!(line["approval"]["approver"], APPROVER);
    assert_eq!(line["approval"]["reason"], "release 1.4 is planned");
    assert!(
        !tg.logs().contains(APPROVER_TOKEN),
        "the approver token was logged"
    );
    let after = metrics().await;
    assert!(after.contains("tollgate_held_requests 0\n"), "{after}");
    for event in ["requested", "approved", "used"] {
        let series = format!("tollgate_approval_events_total{{event=\"{event}\"}} 1\n");
        assert!(after.contains(&series), "{series} in {after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_is_refused_with_the_approvers_reason() {
    let upstream = Upstream::http().await;
    let tg = Arc::new(Tollgate::start(gated(&upstream, "30s")));
    let api = tg.decision_url();
    let held = merge(&tg, BODY);
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();
    decide(&api, "deny", &id, "freeze until Monday");

    let out = held.await.unwrap();
    assert_eq!(out.status, 403, "{}", out.body);
    let body = out.json();
    assert_eq!(body["reason"], "approval_denied");
    assert_eq!(body["approval_id"], id.as_str());
    assert_eq!(body["approver"], APPROVER);
    assert_eq!(body["approver_reason"], "freeze until Monday");
    assert_eq!(upstream.count(), 0);

    // The same call stays denied; it does not ask again.
    let again = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(again.json()["reason"], "approval_denied");
    assert!(pending(&api).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_times_out_refuses_then_the_same_request_passes_once_approved() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(gated(&upstream, "1s"));
    let api = tg.decision_url();
    let proxy = tg.proxy_url();
    let args = ["-x", proxy.as_str(), "-X", "PUT", MERGE, "-d", BODY];

    let first = curl_answer(&args).await;
    assert_eq!(first.out.status, 428, "{}", first.out.body);
    let body = first.out.json();
    assert_eq!(body["decision"], "approval_required");
    assert_eq!(body["reason"], "approval_required");
    assert_eq!(body["status"], "pending");
    assert_eq!(first.header("retry-after").as_deref(), Some("5"));
    let id = body["approval_id"].as_str().unwrap().to_string();
    assert_eq!(upstream.count(), 0, "a timeout is never an allow");

    // Asking again while pending holds on the same approval.
    let second = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(second.json()["approval_id"], id.as_str());
    assert_eq!(pending(&api).len(), 1);

    decide(&api, "approve", &id, "ok");
    let out = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(upstream.count(), 1);

    // Single use: the next identical call is gated again, with a new id.
    let after = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(after.status, 428, "{}", after.body);
    assert_ne!(after.json()["approval_id"], id.as_str());
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_for_one_body_only() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(gated(&upstream, "1s"));
    let api = tg.decision_url();
    let first = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    let id = first.json()["approval_id"].as_str().unwrap().to_string();
    decide(&api, "approve", &id, "squash is fine");

    let other = r#"{"merge_method":"rebase"}"#;
    let out = tg.curl(&["-X", "PUT", MERGE, "-d", other]).await;
    assert_eq!(out.status, 428, "{}", out.body);
    assert_ne!(out.json()["approval_id"], id.as_str());
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_forbid_denies_is_never_offered_for_approval() {
    let upstream = Upstream::http().await;
    let mut policies = gated_policies();
    policies.push((
        "guard.cedar".into(),
        "@id(\"no-prod-merges\")\nforbid (principal, action, resource == Target::\"github/repos/acme/prod\");\n"
            .into(),
    ));
    let tg = Tollgate::start(Setup {
        policies: Some(policies),
        ..gated(&upstream, "30s")
    });
    let out = tg
        .curl(&[
            "-X",
            "PUT",
            "http://api.github.com/repos/acme/prod/pulls/7/merge",
        ])
        .await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "forbidden");
    assert_eq!(out.json()["policy_ids"][0], "no-prod-merges");
    let all = approvals_cli(&tg.decision_url(), &["list"]);
    assert_eq!(all.json["approvals"], Value::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbid_added_while_held_wins_at_release() {
    let upstream = Upstream::http().await;
    let tg = Arc::new(Tollgate::start(gated(&upstream, "30s")));
    let api = tg.decision_url();
    let held = merge(&tg, BODY);
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();

    std::fs::write(
        tg.path("policies/zz-freeze.cedar"),
        "@id(\"merge-freeze\")\nforbid (principal, action == Action::\"github:pulls.merge\", resource);\n",
    )
    .unwrap();
    tg.wait_log("catalog, policies and credentials reloaded");
    decide(&api, "approve", &id, "approved before the freeze was seen");

    let out = held.await.unwrap();
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "forbidden");
    assert_eq!(out.json()["policy_ids"][0], "merge-freeze");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_held_body_over_the_limit_is_refused_not_truncated() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        extra_yaml: approvals_yaml("30s", "  max_body_bytes: 16\n"),
        ..gated(&upstream, "30s")
    });
    let out = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(out.status, 413, "{}", out.body);
    assert_eq!(out.json()["error"], "held_body_too_large");
    assert!(pending(&tg.decision_url()).is_empty());
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_workload_cannot_approve() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(gated(&upstream, "1s"));
    let api = tg.decision_url();
    let first = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    let id = first.json()["approval_id"].as_str().unwrap().to_string();

    // A task token (the only credential a workload holds) is refused.
    let task = start_task(&api, CODER, &[]);
    let out = admin_cli(
        "approvals",
        "TOLLGATE_APPROVER_TOKEN",
        &api,
        Some(&task.token),
        &["approve", &id],
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    // So is no token, and a wrong one.
    let out = admin_cli(
        "approvals",
        "TOLLGATE_APPROVER_TOKEN",
        &api,
        Some("not-a-token"),
        &["approve", &id],
    );
    assert!(out.stderr.contains("not valid"), "{}", out.stderr);
    assert_eq!(pending(&api).len(), 1, "still pending");
    assert!(!tg.logs().contains(&task.token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_deciding_remotely_holds_on_the_services_verdict() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(Setup {
        policies: Some(gated_policies()),
        tasks: true,
        extra_yaml: approvals_yaml("30s", ""),
        env: vec![approver_env()],
        ..Setup::default()
    });
    let tg = Arc::new(Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        extra_yaml: approvals_yaml("30s", ""),
        ..Setup::routing("api.github.com:80", upstream.addr)
    }));
    let held = merge(&tg, BODY);
    let id = wait_pending(&service.url(), 1)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(upstream.count(), 0);
    decide(&service.url(), "approve", &id, "ok");
    let out = held.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(upstream.count(), 1);
}

/// Wait (up to 10 s) until `upstream` has seen `count` requests.
async fn seen(upstream: &Upstream, count: usize) -> Vec<tollgate_e2e::Seen> {
    for _ in 0..200 {
        let requests = upstream.requests();
        if requests.len() >= count {
            return requests;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "{count} webhook posts expected, saw {:?}",
        upstream.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hears_each_request_and_verdict_and_a_dead_one_blocks_nothing() {
    let upstream = Upstream::http().await;
    let hooks = Upstream::http().await;
    let secret_path = "/services/T0/B0/webhook-secret-4f1c";
    let webhook = "  webhook: { url: { env: TOLLGATE_TEST_WEBHOOK }, timeout: 2s }\n";
    let tg = Arc::new(Tollgate::start(Setup {
        extra_yaml: approvals_yaml("30s", webhook),
        env: vec![
            approver_env(),
            (
                "TOLLGATE_TEST_WEBHOOK".into(),
                format!("http://{}{secret_path}", hooks.addr),
            ),
        ],
        ..gated(&upstream, "30s")
    }));
    let api = tg.decision_url();
    let held = merge(&tg, BODY);
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();
    let posts = seen(&hooks, 1).await;
    assert_eq!(posts[0].method, "POST");
    assert_eq!(posts[0].path_and_query, secret_path);
    let requested: Value = serde_json::from_str(&posts[0].body_head).unwrap();
    assert_eq!(requested["event"], "requested");
    assert_eq!(requested["approval"]["id"], id.as_str());
    let text = requested["text"].as_str().unwrap();
    assert!(
        text.contains("github:pulls.merge") && text.contains(&id),
        "{text}"
    );

    decide(&api, "approve", &id, "go ahead");
    assert_eq!(held.await.unwrap().status, 200);
    let posts = seen(&hooks, 2).await;
    let approved: Value = serde_json::from_str(&posts[1].body_head).unwrap();
    assert_eq!(approved["event"], "approved");
    assert!(approved["text"]
        .as_str()
        .unwrap()
        .starts_with("Approved by alice: go ahead"));
    assert!(
        !tg.logs().contains(secret_path),
        "the webhook URL was logged"
    );

    // A webhook that cannot be reached is logged, and nothing waits on it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let tg = Arc::new(Tollgate::start(Setup {
        extra_yaml: approvals_yaml("30s", webhook),
        env: vec![approver_env(), ("TOLLGATE_TEST_WEBHOOK".into(), dead_url)],
        ..gated(&upstream, "30s")
    }));
    let api = tg.decision_url();
    let held = merge(&tg, BODY);
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();
    decide(&api, "approve", &id, "");
    assert_eq!(held.await.unwrap().status, 200);
    tg.wait_log("approval webhook failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_https_request_is_held_and_released_the_same_way() {
    let upstream = Upstream::http().await;
    let (_pki, upstream_tls, tg) = tollgate_e2e::github_tls(gated(&upstream, "30s")).await;
    let tg = Arc::new(tg);
    let api = tg.decision_url();
    let agent = {
        let tg = tg.clone();
        tokio::spawn(async move {
            let ca = tg.ca_cert().display().to_string();
            tg.curl(&[
                "--cacert",
                &ca,
                "-X",
                "PUT",
                "https://api.github.com/repos/acme/api/pulls/7/merge",
                "-d",
                BODY,
            ])
            .await
        })
    };
    let asked = wait_pending(&api, 1);
    assert_eq!(asked[0]["port"], 443);
    decide(&api, "approve", asked[0]["id"].as_str().unwrap(), "ok");
    let out = agent.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(upstream_tls.count(), 1);
    assert_eq!(upstream_tls.requests()[0].body_head, BODY);
}

#[tokio::test]
async fn an_approval_is_for_one_pull_request_and_one_query_only() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(gated(&upstream, "1s"));
    let api = tg.decision_url();
    let first = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    let id = first.json()["approval_id"].as_str().unwrap().to_string();
    decide(&api, "approve", &id, "pull 7 only");

    // Same action, resource and body: another pull request, or another
    // query, is another call.
    for other in [
        "http://api.github.com/repos/acme/api/pulls/8/merge",
        "http://api.github.com/repos/acme/api/pulls/7/merge?force=1",
    ] {
        let out = tg.curl(&["-X", "PUT", other, "-d", BODY]).await;
        assert_eq!(out.status, 428, "{other}: {}", out.body);
        assert_ne!(out.json()["approval_id"], id.as_str());
    }
    assert_eq!(upstream.count(), 0);
    let out = tg.curl(&["-X", "PUT", MERGE, "-d", BODY]).await;
    assert_eq!(out.status, 200, "{}", out.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approver_tokens_and_the_webhook_url_appear_in_no_log_answer_or_error() {
    use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
    let upstream = Upstream::http().await;
    let hooks = Upstream::http().await;
    let hook_secret = tollgate_e2e::random_secret("hook");
    let tg = Arc::new(Tollgate::start(Setup {
        extra_yaml: approvals_yaml(
            "30s",
            "  webhook: { url: { env: TOLLGATE_TEST_WEBHOOK } }\n",
        ),
        env: vec![
            approver_env(),
            (
                "TOLLGATE_TEST_WEBHOOK".into(),
                format!("http://{}/hooks/{hook_secret}", hooks.addr),
            ),
        ],
        ..gated(&upstream, "30s")
    }));
    let api = tg.decision_url();
    let mut collected = Collected::new();
    let held = merge(&tg, BODY);
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();
    for args in [vec!["list"], vec!["show", id.as_str()]] {
        let out = approvals_cli(&api, &args);
        collected.add(
            format!("approvals {args:?}"),
            format!("{}{}", out.json, out.stderr),
        );
    }
    // A wrong token's error, and deciding twice.
    let wrong = admin_cli(
        "approvals",
        "TOLLGATE_APPROVER_TOKEN",
        &api,
        Some("wrong-token-0123456789"),
        &["approve", &id],
    );
    collected.add("wrong token", wrong.stderr);
    decide(&api, "approve", &id, "fine");
    let twice = approvals_cli(&api, &["deny", &id]);
    assert!(
        twice.stderr.contains("only a pending approval"),
        "{}",
        twice.stderr
    );
    collected.add("decided twice", twice.stderr);
    let out = held.await.unwrap();
    collected.add("agent answer", out.body);
    seen(&hooks, 2).await;
    for post in hooks.requests() {
        collected.add("webhook post", post.body_head);
    }
    collected.add("logs", tg.logs());
    collected.add("audit", tg.stdout_text());
    assert_no_secrets(&[APPROVER_TOKEN, &hook_secret], &collected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_approvals_streams_the_current_ones_then_every_change() {
    let upstream = Upstream::http().await;
    let tg = Arc::new(Tollgate::start(gated(&upstream, "30s")));
    let api = tg.decision_url();
    // One pending before the watch starts: it comes first, as a snapshot.
    let _first = merge(&tg, BODY);
    let before = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();

    let grpcurl = tollgate_e2e::repo_root().join(".venv/bin/grpcurl");
    assert!(grpcurl.exists(), "run scripts/setup-test-env");
    let watch = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", "-max-time", "4", "-H"])
        .arg(format!("authorization: Bearer {APPROVER_TOKEN}"))
        .args(["-d", "{}"])
        .arg(api.trim_start_matches("http://"))
        .arg("tollgate.authz.v1.DecisionService/WatchApprovals")
        .stdout(std::process::Stdio::piped())
        // It ends at -max-time, saying so: expected.
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let held = merge(&tg, r#"{"merge_method":"rebase"}"#);
    let ids: Vec<String> = wait_pending(&api, 2)
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let during = ids.iter().find(|id| **id != before).unwrap().clone();
    decide(&api, "approve", &during, "ok");
    assert_eq!(held.await.unwrap().status, 200);

    let out = watch.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // grpcurl prints one pretty JSON object per message.
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["approval"]["approvalId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |kind: &str, id: &str| (kind.to_string(), id.to_string());
    assert_eq!(seen.first(), Some(&expect("snapshot", &before)), "{text}");
    for wanted in [
        expect("requested", &during),
        expect("approved", &during),
        expect("used", &during),
    ] {
        assert!(seen.contains(&wanted), "{wanted:?} not in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_request_carries_the_credential_its_permit_names() {
    let upstream = Upstream::http().await;
    let policies = vec![(
        "gated.cedar".into(),
        "@id(\"merges\")\n@credential(\"github-pull-requests\")\n\
         permit (principal, action == Action::\"github:pulls.merge\", resource);\n\
         @id(\"merge-needs-approval\")\n\
         forbid (principal, action == Action::\"github:pulls.merge\", resource) unless { context.approved };\n"
            .into(),
    )];
    let tg = Arc::new(Tollgate::start(Setup {
        policies: Some(policies),
        ..gated(&upstream, "30s")
    }));
    let api = tg.decision_url();
    let held = {
        let tg = tg.clone();
        tokio::spawn(async move {
            tg.curl(&[
                "-X",
                "PUT",
                MERGE,
                "-d",
                BODY,
                "-H",
                "Authorization: Bearer agent-own-token",
            ])
            .await
        })
    };
    let id = wait_pending(&api, 1)[0]["id"].as_str().unwrap().to_string();
    decide(&api, "approve", &id, "ok");
    assert_eq!(held.await.unwrap().status, 200);
    let seen = upstream.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer harness-github-pull-requests-value"),
        "the policy's credential, never the agent's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_on_one_replica_the_request_held_behind_the_others_proxy_is_released() {
    let redis = tollgate_e2e::RedisServer::start();
    let replica = || {
        let service = DecisionService::start(Setup {
            policies: Some(gated_policies()),
            extra_yaml: format!(
                "state:\n  redis:\n    url: \"{}\"\n{}",
                redis.url(),
                approvals_yaml("30s", "")
            ),
            env: vec![approver_env()],
            ..Setup::default()
        });
        service.wait_log("state store connected");
        service
    };
    let (a, b) = (replica(), replica());
    let upstream = Upstream::http().await;
    let tg = Arc::new(Tollgate::start(Setup {
        decision_endpoint: Some(a.url()),
        extra_yaml: approvals_yaml("30s", ""),
        ..Setup::routing("api.github.com:80", upstream.addr)
    }));
    let held = merge(&tg, BODY);
    // Asked through A, seen and approved on B.
    let id = wait_pending(&b.url(), 1)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(upstream.count(), 0);
    decide(&b.url(), "approve", &id, "from the other replica");
    let out = held.await.unwrap();
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(upstream.count(), 1);
}
