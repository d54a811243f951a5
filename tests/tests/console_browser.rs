//! The approval console in a real browser: headless Chromium, driven by
//! Selenium (`tests/py/console_browser.py`), signs in, finds the held
//! request with its context, and approves or denies it; the request that
//! was waiting then gets its answer. Screenshots of each step are kept in
//! `target/test-artifacts/console/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};
use tollgate_e2e::clients::python_bin;
use tollgate_e2e::console::{ask_approval, grpcurl, held_pull_request, with_approvers};
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::tasks::{task_cli, ADMIN_TOKEN};
use tollgate_e2e::{repo_root, DecisionService, Setup, CODER};

const PURPOSE: &str = "Open the release pull request for acme/api";

fn shots() -> PathBuf {
    repo_root().join("target/test-artifacts/console")
}

/// What the browser did, as the script reports it.
async fn in_browser(
    admin: SocketAddr,
    token: &str,
    approval: &str,
    verb: &str,
    reason: &str,
    name: &str,
) -> Value {
    let script = repo_root().join("tests/py/console_browser.py");
    let out = tokio::process::Command::new(python_bin())
        .arg(script)
        .args(["--console", &format!("http://{admin}/console")])
        .args(["--approval", approval, "--verb", verb, "--reason", reason])
        .arg("--shots")
        .arg(shots())
        .args(["--name", name])
        .env("TG_CONSOLE_TOKEN", token)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run tests/py/console_browser.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "console_browser.py printed no result ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{result}");
    let blocked: Vec<&Value> = result["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m.as_str()
                .is_some_and(|m| m.contains("Content Security Policy"))
        })
        .collect();
    assert!(
        blocked.is_empty(),
        "the page broke its own CSP: {blocked:?}"
    );
    result
}

/// A decision service with alice as approver, a task for the coder, and
/// a pull request of that task held for approval; the request's approval.
struct Held {
    svc: DecisionService,
    alice: String,
    task_token: String,
    approval: String,
}

fn held(body: &str) -> Held {
    let (setup, tokens) = with_approvers(
        Setup {
            tasks: true,
            ..Setup::default()
        },
        &["alice"],
    );
    let svc = DecisionService::start(setup);
    let task = task_cli(
        &format!("http://{}", svc.addr),
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--purpose", PURPOSE],
    );
    assert_eq!(task.code, 0, "{}", task.stderr);
    let task_token = task.json["token"].as_str().unwrap().to_string();
    let approval = ask_approval(svc.addr, Some(&task_token), body);
    Held {
        svc,
        alice: tokens["alice"].clone(),
        task_token,
        approval,
    }
}

/// Wait, as a holding proxy does, for the approval to be decided.
fn await_verdict(addr: SocketAddr, approval: &str) -> tokio::task::JoinHandle<Value> {
    let approval = approval.to_string();
    tokio::task::spawn_blocking(move || {
        grpcurl(
            addr,
            None,
            "AwaitApproval",
            &json!({"approvalId": approval, "timeoutMs": 60000}),
        )
        .expect("AwaitApproval")
    })
}

fn assert_card_shows_context(result: &Value, held: &Held) {
    let card = &result["card"];
    assert_eq!(result["approver"], "alice", "{result}");
    assert_eq!(card["workload"], CODER, "{result}");
    assert_eq!(card["action"], "github:pulls.create");
    assert_eq!(card["task_purpose"], PURPOSE);
    assert_eq!(card["resource"], "github/repos/acme/api");
    assert_eq!(
        card["request"],
        "POST api.github.com/repos/acme/api/pulls?draft=false"
    );
    assert_eq!(card["id"], held.approval.as_str());
    assert_eq!(
        card["message"],
        "a person reviews every pull request before it is opened"
    );
    assert!(
        result["login_url"]
            .as_str()
            .unwrap()
            .ends_with("/console/login"),
        "{result}"
    );
}

#[tokio::test]
async fn approving_in_the_browser_releases_the_held_request() {
    let held = held(r#"{"title":"release 1.2","head":"release-1.2"}"#);
    let waiting = await_verdict(held.svc.addr, &held.approval);
    let result = in_browser(
        held.svc.admin,
        &held.alice,
        &held.approval,
        "approve",
        "release is due",
        "approve",
    )
    .await;
    assert_card_shows_context(&result, &held);
    assert!(
        result["notice"].as_str().unwrap().starts_with("Approved"),
        "{result}"
    );

    let verdict = waiting.await.unwrap();
    assert_eq!(verdict["state"], "approved", "{verdict}");
    assert_eq!(verdict["approver"], "alice");
    // Released: asked again with the same call, it is allowed.
    let released = grpcurl(
        held.svc.addr,
        None,
        "Decide",
        &held_pull_request(
            Some(&held.task_token),
            r#"{"title":"release 1.2","head":"release-1.2"}"#,
        ),
    )
    .unwrap();
    assert_eq!(released["outcome"], "OUTCOME_ALLOW", "{released}");

    let mut collected = Collected::new();
    collected.add("browser result", result.to_string());
    collected.add("logs", held.svc.logs());
    collected.add("audit", held.svc.stdout_text());
    assert_no_secrets(&[&held.alice, &held.task_token], &collected);
}

#[tokio::test]
async fn denying_in_the_browser_tells_the_agent_why() {
    let held = held(r#"{"title":"force push"}"#);
    let waiting = await_verdict(held.svc.addr, &held.approval);
    let result = in_browser(
        held.svc.admin,
        &held.alice,
        &held.approval,
        "deny",
        "not during the release freeze",
        "deny",
    )
    .await;
    assert_card_shows_context(&result, &held);
    assert!(
        result["notice"].as_str().unwrap().starts_with("Denied"),
        "{result}"
    );

    let verdict = waiting.await.unwrap();
    assert_eq!(verdict["state"], "denied", "{verdict}");
    assert_eq!(verdict["reason"], "not during the release freeze");
    let refused = grpcurl(
        held.svc.addr,
        None,
        "Decide",
        &held_pull_request(Some(&held.task_token), r#"{"title":"force push"}"#),
    )
    .unwrap();
    assert_eq!(refused["reason"], "approval_denied", "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("not during the release freeze"));
}
