//! Report mode (`enforcement:`): a request policy denies is decided,
//! audited as `would_deny` and forwarded, through every front — the
//! explicit proxy, an intercepted `CONNECT`, a blind tunnel, Envoy's
//! ext_authz, a proxy deciding through `Decide`, and `tollgate check` —
//! carrying only the credential a matching permit names. What is never
//! reported stays refused, and a reload switches the mode for the next
//! request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_e2e::envoy::Envoy;
use tollgate_e2e::process::Process;
use tollgate_e2e::tasks::{end_task, start_task};
use tollgate_e2e::{
    curl, send_head, tollgate_bin, JwtIssuer, Setup, TestPki, Tollgate, Upstream, CODER,
};

const PULLS: &str = "/repos/acme/api/pulls";
/// The credential the shipped `coder-open-pull-requests` permit names.
const PR_TOKEN: &str = "Bearer harness-github-pull-requests-value";
/// A host the catalog does not cover: a `CONNECT` there is a blind tunnel.
const UNCOVERED: &str = "uncovered.test:8080";

/// `tollgate_<name>{labels} value` on the admin listener; 0 when absent.
async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let metrics = curl(&[&format!("http://{admin}/metrics")]).await.body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// `POST` a pull request through `proxy` (absolute-form), the agent
/// holding a credential of its own.
async fn open_pull_request(proxy: &str) -> tollgate_e2e::CurlOutput {
    curl(&[
        "-x",
        proxy,
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer agent-own-credential",
        &format!("http://api.github.com{PULLS}"),
    ])
    .await
}

