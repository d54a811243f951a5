//! The approval console end to end, against the built binary: without a
//! session nothing is shown; an approver's token signs in; a change needs
//! the session's CSRF token and a same-origin request; an approval decided
//! in the console is what the gRPC API then reports; and every answer
//! carries the console's security headers while no log line or answer ever
//! holds an approver's token.

use std::time::Duration;

use serde_json::json;
use tollgate_e2e::console::{ask_approval, grpcurl, with_approvers, ConsoleClient};
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::tasks::{task_cli, ADMIN_TOKEN};
use tollgate_e2e::{curl, curl_answer, Answer, DecisionService, Setup, Tollgate, CODER};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn assert_secured(answer: &Answer, what: &str) {
    assert_eq!(
        answer.header("content-security-policy").as_deref(),
        Some(CSP),
        "{what}: {}",
        answer.headers
    );
    assert_eq!(
        answer.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        answer.header("referrer-policy").as_deref(),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        answer.header("cache-control").as_deref(),
        Some("no-store"),
        "{what}"
    );
}

fn service(names: &[&str]) -> (DecisionService, std::collections::HashMap<String, String>) {
    let (setup, tokens) = with_approvers(
        Setup {
            tasks: true,
            ..Setup::default()
        },
        names,
    );
    (DecisionService::start(setup), tokens)
}

#[tokio::test]
async fn without_a_session_nothing_is_shown() {
    let (svc, _) = service(&["alice"]);
    let console = ConsoleClient::at(svc.admin);
    for path in [
        "/console/api/session",
        "/console/api/approvals",
        "/console/api/tasks",
        "/console/api/decisions",
        "/console/api/events",
    ] {
        let answer = console.get(path).await;
        assert_eq!(answer.out.status, 401, "{path}: {}", answer.out.body);
        assert_secured(&answer, path);
    }
    for path in [
        "/console/api/approvals/apr_x/approve",
        "/console/api/tasks/task_x/end",
        "/console/logout",
    ] {
        let answer = console.post(path, &[], "{}").await;
        assert_eq!(answer.out.status, 401, "{path}: {}", answer.out.body);
        assert_secured(&answer, path);
    }
    // The page itself sends a browser to the login form.
    let page = console.get("/console").await;
    assert_eq!(page.out.status, 303);
    assert_eq!(page.header("location").as_deref(), Some("/console/login"));
    assert_secured(&page, "/console");
    // The files the login page needs are served to anyone, and hold no data.
    for path in [
        "/console/login",
        "/console/assets/console.css",
        "/console/assets/console.js",
        "/console/assets/favicon.svg",
    ] {
        let answer = console.get(path).await;
        assert_eq!(answer.out.status, 200, "{path}");
        assert_secured(&answer, path);
    }
    let missing = console.get("/console/nothing-here").await;
    assert_eq!(missing.out.status, 404);
    assert_secured(&missing, "404");
    // The admin listener's own endpoints are untouched.
    let health = curl(&[&format!("http://{}/healthz", svc.admin)]).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn only_an_approvers_token_signs_in() {
    let (svc, tokens) = service(&["alice"]);
    let console = ConsoleClient::at(svc.admin);
    let mut collected = Collected::new();

    let wrong = console
        .submit_login("approver-0000000000000000ffffffffffffffff")
        .await;
    assert_eq!(wrong.out.status, 401, "{}", wrong.out.body);
    assert!(wrong.header("set-cookie").is_none());
    assert!(
        wrong.out.body.contains("not an approver"),
        "{}",
        wrong.out.body
    );
    assert_secured(&wrong, "refused login");

    // A workload's task token is never an approver's, whatever it is.
    let task = task_cli(
        &format!("http://{}", svc.addr),
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--purpose", "try to approve"],
    );
    let task_token = task.json["token"].as_str().unwrap().to_string();
    let by_task = console.submit_login(&task_token).await;
    assert_eq!(by_task.out.status, 401);
    assert!(by_task.header("set-cookie").is_none());

    // A login posted from another site is refused before the token is read.
    let origin = console
        .post(
            "/console/login",
            &["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"],
            &format!("token={}", tokens["alice"]),
        )
        .await;
    assert_eq!(origin.out.status, 403, "{}", origin.out.body);
    assert!(origin.header("set-cookie").is_none());

    let good = console.submit_login(&tokens["alice"]).await;
    assert_eq!(good.out.status, 303, "{}", good.out.body);
    let cookie = good.header("set-cookie").unwrap();
    assert!(cookie.starts_with("tollgate_console="), "{cookie}");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert_secured(&good, "login");

    let signed_in = ConsoleClient::login(svc.admin, &tokens["alice"]).await;
    let session = signed_in.get("/console/api/session").await.out.json();
    assert_eq!(session["approver"], "alice");
    let page = signed_in.get("/console").await;
    assert_eq!(page.out.status, 200);
    assert!(page.out.body.contains("/console/assets/console.js"));

    // Signing out needs the CSRF token too, and ends the session.
    let no_csrf = signed_in.post("/console/logout", &[], "").await;
    assert_eq!(no_csrf.out.status, 403);
    let out = signed_in.change("/console/logout", &json!({})).await;
    assert_eq!(out.out.status, 200, "{}", out.out.body);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        signed_in.get("/console/api/approvals").await.out.status,
        401
    );

    for answer in console.seen.lock().unwrap().iter() {
        collected.add("console answer", answer.clone());
    }
    for answer in signed_in.seen.lock().unwrap().iter() {
        collected.add("console answer", answer.clone());
    }
    collected.add("logs", svc.logs());
    collected.add("audit", svc.stdout_text());
    assert_no_secrets(&[&tokens["alice"], &task_token], &collected);
}

