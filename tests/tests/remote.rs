//! `tollgate run` deciding through a remote `tollgate decision`: the same
//! answers as embedded mode, fail closed while the service is away, and a
//! policy change on the service reaches the proxy's cache.

use tollgate_e2e::tasks::{task_cli, ADMIN_TOKEN};
use tollgate_e2e::{DecisionService, MtlsFiles, Setup, TestPki, Tollgate, Upstream};

const PULLS: &str = "http://api.github.com/repos/acme/api/pulls";
const DELETE_REPO: &str = "http://api.github.com/repos/acme/api";

fn remote(upstream: &Upstream, service: &DecisionService) -> Setup {
    Setup {
        decision_endpoint: Some(service.url()),
        ..Setup::routing("api.github.com:80", upstream.addr)
    }
}

/// Poll (bounded) until `status` comes back for GET `url`.
async fn eventually(tg: &Tollgate, url: &str, status: u16) {
    for _ in 0..100 {
        if tg.curl(&[url]).await.status == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("never got {status} for {url}:\n{}", tg.logs());
}

#[tokio::test]
async fn remote_decisions_allow_and_deny_like_embedded_ones() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(Setup::default());
    let tg = Tollgate::start(remote(&upstream, &service));

    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 200, "{}\n{}", out.body, tg.logs());
    let out = tg.curl(&["-X", "DELETE", DELETE_REPO]).await;
    assert_eq!(out.status, 403);
    let body = out.json();
    assert_eq!(body["reason"], "forbidden");
    assert_eq!(body["policy_ids"][0], "forbid-prod-change");
    assert_eq!(upstream.count(), 1);

    // Both planes log the decision, and the service counts it.
    let line = service.wait_audit(|l| l["action"] == "github:repos.delete");
    assert_eq!(line["mode"], "decide");
    assert_eq!(line["decision"], "deny");
    let metrics = tollgate_e2e::curl(&[&format!("http://{}/metrics", service.admin)]).await;
    assert!(
        metrics.body.contains(
            r#"tollgate_requests_total{tool="github",action="github:repos.delete",decision="deny"} 1"#
        ),
        "{}",
        metrics.body
    );
    let ready = tollgate_e2e::curl(&[&format!("http://{}/readyz", service.admin)]).await;
    assert_eq!(ready.status, 200);
    let line = tg.wait_audit(|l| l["action"] == "github:repos.delete");
    assert_eq!(line["reason"], "forbidden");
}

#[tokio::test]
async fn a_proxy_that_leaves_is_seen_to_leave() {
    // The service holds a revocation stream per proxy. When the proxy is
    // gone, its stream must go too, not wait for an event that may never
    // come.
    let upstream = Upstream::http().await;
    let service = DecisionService::start(Setup::default());
    let tg = Tollgate::start(remote(&upstream, &service));
    service.wait_log("revocation subscriber connected");
    assert!(!service.logs().contains("revocation subscriber gone"));
    drop(tg);
    service.wait_log("revocation subscriber gone");
}

#[tokio::test]
async fn service_down_denies_with_decision_unavailable_and_recovers() {
    let upstream = Upstream::http().await;
    let mut service = DecisionService::start(Setup::default());
    let tg = Tollgate::start(remote(&upstream, &service));
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);

    service.stop();
    // The cached allow must not outlive the revocation stream: once the
    // proxy has noticed, every request is refused.
    tg.wait_log("lost the revocation stream");
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 503, "{}", out.body);
    assert_eq!(out.json()["reason"], "decision_unavailable");
    let line = tg.wait_audit(|l| l["reason"] == "decision_unavailable");
    assert_eq!(line["decision"], "deny");
    assert_eq!(upstream.count(), 1);

    service.restart();
    eventually(&tg, PULLS, 200).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_policy_reload_on_the_service_reaches_the_proxy_cache() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(Setup::default());
    let tg = Tollgate::start(remote(&upstream, &service));
    // Allowed, and now cached in the proxy.
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);
    assert_eq!(tg.curl(&[PULLS]).await.status, 200);

    std::fs::write(
        service.path("policies/zz-no-reads.cedar"),
        "@id(\"no-reads\")\nforbid(principal, action in Action::\"read\", resource);\n",
    )
    .unwrap();
    service.wait_log("catalog, policies and credentials reloaded");
    tg.wait_log("policy epoch changed; decision cache dropped");
    let out = tg.curl(&[PULLS]).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["policy_ids"][0], "no-reads");
}