/// `CONNECT authority` by hand; when it is opened, one `GET` through it.
/// The CONNECT's status, and the upstream's when the tunnel opened.
async fn through_tunnel(proxy: SocketAddr, authority: &str) -> (u16, Option<u16>) {
    let line = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    let (mut stream, head) = send_head(proxy, &line, &[]).await;
    let status = head[9..12].parse().unwrap();
    if status != 200 {
        return (status, None);
    }
    let get = format!("GET /x HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(get.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    (status, Some(answer[9..12].parse().unwrap()))
}

/// The first audit line past the first `before` that `pred` accepts,
/// waited for.
fn line_after(tg: &Process, before: usize, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = tg.audit_lines().into_iter().skip(before).find(&pred) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no matching audit line after {before}:\n{}\nlogs:\n{}",
            tg.stdout_text(),
            tg.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_would_deny(line: &Value, reason: &str, policy: Option<&str>) {
    assert_eq!(line["decision"], "would_deny", "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    if let Some(policy) = policy {
        assert_eq!(line["policy_ids"], serde_json::json!([policy]), "{line}");
    }
    assert_eq!(line["status"], 200, "{line}");
}

#[tokio::test]
async fn every_front_forwards_what_policy_denies_and_audits_it_as_would_deny() {
    let pki = TestPki::new();
    let https = Upstream::https(pki.server_config(&["api.github.com"])).await;
    let http = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        resolve: vec![
            ("api.github.com:443".into(), https.addr),
            ("api.github.com:80".into(), http.addr),
            (UNCOVERED.into(), http.addr),
        ],
        upstream_ca: Some(pki.ca_pem.clone()),
        tasks: true,
        extra_yaml: "enforcement:\n  mode: report\n".into(),
        ..Setup::default()
    });
    tg.wait_log("report mode: policy denials for these tools");
    // A second proxy deciding through the first one's `Decide`: the
    // decision service's modes apply, and it says its own are not used.
    let remote = Tollgate::start(Setup {
        decision_endpoint: Some(tg.decision_url()),
        decision_yaml: "  timeout: 10s\n".into(),
        extra_yaml: "enforcement:\n  mode: report\n".into(),
        ..Setup::routing("api.github.com:80", http.addr)
    });
    let envoy = Envoy::gateway(tg.decision.unwrap(), http.addr);
    let would_deny = "tollgate_would_deny_total{tool=\"github\",reason=\"forbidden\"}";
    let as_would_deny = "tollgate_requests_total{tool=\"github\",action=\"github:pulls.create\",decision=\"would_deny\"}";
    let as_allow = "tollgate_requests_total{tool=\"github\",action=\"github:pulls.create\",decision=\"allow\"}";
    assert_eq!(metric(tg.admin, would_deny).await, 0, "registered at zero");

    // The explicit proxy: a write outside a task is forbidden by
    // `writes-need-a-task`, and goes out with the credential of the permit
    // that grants pull requests, never the agent's own.
    let before = tg.audit_lines().len();
    let out = open_pull_request(&tg.proxy_url()).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = line_after(&tg, before, |l| l["mode"] == "http");
    assert_would_deny(&line, "forbidden", Some("writes-need-a-task"));
    assert_eq!(line["action"], "github:pulls.create");
    let seen = http.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some(PR_TOKEN));

    // Intercepted CONNECT, TLS to the minted leaf.
    let before = tg.audit_lines().len();
    let ca = tg.ca_cert();
    let out = curl(&[
        "-x",
        &tg.proxy_url(),
        "--cacert",
        ca.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer agent-own-credential",
        &format!("https://api.github.com{PULLS}"),
    ])
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = line_after(&tg, before, |l| l["mode"] == "intercept");
    assert_would_deny(&line, "forbidden", Some("writes-need-a-task"));
    let seen = https.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some(PR_TOKEN));

    // A prod_change nobody may do and no permit grants: forwarded with no
    // credential at all.
    let before = tg.audit_lines().len();
    let out = curl(&[
        "-x",
        &tg.proxy_url(),
        "-X",
        "DELETE",
        "-H",
        "Authorization: Bearer agent-own-credential",
        "http://api.github.com/repos/acme/api",
    ])
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = line_after(&tg, before, |l| l["action"] == "github:repos.delete");
    assert_would_deny(&line, "forbidden", Some("forbid-prod-change"));
    let seen = http.requests().pop().unwrap();
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.header("authorization"), None, "{:?}", seen.headers);

    // A blind tunnel to a host no policy lets anyone reach.
    let before = tg.audit_lines().len();
    assert_eq!(through_tunnel(tg.proxy, UNCOVERED).await, (200, Some(200)));
    let line = line_after(&tg, before, |l| l["mode"] == "tunnel");
    assert_would_deny(&line, "no_permit", None);
    assert_eq!(line["action"], "connect");

    // Envoy: ext_authz answers OK, Envoy forwards with the planned
    // credential, and its access log carries the would-deny reason.
    let before = tg.audit_lines().len();
    let out = curl(&[
        "-X",
        "POST",
        "-H",
        "Host: api.github.com",
        "-H",
        "Authorization: Bearer agent-own-credential",
        &format!("{}{PULLS}", envoy.url()),
    ])
    .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = line_after(&tg, before, |l| l["mode"] == "ext_authz");
    assert_would_deny(&line, "forbidden", Some("writes-need-a-task"));
    let logged = envoy.wait_access_log(|l| l["decision_id"] == line["decision_id"]);
    assert_eq!(logged["would_deny"], "forbidden", "{logged}");
    assert_eq!(logged["status"], 200, "{logged}");
    let seen = http.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some(PR_TOKEN));
    // An allowed request's access log line carries no would-deny.
    let out = curl(&[
        "-H",
        "Host: api.github.com",
        &format!("{}{PULLS}", envoy.url()),
    ])
    .await;
    assert_eq!(out.status, 200);
    let allowed = envoy.wait_access_log(|l| l["method"] == "GET");
    assert!(
        allowed["would_deny"].is_null() || allowed["would_deny"] == "-",
        "{allowed}"
    );

    // A proxy deciding remotely: both lines say would_deny, and it
    // forwards with the credential its own store holds.
    let (before, remote_before) = (tg.audit_lines().len(), remote.audit_lines().len());
    let out = open_pull_request(&remote.proxy_url()).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = line_after(&remote, remote_before, |l| l["mode"] == "http");
    assert_would_deny(&line, "forbidden", Some("writes-need-a-task"));
    let decided = line_after(&tg, before, |l| l["mode"] == "decide");
    assert_eq!(decided["decision"], "would_deny", "{decided}");
    assert_eq!(decided["policy_ids"], line["policy_ids"]);
    let seen = http.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some(PR_TOKEN));
    remote.wait_log("`enforcement:` is not used");

    // `tollgate check` shows the same, with the plan it would apply.
    let out = std::process::Command::new(tollgate_bin())
        .args(["check", "--config"])
        .arg(tg.path("tollgate.yaml"))
        .args(["--identity", CODER, "POST"])
        .arg(format!("https://api.github.com{PULLS}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let checked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(checked["decision"], "would_deny", "{checked}");
    assert_eq!(checked["reason"], "forbidden");
    assert_eq!(checked["credential"], "github-pull-requests");
    assert!(
        checked["message"].as_str().unwrap().contains("task token"),
        "{checked}"
    );

    // Counted apart from allows, where each was decided: the proxy, the
    // intercepted tunnel, ext_authz and `Decide` on the first; the
    // remote proxy's own line on the second.
    assert_eq!(metric(tg.admin, would_deny).await, 5, "with the DELETE");
    assert_eq!(metric(tg.admin, as_would_deny).await, 4);
    assert_eq!(metric(tg.admin, as_allow).await, 0);
    assert_eq!(metric(remote.admin, as_would_deny).await, 1);
    let connect = "tollgate_would_deny_total{tool=\"\",reason=\"no_permit\"}";
    assert_eq!(metric(tg.admin, connect).await, 1);
}

/// Wait until the process has reloaded `n` times since it started.
fn wait_reloads(tg: &Tollgate, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while tg
        .logs()
        .matches("catalog, policies and credentials reloaded")
        .count()
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload:\n{}",
            tg.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_tools_mode_wins_over_the_global_one_and_a_reload_switches_it() {
    let http = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        resolve: vec![
            ("api.github.com:80".into(), http.addr),
            (UNCOVERED.into(), http.addr),
        ],
        extra_yaml: "enforcement:\n  mode: enforce\n  tools:\n    github: report\n".into(),
        ..Setup::default()
    });
    let mut section = "enforcement:\n  mode: enforce\n  tools:\n    github: report\n";
    let phases = [
        // (the file's section, github's status and decision, the tunnel's)
        (section, (200, "would_deny"), 403),
        (
            "enforcement:\n  mode: report\n  tools:\n    github: enforce\n",
            (403, "deny"),
            200,
        ),
        ("enforcement:\n  mode: enforce\n", (403, "deny"), 403),
    ];
    for (n, (next, (github, decision), tunnel)) in phases.into_iter().enumerate() {
        if n > 0 {
            tg.rewrite("tollgate.yaml", |text| text.replacen(section, next, 1));
            section = next;
            wait_reloads(&tg, n);
        }
        let before = tg.audit_lines().len();
        let out = open_pull_request(&tg.proxy_url()).await;
        assert_eq!(out.status, github, "phase {n}: {}", out.body);
        let line = line_after(&tg, before, |l| l["action"] == "github:pulls.create");
        assert_eq!(line["decision"], decision, "phase {n}: {line}");
        assert_eq!(line["reason"], "forbidden", "phase {n}");
        if github == 403 {
            assert_eq!(out.json()["decision"], "deny");
        }
        let before = tg.audit_lines().len();
        let (status, _) = through_tunnel(tg.proxy, UNCOVERED).await;
        assert_eq!(status, tunnel, "phase {n}");
        let line = line_after(&tg, before, |l| l["mode"] == "tunnel");
        let expected = if tunnel == 200 { "would_deny" } else { "deny" };
        assert_eq!(line["decision"], expected, "phase {n}: {line}");
        assert_eq!(line["reason"], "no_permit", "phase {n}");
    }
    // Only the reported requests reached the upstream: one pull request
    // and one request through the tunnel.
    assert_eq!(http.count(), 2, "{:?}", http.requests());

    // A tool the catalog does not have is refused at its line; the running
    // modes stay.
    tg.rewrite("tollgate.yaml", |text| {
        text.replacen(section, "enforcement:\n  tools:\n    gihtub: report\n", 1)
    });
    tg.wait_log("`gihtub` is not a tool in the catalog");
    assert!(
        tg.logs().contains("tollgate.yaml:"),
        "the error names the file"
    );
    assert_eq!(open_pull_request(&tg.proxy_url()).await.status, 403);
}

