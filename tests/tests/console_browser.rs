//! The approval console in a real browser: an agent's pull request is held
//! by `tollgate run`; headless Chromium, driven by Selenium
//! (`tests/py/console_browser.py`), signs in to the console on run's admin
//! listener, finds the request with its context, and approves or denies
//! it; the agent's request, still waiting, then gets the upstream's answer
//! or the approver's refusal. Screenshots of each step are kept in
//! `target/test-artifacts/console/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_e2e::clients::python_bin;
use tollgate_e2e::console::{with_approvers, ConsoleClient};
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::tasks::{task_cli, ADMIN_TOKEN};
use tollgate_e2e::{repo_root, CurlOutput, Setup, Tollgate, Upstream, CODER};

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

/// An agent's pull request, held by the proxy until someone decides.
struct Held {
    tg: Arc<Tollgate>,
    upstream: Upstream,
    alice: String,
    task_token: String,
    approval: String,
    agent: tokio::task::JoinHandle<CurlOutput>,
}

async fn held(body: &str) -> Held {
    let upstream = Upstream::http().await;
    let (setup, tokens) = with_approvers(
        Setup {
            tasks: true,
            ..Setup::routing("api.github.com:80", upstream.addr)
        },
        &["alice"],
    );
    let tg = Arc::new(Tollgate::start(setup));
    let task = task_cli(
        &tg.decision_url(),
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--purpose", PURPOSE],
    );
    assert_eq!(task.code, 0, "{}", task.stderr);
    let task_token = task.json["token"].as_str().unwrap().to_string();
    let agent = {
        let (tg, auth, body) = (
            tg.clone(),
            format!("Authorization: Bearer {task_token}"),
            body.to_string(),
        );
        tokio::spawn(async move {
            tg.curl(&[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "http://api.github.com/repos/acme/api/pulls?draft=false",
            ])
            .await
        })
    };
    let alice = tokens["alice"].clone();
    let approval = first_pending(tg.admin, &alice).await;
    Held {
        tg,
        upstream,
        alice,
        task_token,
        approval,
        agent,
    }
}

/// The first approval the console lists as pending (waiting up to 20 s).
async fn first_pending(admin: SocketAddr, token: &str) -> String {
    let console = ConsoleClient::login(admin, token).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = console.get("/console/api/approvals").await.out.json();
        if let Some(id) = listed["approvals"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "nothing became pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_in_the_browser_releases_the_held_request() {
    let held = held(r#"{"title":"release 1.2","head":"release-1.2"}"#).await;
    assert_eq!(
        held.upstream.count(),
        0,
        "nothing leaves before the verdict"
    );
    let result = in_browser(
        held.tg.admin,
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

    // The agent, waiting all along, gets the upstream's answer.
    let answer = held.agent.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["upstream"], "ok", "{}", answer.body);
    assert_eq!(held.upstream.count(), 1, "exactly once");
    let line = held
        .tg
        .wait_audit(|l| l["action"] == "github:pulls.create" && l["status"] == 200);
    assert_eq!(line["approval"]["id"], held.approval.as_str());
    assert_eq!(line["approval"]["approver"], "alice");
    assert_eq!(line["approval"]["reason"], "release is due");

    let mut collected = Collected::new();
    collected.add("browser result", result.to_string());
    collected.add("agent answer", answer.body.clone());
    collected.add("logs", held.tg.logs());
    collected.add("audit", held.tg.stdout_text());
    assert_no_secrets(&[&held.alice, &held.task_token], &collected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_in_the_browser_tells_the_agent_why() {
    let held = held(r#"{"title":"force push to main"}"#).await;
    let result = in_browser(
        held.tg.admin,
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

    let answer = held.agent.await.unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["reason"], "approval_denied", "{body}");
    assert_eq!(body["approval_id"], held.approval.as_str());
    assert_eq!(body["approver"], "alice");
    assert_eq!(body["approver_reason"], "not during the release freeze");
    assert_eq!(held.upstream.count(), 0, "a denied request never leaves");
}