#[tokio::test]
async fn grpcurl_lists_services_checks_health_and_decides() {
    let service = DecisionService::start(Setup::default());
    let grpcurl = tollgate_e2e::repo_root().join(".venv/bin/grpcurl");
    assert!(grpcurl.exists(), "run scripts/setup-test-env");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&grpcurl)
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let addr = service.addr.to_string();
    let listed = run(&[&addr, "list"]);
    for name in ["tollgate.authz.v1.DecisionService", "grpc.health.v1.Health"] {
        assert!(listed.contains(name), "{listed}");
    }
    let health = run(&[&addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    // What a probe in front of Envoy's ext_authz asks for.
    let envoy_health = run(&[
        "-d",
        r#"{"service":"envoy.service.auth.v3.Authorization"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(envoy_health.contains("SERVING"), "{envoy_health}");
    let request = serde_json::json!({
        "principal": tollgate_e2e::CODER,
        "action": "github:pulls.list",
        "resource": "github/repos/acme/api",
        "context": {"method": "GET", "host": "api.github.com", "port": 443,
                    "path": "/repos/acme/api/pulls", "tool": "github", "risk": "read",
                    "sensitivity": "internal"}
    })
    .to_string();
    let decided = run(&[
        "-d",
        &request,
        &addr,
        "tollgate.authz.v1.DecisionService/Decide",
    ]);
    let v: serde_json::Value = serde_json::from_str(&decided).unwrap();
    assert_eq!(v["outcome"], "OUTCOME_ALLOW", "{v}");
    assert_eq!(v["policyIds"][0], "coder-github-read");
    assert_eq!(v["credential"], "github-readonly");
}

#[tokio::test]
async fn a_decide_request_without_context_is_invalid_argument() {
    // Refused, not decided on guessed values.
    let service = DecisionService::start(Setup::default());
    let grpcurl = tollgate_e2e::repo_root().join(".venv/bin/grpcurl");
    let out = std::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"principal":"x","action":"github:pulls.list"}"#,
        ])
        .arg(service.addr.to_string())
        .arg("tollgate.authz.v1.DecisionService/Decide")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("InvalidArgument"), "{text}");
}

#[tokio::test]
async fn mutual_tls_between_proxy_and_service() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::new().mtls_files(dir.path(), "proxy.tollgate.test");
    let MtlsFiles {
        ca,
        client_cert,
        client_key,
        ..
    } = &files;

    let service = DecisionService::start(Setup {
        decision_service_yaml: files.service_tls_yaml(),
        tasks: true,
        ..Setup::default()
    });
    let url = format!("https://{}", service.addr);
    let upstream = Upstream::http().await;
    let with_identity = Tollgate::start(Setup {
        decision_endpoint: Some(url.clone()),
        decision_yaml: format!(
            "  tls: {{ ca: \"{ca}\", cert: \"{client_cert}\", key: \"{client_key}\" }}\n"
        ),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    assert_eq!(
        with_identity.curl(&[PULLS]).await.status,
        200,
        "{}",
        with_identity.logs()
    );

    // Without a client certificate the service refuses the connection, so
    // the proxy has no decision: deny.
    let without_identity = Tollgate::start(Setup {
        decision_endpoint: Some(url.clone()),
        decision_yaml: format!("  tls: {{ ca: \"{ca}\" }}\n"),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    let out = without_identity.curl(&[PULLS]).await;
    assert_eq!(out.status, 503);
    assert_eq!(out.json()["reason"], "decision_unavailable");
    assert_eq!(upstream.count(), 1);

    // An operator administers tasks over the same mTLS listener.
    let listed = task_cli(
        &url,
        Some(ADMIN_TOKEN),
        &[
            "list",
            "--ca",
            ca,
            "--cert",
            client_cert,
            "--key",
            client_key,
        ],
    );
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["tasks"], serde_json::json!([]));
    let refused = task_cli(&url, Some(ADMIN_TOKEN), &["list", "--ca", ca]);
    assert_ne!(refused.code, 0, "no client certificate, no admin call");
}