#[tokio::test]
async fn the_address_guard_tasks_and_identity_are_never_reported() {
    let http = Upstream::http().await;
    let issuer = JwtIssuer::new();
    issuer.add_key("k1", "ES256");
    let jwks = issuer.write_jwks(&["k1"]);
    let tg = Tollgate::start(Setup {
        resolve: vec![
            ("api.github.com:80".into(), http.addr),
            // Cloud metadata: refused before any connection is tried.
            ("metadata.test:80".into(), "169.254.169.254:80".parse().unwrap()),
        ],
        more_listeners_yaml: "  - name: jwt\n    address: 127.0.0.1:0\n    identity: { jwt: [k8s] }\n"
            .into(),
        extra_yaml: format!(
            "enforcement:\n  mode: report\n\
             identity:\n  issuers:\n    - {{ name: k8s, issuer: \"https://k8s.test\", audiences: [tollgate], \
             kind: kubernetes, trust_domain: cluster.local, jwks: {{ file: \"{}\" }} }}\n",
            jwks.display()
        ),
        tasks: true,
        ..Setup::default()
    });
    let decisions = tg.decision_url();
    let ended = start_task(&decisions, CODER, &[]);
    end_task(&decisions, &ended.id);
    let pulls = format!("http://api.github.com{PULLS}");
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    let proxy = tg.proxy_url();
    let jwt_proxy = format!("http://{}", tg.listener("jwt"));
    let cases: Vec<(&str, Vec<String>, u16, &str)> = vec![
        (
            "an uncovered host whose name resolves to a metadata address",
            vec![
                "-x".into(),
                proxy.clone(),
                "http://metadata.test/latest".into(),
            ],
            403,
            "destination_blocked",
        ),
        (
            "the token of an ended task",
            vec![
                "-x".into(),
                proxy.clone(),
                "-H".into(),
                bearer(&ended.token),
                pulls.clone(),
            ],
            401,
            "task_ended",
        ),
        (
            "a task token nobody issued",
            vec![
                "-x".into(),
                proxy.clone(),
                "-H".into(),
                bearer("tgt_0000000000000000000000000000000000000000000000000000000000000000"),
                pulls.clone(),
            ],
            401,
            "task_unknown",
        ),
        (
            "a JWT listener and no token",
            vec![
                "-x".into(),
                jwt_proxy.clone(),
                "-X".into(),
                "POST".into(),
                pulls.clone(),
            ],
            407,
            "unidentified",
        ),
    ];
    for (name, args, status, reason) in cases {
        let before = tg.audit_lines().len();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&args).await;
        assert_eq!(out.status, status, "{name}: {}", out.body);
        let line = line_after(&tg, before, |l| l["reason"] == reason);
        assert_eq!(line["decision"], "deny", "{name}: {line}");
        assert_eq!(line["status"], status, "{name}: {line}");
    }
    // The address guard also holds on a blind tunnel report mode opened.
    let before = tg.audit_lines().len();
    let (status, _) = through_tunnel(tg.proxy, "metadata.test:80").await;
    assert_eq!(status, 403);
    let line = line_after(&tg, before, |l| l["mode"] == "tunnel");
    assert_eq!(
        (line["decision"].as_str(), line["reason"].as_str()),
        (Some("deny"), Some("destination_blocked")),
        "{line}"
    );
    assert_eq!(http.count(), 0, "{:?}", http.requests());
}
