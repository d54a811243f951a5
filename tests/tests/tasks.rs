//! Tasks end to end: an operator starts a task with the real `tollgate task`
//! command, the agent presents the task token through the proxy, and ending
//! the task (or its TTL passing) stops it everywhere: embedded and remote
//! deciders, warm caches, open tunnels.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_e2e::tasks::{end_task, start_task, task_cli, StartedTask, ADMIN_TOKEN};
use tollgate_e2e::{ask_to_switch, read_head, DecisionService, Setup, Tollgate, Upstream, CODER};

const OTHER: &str = "spiffe://cluster.local/ns/agents/sa/triage";

const CATALOG: &str = r#"
tool: items
description: a test service
endpoints:
  - hosts: [items.test]
    routes:
      - { method: GET, path: "/items/{id}", action: items.get, risk: read, resource: "items/{id}" }
      - { method: POST, path: "/items", action: items.create, risk: write, resource: "items" }
"#;

const POLICIES: &str = r#"
@id("coder-items")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action in Action::"items", resource);

@id("coder-tunnels-in-a-task")
permit (principal == Workload::"spiffe://cluster.local/ns/agents/sa/coder", action == Action::"connect", resource)
when { context has task };

@id("writes-need-a-task")
@reason("writes need a task")
forbid (principal, action in Action::"write", resource) unless { context has task };
"#;

fn setup(upstream: &Upstream) -> Setup {
    Setup {
        extra_catalog: vec![("items.yaml".into(), CATALOG.into())],
        policies: Some(vec![("items.cedar".into(), POLICIES.into())]),
        tasks: true,
        ..Setup::routing("items.test:80", upstream.addr)
    }
}

async fn post(tg: &Tollgate, auth: &str) -> tollgate_e2e::CurlOutput {
    tg.curl(&[
        "-X",
        "POST",
        "-H",
        auth,
        "-d",
        "{}",
        "http://items.test/items",
    ])
    .await
}

async fn get(tg: &Tollgate, auth: &str) -> tollgate_e2e::CurlOutput {
    tg.curl(&["-H", auth, "http://items.test/items/7"]).await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[tokio::test]
async fn a_task_token_carries_writes_until_the_task_ends() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(setup(&upstream));
    let api = tg.decision_url();

    let out = post(&tg, "X-Nothing: here").await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["policy_ids"][0], "writes-need-a-task");

    let task = start_task(&api, CODER, &["--ttl", "10m"]);
    assert!(task.token.starts_with("tgt_"), "{}", task.token);
    let out = post(&tg, &bearer(&task.token)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = tg.wait_audit(|l| l["action"] == "items:items.create" && l["status"] == 200);
    assert_eq!(line["task"], task.id.as_str());
    // The token is the agent's credential to tollgate, never the upstream's.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .headers
            .iter()
            .all(|(_, v)| !v.contains(&task.token)),
        "{:?}",
        seen[0].headers
    );

    let ended = end_task(&api, &task.id);
    assert_eq!(ended["state"], "ended");
    for out in [
        post(&tg, &bearer(&task.token)).await,
        get(&tg, &bearer(&task.token)).await,
    ] {
        assert_eq!(out.status, 401, "{}", out.body);
        assert_eq!(out.json()["reason"], "task_ended");
        assert_eq!(out.json()["task_id"], task.id.as_str());
    }
    assert_eq!(upstream.requests().len(), 1, "nothing after the end");

    let listed = task_cli(&api, Some(ADMIN_TOKEN), &["list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["tasks"][0]["id"], task.id.as_str());
    assert_eq!(listed.json["tasks"][0]["state"], "ended");
    assert!(!listed.json.to_string().contains(&task.token));
}

#[tokio::test]
async fn an_sdk_given_the_task_token_as_its_api_key_sends_the_real_credential() {
    let upstream = Upstream::http().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("items-key");
    std::fs::write(&key, "real-items-key-5b2f").unwrap();
    let tg = Tollgate::start(Setup {
        policies: Some(vec![(
            "items.cedar".into(),
            format!(
                "{POLICIES}\n@id(\"items-with-key\")\n@credential(\"items-key\")\n\
                 permit (principal == Workload::\"{CODER}\", action == Action::\"items:items.create\", resource)\n\
                 when {{ context has task }};\n"
            ),
        )]),
        extra_yaml: format!(
            "credentials:\n  items-key: {{ file: \"{}\", services: [items] }}\n",
            key.display()
        ),
        ..setup(&upstream)
    });
    let task = start_task(&tg.decision_url(), CODER, &[]);
    let out = tg
        .curl(&[
            "-X",
            "POST",
            "-d",
            "{}",
            "-H",
            &bearer(&task.token),
            "-H",
            "Cookie: session=agent-cookie",
            "-H",
            "X-Api-Key: agent-other-key",
            "http://items.test/items",
        ])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = &upstream.requests()[0];
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer real-items-key-5b2f")
    );
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-api-key"), None);
    assert!(seen.headers.iter().all(|(_, v)| !v.contains(&task.token)));
}