#[tokio::test]
async fn an_approval_is_decided_with_the_csrf_token_from_the_same_origin() {
    let (svc, tokens) = service(&["alice", CODER]);
    let api = format!("http://{}", svc.addr);
    let task = task_cli(
        &api,
        Some(ADMIN_TOKEN),
        &[
            "start",
            "--workload",
            CODER,
            "--purpose",
            "Open the release pull request for acme/api",
        ],
    );
    assert_eq!(task.code, 0, "{}", task.stderr);
    let task_token = task.json["token"].as_str().unwrap().to_string();
    let console = ConsoleClient::login(svc.admin, &tokens["alice"]).await;

    // Following the events while the approval is asked for.
    let events_url = format!("http://{}/console/api/events", svc.admin);
    let cookie_header = format!("Cookie: {}", console.cookie().unwrap());
    let events = tokio::spawn(async move {
        curl(&["-N", "--max-time", "4", "-H", &cookie_header, &events_url]).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let id = ask_approval(svc.addr, Some(&task_token), r#"{"title":"release 1.2"}"#);
    let listed = console.get("/console/api/approvals").await.out.json();
    let pending = &listed["approvals"][0];
    assert_eq!(pending["id"], id.as_str(), "{listed}");
    assert_eq!(pending["workload"], CODER);
    assert_eq!(pending["action"], "github:pulls.create");
    assert_eq!(pending["resource"], "github/repos/acme/api");
    assert_eq!(pending["method"], "POST");
    assert_eq!(pending["host"], "api.github.com");
    assert_eq!(pending["path"], "/repos/acme/api/pulls");
    assert_eq!(pending["query"], "draft=false");
    assert_eq!(
        pending["task_purpose"],
        "Open the release pull request for acme/api"
    );
    assert_eq!(pending["task_id"], task.json["id"]);
    assert_eq!(pending["policy_ids"][0], "approve-pull-requests");
    assert_eq!(
        pending["message"],
        "a person reviews every pull request before it is opened"
    );
    assert_eq!(pending["body_sha256"].as_str().unwrap().len(), 64);

    let path = format!("/console/api/approvals/{id}/approve");
    let body = json!({"reason": "release is due"}).to_string();
    let origin = format!("Origin: {}", console.origin());
    let csrf = format!("X-CSRF-Token: {}", console.csrf);
    // No CSRF token: refused, whatever the origin.
    let refused = console
        .post(&path, &[&origin, "Sec-Fetch-Site: same-origin"], &body)
        .await;
    assert_eq!(refused.out.status, 403, "{}", refused.out.body);
    assert_secured(&refused, "refused approve");
    let wrong = console
        .post(&path, &[&origin, "X-CSRF-Token: not-the-token"], &body)
        .await;
    assert_eq!(wrong.out.status, 403);
    // The right token from another site: refused too.
    for elsewhere in ["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"] {
        let refused = console.post(&path, &[&csrf, elsewhere], &body).await;
        assert_eq!(refused.out.status, 403, "{elsewhere}: {}", refused.out.body);
    }
    let still = grpcurl(
        svc.addr,
        Some(&tokens["alice"]),
        "GetApproval",
        &json!({"approvalId": id}),
    )
    .unwrap();
    assert_eq!(still["state"], "pending", "{still}");

    // The workload's own name as an approver may not release it.
    let own = ConsoleClient::login(svc.admin, &tokens[CODER]).await;
    let refused = own.change(&path, &json!({"reason": "mine"})).await;
    assert_eq!(refused.out.status, 403, "{}", refused.out.body);
    assert!(
        refused.out.body.contains("own workload"),
        "{}",
        refused.out.body
    );

    let approved = console
        .change(&path, &json!({"reason": "release is due"}))
        .await;
    assert_eq!(approved.out.status, 200, "{}", approved.out.body);
    assert_secured(&approved, "approve");
    let decided = grpcurl(
        svc.addr,
        Some(&tokens["alice"]),
        "GetApproval",
        &json!({"approvalId": id}),
    )
    .unwrap();
    assert_eq!(decided["state"], "approved", "{decided}");
    assert_eq!(decided["approver"], "alice");
    assert_eq!(decided["reason"], "release is due");
    assert!(
        console.get("/console/api/approvals").await.out.json()["approvals"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Decided once: a second verdict is an error the page shows.
    let again = console
        .change(
            &format!("/console/api/approvals/{id}/deny"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(again.out.status, 409, "{}", again.out.body);
    assert!(again.out.body.contains("only a pending approval"));

    let events = events.await.unwrap();
    assert!(events.body.contains("event: ready"), "{}", events.body);
    assert!(
        events.body.contains("event: approvals") && events.body.contains("\"requested\""),
        "{}",
        events.body
    );
    assert!(events.body.contains("\"approved\""), "{}", events.body);

    let mut collected = Collected::new();
    for client in [&console, &own] {
        for answer in client.seen.lock().unwrap().iter() {
            collected.add("console answer", answer.clone());
        }
    }
    collected.add("events", events.body.clone());
    collected.add("logs", svc.logs());
    collected.add("audit", svc.stdout_text());
    assert_no_secrets(&[&tokens["alice"], &tokens[CODER], &task_token], &collected);
}

#[tokio::test]
async fn a_denial_needs_a_reason_and_says_it() {
    let (svc, tokens) = service(&["alice"]);
    let task = task_cli(
        &format!("http://{}", svc.addr),
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--purpose", "weekly release"],
    );
    let token = task.json["token"].as_str().unwrap().to_string();
    let console = ConsoleClient::login(svc.admin, &tokens["alice"]).await;
    let id = ask_approval(svc.addr, Some(&token), "{}");
    let path = format!("/console/api/approvals/{id}/deny");
    let bare = console.change(&path, &json!({"reason": "  "})).await;
    assert_eq!(bare.out.status, 400, "{}", bare.out.body);
    let denied = console
        .change(&path, &json!({"reason": "not during the freeze"}))
        .await;
    assert_eq!(denied.out.status, 200, "{}", denied.out.body);
    assert_eq!(denied.out.json()["state"], "denied");
    // The same call asked again is answered with that denial.
    let again = grpcurl(
        svc.addr,
        None,
        "Decide",
        &tollgate_e2e::console::held_pull_request(Some(&token), "{}"),
    )
    .unwrap();
    assert_eq!(again["reason"], "approval_denied", "{again}");
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("not during the freeze"),
        "{again}"
    );
    // Which the recent decisions show, filtered.
    let recent = console
        .get("/console/api/decisions?outcome=approval_denied&action=pulls.create")
        .await
        .out
        .json();
    let first = &recent["decisions"][0];
    assert_eq!(first["reason"], "approval_denied", "{recent}");
    assert_eq!(first["approval"], id.as_str());
    assert_eq!(first["workload"], CODER);
    let none = console
        .get("/console/api/decisions?workload=nobody")
        .await
        .out
        .json();
    assert!(none["decisions"].as_array().unwrap().is_empty(), "{none}");
}

#[tokio::test]
async fn a_task_is_ended_from_the_console() {
    let (svc, tokens) = service(&["alice"]);
    let api = format!("http://{}", svc.addr);
    let task = task_cli(
        &api,
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--purpose", "nightly triage"],
    );
    let id = task.json["id"].as_str().unwrap().to_string();
    let console = ConsoleClient::login(svc.admin, &tokens["alice"]).await;
    let tasks = console.get("/console/api/tasks").await.out.json();
    let listed = &tasks["tasks"][0];
    assert_eq!(listed["id"], id.as_str(), "{tasks}");
    assert_eq!(listed["purpose"], "nightly triage");
    assert_eq!(listed["state"], "active");

    let path = format!("/console/api/tasks/{id}/end");
    let refused = console.post(&path, &[], "").await;
    assert_eq!(refused.out.status, 403);
    let ended = console.change(&path, &json!({})).await;
    assert_eq!(ended.out.status, 200, "{}", ended.out.body);
    assert_eq!(ended.out.json()["state"], "ended");
    let shown = task_cli(&api, Some(ADMIN_TOKEN), &["get", &id]);
    assert_eq!(shown.json["state"], "ended", "{}", shown.json);
    svc.wait_log("task ended from the console");
}

#[tokio::test]
async fn no_approvers_no_console() {
    let svc = DecisionService::start(Setup::default());
    let answer = curl_answer(&[&format!("http://{}/console/login", svc.admin)]).await;
    assert_eq!(answer.out.status, 404);
    svc.wait_log("approval console off");
}

#[tokio::test]
async fn run_deciding_in_process_serves_the_console() {
    let (setup, tokens) = with_approvers(Setup::default(), &["alice"]);
    let tg = Tollgate::start(setup);
    let console = ConsoleClient::login(tg.admin, &tokens["alice"]).await;
    let listed = console.get("/console/api/approvals").await;
    assert_eq!(listed.out.status, 200, "{}", listed.out.body);
    tg.wait_log("approval console");
}