#[tokio::test]
async fn a_remote_proxy_with_a_warm_cache_refuses_an_ended_task() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(setup(&upstream));
    let tg = Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        decision_yaml: "  cache_ttl: 10m\n".into(),
        ..setup(&upstream)
    });
    tg.wait_log("following revocations");
    let task = start_task(&service.url(), CODER, &[]);
    for _ in 0..3 {
        let out = get(&tg, &bearer(&task.token)).await;
        assert_eq!(out.status, 200, "{}", out.body);
    }
    // Warm: the service decided once, the proxy's cache answered the rest.
    let decided = |svc: &DecisionService| {
        svc.audit_lines()
            .iter()
            .filter(|l| l["action"] == "items:items.get")
            .count()
    };
    assert_eq!(decided(&service), 1);

    end_task(&service.url(), &task.id);
    tg.wait_log("task ended; its token is refused");
    let out = get(&tg, &bearer(&task.token)).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(out.json()["reason"], "task_ended");
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn expired_foreign_and_out_of_scope_tokens_are_refused() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(setup(&upstream));
    let api = tg.decision_url();

    let short = start_task(&api, CODER, &["--ttl", "1s"]);
    assert_eq!(get(&tg, &bearer(&short.token)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let out = get(&tg, &bearer(&short.token)).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(out.json()["reason"], "task_ended");

    let theirs = start_task(&api, OTHER, &[]);
    let out = get(&tg, &bearer(&theirs.token)).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "task_workload_mismatch");

    let reader = start_task(&api, CODER, &["--scope", "items:items.get"]);
    assert_eq!(get(&tg, &bearer(&reader.token)).await.status, 200);
    let out = post(&tg, &bearer(&reader.token)).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "out_of_scope");

    // A made-up token with the task prefix is refused, not ignored.
    let out = get(&tg, &bearer("tgt_0000000000000000")).await;
    assert_eq!(out.status, 401, "{}", out.body);
    assert_eq!(out.json()["reason"], "task_unknown");
    // Only the two allowed GETs reached the upstream.
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn two_proxies_share_one_budget_and_the_next_write_is_refused() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(setup(&upstream));
    let proxies: Vec<Tollgate> = (0..2)
        .map(|_| {
            Tollgate::start(Setup {
                decision_endpoint: Some(service.url()),
                ..setup(&upstream)
            })
        })
        .collect();
    let task = start_task(&service.url(), CODER, &["--budget", "write=3"]);
    let auth = bearer(&task.token);
    for (i, tg) in [0, 1, 0].iter().map(|i| (i, &proxies[*i])) {
        let out = post(tg, &auth).await;
        assert_eq!(out.status, 200, "write through proxy {i}: {}", out.body);
    }
    let out = post(&proxies[1], &auth).await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "budget_exhausted");
    // Reads have no budget here.
    assert_eq!(get(&proxies[1], &auth).await.status, 200);

    let shown = task_cli(&service.url(), Some(ADMIN_TOKEN), &["get", &task.id]);
    assert_eq!(shown.json["budgets"]["write"]["used"], 3, "{}", shown.json);
    assert_eq!(upstream.requests().len(), 4);
}

#[tokio::test]
async fn only_the_admin_token_administers_tasks() {
    let upstream = Upstream::http().await;
    let service = DecisionService::start(setup(&upstream));
    let url = service.url();
    let start = ["start", "--workload", CODER];

    let none = task_cli(&url, None, &start);
    assert_ne!(none.code, 0);
    assert!(none.stderr.contains("no admin token"), "{}", none.stderr);

    // A workload might find a task token, or make up a token: neither is
    // the admin token.
    let task = start_task(&url, CODER, &[]);
    for wrong in [task.token.as_str(), "guess"] {
        let out = task_cli(&url, Some(wrong), &start);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
        let out = task_cli(&url, Some(wrong), &["end", &task.id]);
        assert_ne!(out.code, 0);
    }
    let shown = task_cli(&url, Some(ADMIN_TOKEN), &["get", &task.id]);
    assert_eq!(shown.json["state"], "active", "{}", shown.stderr);

    let bad = task_cli(
        &url,
        Some(ADMIN_TOKEN),
        &["start", "--workload", CODER, "--budget", "writes=1"],
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid argument"), "{}", bad.stderr);
    let unknown = task_cli(&url, Some(ADMIN_TOKEN), &["end", "task_nope"]);
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);

    // Neither the admin token nor the task token is ever logged.
    for secret in [ADMIN_TOKEN, task.token.as_str()] {
        assert!(!service.logs().contains(secret));
        assert!(!service.stdout_text().contains(secret));
    }
}

/// CONNECT through the proxy to `authority`, with `proxy_auth` as the
/// `Proxy-Authorization` value; returns the stream and the status line.
async fn connect(
    tg: &Tollgate,
    authority: &str,
    proxy_auth: Option<String>,
) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(tg.proxy).await.unwrap();
    let auth = proxy_auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    (s, head.lines().next().unwrap_or("").to_string())
}

#[tokio::test]
async fn ending_a_task_closes_the_tunnels_that_carry_it() {
    let upstream = Upstream::http().await;
    let echo = tollgate_e2e::tcp_echo().await;
    let tg = Tollgate::start(setup(&upstream));
    let api = tg.decision_url();

    let echo = echo.to_string();
    let (_, status) = connect(&tg, &echo, None).await;
    assert!(status.contains(" 403"), "{status}");

    let task = start_task(&api, CODER, &[]);
    let (tunnel, status) = connect(&tg, &echo, Some(format!("Bearer {}", task.token))).await;
    assert!(status.contains(" 200"), "{status}");
    echo_then_end_task(&tg, tunnel, &task, |l| {
        l["mode"] == "tunnel" && l["status"] == 200
    })
    .await;
}

#[tokio::test]
async fn ending_a_task_closes_the_websockets_opened_under_it() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(setup(&upstream));
    let task = start_task(&tg.decision_url(), CODER, &[]);
    let (socket, head) = ask_to_switch(
        tg.proxy,
        "http://items.test/items/7",
        "websocket",
        &[&bearer(&task.token)],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_then_end_task(&tg, socket, &task, |l| l["status"] == 101).await;
}

/// One echo of four bytes through `carrier`, then end `task`: `carrier`
/// must close, and its audit line (the one `is_line` picks) must say why
/// and count what crossed before the end.
async fn echo_then_end_task(
    tg: &Tollgate,
    mut carrier: tokio::net::TcpStream,
    task: &StartedTask,
    is_line: impl Fn(&serde_json::Value) -> bool,
) {
    carrier.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    carrier.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");

    end_task(&tg.decision_url(), &task.id);
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), carrier.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "it stayed open after the task ended");
    let line = tg.wait_audit(is_line);
    assert!(
        line["error"].as_str().unwrap_or("").contains("ended"),
        "{line}"
    );
    assert_eq!(line["task"], task.id.as_str());
    assert_eq!(line["bytes_in"], 4, "{line}");
    assert_eq!(line["bytes_out"], 4, "{line}");
}

#[tokio::test]
async fn ending_a_task_closes_intercepted_http2_connections_that_carry_it() {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let (_pki, _upstream, tg) = tollgate_e2e::github_tls(Setup {
        tasks: true,
        ..Setup::default()
    })
    .await;
    let task = start_task(&tg.decision_url(), CODER, &[]);

    // What `HTTPS_PROXY=http://agent:<token>@proxy` makes a client send.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("agent:{}", task.token));
    let (tcp, status) = connect(&tg, "api.github.com:443", Some(format!("Basic {basic}"))).await;
    assert!(status.contains(" 200"), "{status}");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(tg.ca_cert()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("api.github.com").unwrap(), tcp)
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(conn);
    // The request itself carries no token: the CONNECT's covers it.
    let request = http::Request::get("https://api.github.com/repos/acme/api/pulls")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let line = tg.wait_audit(|l| l["mode"] == "intercept" && l["status"] == 200);
    assert_eq!(line["task"], task.id.as_str());

    end_task(&tg.decision_url(), &task.id);
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        closed.is_ok(),
        "the HTTP/2 connection stayed open after the task ended"
    );
    tg.wait_log("task ended; intercepted connection closed");
}
