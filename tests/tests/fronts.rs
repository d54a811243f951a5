//! One decision core behind every front: the same requests sent through
//! the explicit proxy (absolute-form), an intercepted `CONNECT`, a blind
//! `CONNECT` tunnel, a real Envoy asking ext_authz, a proxy deciding
//! through the gRPC `Decide`, and `tollgate check` get the same status, the
//! same reason, the same audit fields and the same metrics.
//!
//! One `tollgate run` (embedded decisions, tasks on, so it also serves the
//! decision port) is the proxy, the ext_authz service Envoy asks and the
//! `Decide` service a second, remote-mode `tollgate run` asks. "GitHub" is
//! two local upstreams: plain HTTP (absolute-form, Envoy, the remote
//! proxy) and HTTPS with a certificate minted for the test (interception).

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tollgate_e2e::envoy::Envoy;
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::tasks::{end_task, start_task};
use tollgate_e2e::{
    curl, send_head, tollgate_bin, Setup, TestPki, Tollgate, Upstream, CODER, HARNESS_CREDENTIALS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    /// `GET http://api.github.com/…` to the explicit proxy.
    Proxy,
    /// `CONNECT api.github.com:443`, TLS to tollgate's minted leaf.
    Intercept,
    /// `CONNECT host:port` to a host the catalog does not cover.
    Tunnel,
    /// Plain HTTP to Envoy, which asks tollgate's ext_authz.
    ExtAuthz,
    /// A second tollgate in remote mode: its own core names the request,
    /// the first one's `Decide` decides it.
    Decide,
    /// `tollgate check`, offline, on the first one's configuration.
    Check,
}

use Front::*;

/// The fields every front's audit line (or `check`'s output) must agree on.
const AGREED: [&str; 11] = [
    "workload",
    "tool",
    "action",
    "resource",
    "risk",
    "sensitivity",
    "decision",
    "reason",
    "policy_ids",
    "task",
    "status",
];

/// One request, and what every front must answer.
struct Row {
    name: &'static str,
    method: &'static str,
    /// Where: a path on api.github.com, or `host:port` of an uncovered host.
    to: To,
    headers: Vec<String>,
    status: u16,
    reason: &'static str,
    action: Option<&'static str>,
    fronts: &'static [Front],
}

enum To {
    Github(&'static str),
    Uncovered(&'static str),
}

impl To {
    fn is_github(&self) -> bool {
        matches!(self, To::Github(_))
    }
}

/// What one front did with one row.
struct Seen {
    status: u16,
    /// The refusal body, when tollgate answered itself.
    body: Value,
    /// Its audit line (`check`: its output).
    line: Value,
    /// For `Decide`: the deciding tollgate's line (mode `decide`), when the
    /// request got as far as a decision.
    decide_line: Option<Value>,
}

struct Stack {
    _pki: TestPki,
    _https: Upstream,
    http: Upstream,
    tg: Tollgate,
    remote: Tollgate,
    envoy: Envoy,
}

async fn stack() -> Stack {
    let pki = TestPki::new();
    let https = Upstream::https(pki.server_config(&["api.github.com"])).await;
    let http = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        resolve: vec![
            ("api.github.com:443".into(), https.addr),
            ("api.github.com:80".into(), http.addr),
        ],
        upstream_ca: Some(pki.ca_pem.clone()),
        tasks: true,
        ..Setup::default()
    });
    // A slow machine must not turn a decision into `decision_unavailable`.
    let remote = Tollgate::start(Setup {
        decision_endpoint: Some(tg.decision_url()),
        decision_yaml: "  timeout: 10s\n".into(),
        ..Setup::routing("api.github.com:80", http.addr)
    });
    let envoy = Envoy::gateway(tg.decision.unwrap(), http.addr);
    Stack {
        _pki: pki,
        _https: https,
        http,
        tg,
        remote,
        envoy,
    }
}

/// `tollgate_requests_total{tool, action, decision}` on the admin listener.
async fn counted(admin: SocketAddr, (tool, action, decision): (&str, &str, &str)) -> u64 {
    let series = format!(
        "tollgate_requests_total{{tool=\"{tool}\",action=\"{action}\",decision=\"{decision}\"}} "
    );
    let metrics = curl(&[&format!("http://{admin}/metrics")]).await.body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The audit line written after the first `before` ones, waited for.
fn new_line(tg: &Tollgate, before: usize) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = tg.audit_lines();
        if lines.len() > before {
            assert_eq!(lines.len(), before + 1, "more than one line: {lines:?}");
            return lines[before].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new audit line after:\n{}",
            tg.stdout_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `CONNECT authority` by hand, with `headers`; the status, head and body.
async fn connect(proxy: SocketAddr, authority: &str, headers: &[String]) -> (u16, String, Value) {
    let line = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (mut stream, head) = send_head(proxy, &line, &headers).await;
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (
        status,
        head,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn json_or_null(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl Stack {
    async fn send(&self, row: &Row, front: Front) -> Seen {
        let mut args: Vec<String> = vec!["-X".into(), row.method.into()];
        for h in &row.headers {
            args.extend(["-H".into(), h.clone()]);
        }
        let path = match row.to {
            To::Github(path) => path,
            To::Uncovered(_) => "/",
        };
        let url = |scheme: &str| match row.to {
            To::Github(path) => format!("{scheme}://api.github.com{path}"),
            To::Uncovered(authority) => format!("{scheme}://{authority}/"),
        };
        let before = self.tg.audit_lines().len();
        let run = |args: Vec<String>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = curl(&args).await;
            assert_eq!(out.exit, 0, "{}: {front:?}: {}", row.name, out.stderr);
            out
        };
        // The first tollgate answered and wrote the line.
        let answered_by_tg = |out: tollgate_e2e::CurlOutput| Seen {
            status: out.status,
            body: json_or_null(&out.body),
            line: new_line(&self.tg, before),
            decide_line: None,
        };
        match front {
            Proxy | Intercept => {
                let ca = self.tg.ca_cert();
                let mut all = vec!["-x".into(), self.tg.proxy_url()];
                if front == Intercept {
                    all.extend(["--cacert".into(), ca.display().to_string()]);
                }
                all.extend(args);
                all.push(url(if front == Intercept { "https" } else { "http" }));
                answered_by_tg(run(all).await)
            }
            Tunnel => {
                let To::Uncovered(authority) = row.to else {
                    panic!("{}: a tunnel goes to an uncovered host", row.name)
                };
                let (status, _, body) = connect(self.tg.proxy, authority, &row.headers).await;
                Seen {
                    status,
                    body,
                    line: new_line(&self.tg, before),
                    decide_line: None,
                }
            }
            ExtAuthz => {
                let mut all = args;
                all.extend(["-H".into(), "Host: api.github.com".into()]);
                all.push(format!("{}{path}", self.envoy.url()));
                answered_by_tg(run(all).await)
            }
            Decide => {
                let remote_before = self.remote.audit_lines().len();
                let mut all = vec!["-x".into(), self.remote.proxy_url()];
                all.extend(args);
                all.push(url("http"));
                let out = run(all).await;
                let line = new_line(&self.remote, remote_before);
                // A request the proxy could not name (an unreadable path)
                // never reaches the service, and the token of a task the
                // service announced as ended is refused without asking.
                let asked = line["action"].is_string() && line["reason"] != "task_ended";
                let decide_line = asked.then(|| new_line(&self.tg, before));
                Seen {
                    status: out.status,
                    body: json_or_null(&out.body),
                    line,
                    decide_line,
                }
            }
            Check => {
                let mut cmd = std::process::Command::new(tollgate_bin());
                cmd.args(["check", "--config"])
                    .arg(self.tg.path("tollgate.yaml"))
                    .args(["--identity", CODER]);
                for h in &row.headers {
                    cmd.args(["-H", h]);
                }
                let out = cmd.args([row.method, &url("https")]).output().unwrap();
                assert!(out.status.success(), "{}: check: {out:?}", row.name);
                let line = json_or_null(String::from_utf8_lossy(&out.stdout).trim());
                Seen {
                    status: line["status"].as_u64().unwrap() as u16,
                    body: Value::Null,
                    line,
                    decide_line: None,
                }
            }
        }
    }
}

/// Every front gives `row` the answer the row expects, counts it once in
/// `tollgate_requests_total`, and all of them agree on every audit field.
async fn agree(stack: &Stack, row: &Row, collected: &mut Collected) {
    let tool = match (row.to.is_github(), row.action) {
        (true, Some(_)) => "github",
        _ => "",
    };
    let series = (
        tool,
        row.action.unwrap_or(""),
        if row.status == 200 { "allow" } else { "deny" },
    );
    let mut first: Option<(Front, Value)> = None;
    for &front in row.fronts {
        let (tg_before, remote_before) = (
            counted(stack.tg.admin, series).await,
            counted(stack.remote.admin, series).await,
        );
        let seen = stack.send(row, front).await;
        let case = format!("{} via {front:?}: {} / {}", row.name, seen.line, seen.body);
        collected.add(format!("{case}: answer"), seen.body.to_string());
        collected.add(format!("{case}: line"), seen.line.to_string());
        assert_eq!(seen.status, row.status, "{case}");
        assert_eq!(seen.line["reason"], row.reason, "{case}");
        assert_eq!(seen.line["action"].as_str(), row.action, "{case}");
        assert_eq!(seen.line["status"], row.status, "{case}");
        if row.status >= 400 && front != Check {
            // tollgate's own refusal, with its decision id, whichever front
            // sent it.
            assert_eq!(seen.body["decision_id"], seen.line["decision_id"], "{case}");
            let reason = seen.body.get("reason").or(seen.body.get("error"));
            assert_eq!(reason.and_then(Value::as_str), Some(row.reason), "{case}");
        }
        // Counted once where it was decided (offline `check` counts
        // nothing); through `Decide`, by the proxy and by the service.
        let (tg_after, remote_after) = (
            counted(stack.tg.admin, series).await,
            counted(stack.remote.admin, series).await,
        );
        let (tg_adds, remote_adds) = match front {
            Check => (0, 0),
            Decide => (u64::from(seen.decide_line.is_some()), 1),
            _ => (1, 0),
        };
        assert_eq!(tg_after, tg_before + tg_adds, "{case}: {series:?}");
        assert_eq!(
            remote_after,
            remote_before + remote_adds,
            "{case}: {series:?}"
        );
        for line in [Some(&seen.line), seen.decide_line.as_ref()]
            .into_iter()
            .flatten()
        {
            match &first {
                None => first = Some((front, line.clone())),
                Some((by, reference)) => {
                    for field in AGREED {
                        assert_eq!(
                            line[field], reference[field],
                            "{}: `{field}` via {front:?} differs from via {by:?}:\n{line}\n{reference}",
                            row.name
                        );
                    }
                }
            }
        }
        if let Some(decided) = &seen.decide_line {
            assert_eq!(decided["mode"], "decide", "{case}");
        }
    }
}

#[tokio::test]
async fn every_front_gives_the_same_request_the_same_answer() {
    let stack = stack().await;
    let decisions = stack.tg.decision_url();
    let live = start_task(&decisions, CODER, &[]);
    let ended = start_task(&decisions, CODER, &[]);
    end_task(&decisions, &ended.id);
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    const ALL: &[Front] = &[Proxy, Intercept, ExtAuthz, Decide, Check];
    // No task is known offline: `check` leaves the task rows out.
    const ONLINE: &[Front] = &[Proxy, Intercept, ExtAuthz, Decide];
    let rows = [
        Row {
            name: "a read the coder may do",
            method: "GET",
            to: To::Github("/repos/acme/api/pulls"),
            headers: vec![],
            status: 200,
            reason: "allowed",
            action: Some("github:pulls.list"),
            fronts: ALL,
        },
        Row {
            name: "a write outside a task",
            method: "POST",
            to: To::Github("/repos/acme/api/pulls"),
            headers: vec![],
            status: 403,
            reason: "forbidden",
            action: Some("github:pulls.create"),
            fronts: ALL,
        },
        Row {
            name: "a prod_change nobody may do",
            method: "DELETE",
            to: To::Github("/repos/acme/api"),
            headers: vec![],
            status: 403,
            reason: "forbidden",
            action: Some("github:repos.delete"),
            fronts: ALL,
        },
        Row {
            name: "a route the catalog does not know",
            method: "GET",
            to: To::Github("/some/new/endpoint"),
            headers: vec![],
            status: 403,
            reason: "forbidden",
            action: Some("github:unknown"),
            fronts: ALL,
        },
        Row {
            name: "an encoded separator",
            method: "GET",
            to: To::Github("/repos/acme%2Fapi/pulls"),
            headers: vec![],
            status: 400,
            reason: "malformed_request",
            action: None,
            fronts: ALL,
        },
        Row {
            name: "a write inside a live task",
            method: "POST",
            to: To::Github("/repos/acme/api/pulls"),
            headers: vec![bearer(&live.token)],
            status: 200,
            reason: "allowed",
            action: Some("github:pulls.create"),
            fronts: ONLINE,
        },
        Row {
            name: "the token of an ended task",
            method: "GET",
            to: To::Github("/repos/acme/api/pulls"),
            headers: vec![bearer(&ended.token)],
            status: 401,
            reason: "task_ended",
            action: Some("github:pulls.list"),
            fronts: ONLINE,
        },
        Row {
            name: "a task token nobody issued",
            method: "GET",
            to: To::Github("/repos/acme/api/pulls"),
            headers: vec![bearer(
                "tgt_0000000000000000000000000000000000000000000000000000000000000000",
            )],
            status: 401,
            reason: "task_unknown",
            action: Some("github:pulls.list"),
            fronts: ALL,
        },
        Row {
            name: "a host the catalog does not cover",
            method: "GET",
            to: To::Uncovered("example.org:443"),
            headers: vec![],
            status: 403,
            reason: "no_permit",
            action: Some("connect"),
            fronts: &[Proxy, Tunnel, Decide, Check],
        },
    ];
    let mut collected = Collected::new();
    for row in &rows {
        agree(&stack, row, &mut collected).await;
    }
    // Whatever front it went through, no credential the core planned and
    // no task token reached a log, an audit line or an answer.
    for (name, tg) in [("tollgate", &stack.tg), ("remote", &stack.remote)] {
        collected.add(format!("{name} logs"), tg.logs());
        collected.add(format!("{name} audit"), tg.stdout_text());
    }
    collected.add("envoy", stack.envoy.logs());
    let mut secrets: Vec<&str> = HARNESS_CREDENTIALS
        .iter()
        .map(|(_, value)| *value)
        .collect();
    secrets.extend([live.token.as_str(), ended.token.as_str()]);
    assert_no_secrets(&secrets, &collected);
    // Only the allowed rows reached GitHub, once per front that forwards
    // plain HTTP there (the proxy, Envoy, the remote proxy).
    assert_eq!(stack.http.count(), 2 * 3, "{:?}", stack.http.requests());
    // The task's line names it on every front that decided it.
    let lines = stack.tg.audit_lines();
    let in_task = lines
        .iter()
        .filter(|l| l["task"] == live.id.as_str())
        .count();
    assert_eq!(in_task, 4, "proxy, intercept, ext_authz, decide");
}

#[tokio::test]
async fn an_unidentified_caller_is_asked_to_authenticate_on_every_front() {
    let http = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        identity: None,
        tasks: true,
        ..Setup::routing("api.github.com:80", http.addr)
    });
    // The shipped gateway names the workload on its route; this one does
    // not, and its callers present no certificate.
    let envoy = Envoy::gateway_edited(tg.decision.unwrap(), http.addr, |text| {
        tollgate_e2e::envoy::replace_once(
            &text,
            "tollgate_workload: \"spiffe://cluster.local/ns/agents/sa/coder\"",
            "unrelated: \"x\"",
        )
    });
    let mut answers = Vec::new();
    // Absolute-form through the proxy.
    let before = tg.audit_lines().len();
    let out = curl(&[
        "-x",
        &tg.proxy_url(),
        "-D",
        "-",
        "http://api.github.com/repos/acme/api/pulls",
    ])
    .await;
    answers.push(("proxy", out.status, out.body.clone(), new_line(&tg, before)));
    // CONNECT to a host the catalog covers (it would be intercepted) and
    // to one it does not (it would be tunnelled): neither is opened.
    for authority in ["api.github.com:443", "example.org:443"] {
        let before = tg.audit_lines().len();
        let (status, head, _) = connect(tg.proxy, authority, &[]).await;
        answers.push(("connect", status, head, new_line(&tg, before)));
    }
    // Envoy answers with tollgate's status, headers and body.
    let before = tg.audit_lines().len();
    let out = curl(&[
        "-D",
        "-",
        "-H",
        "Host: api.github.com",
        &format!("{}/repos/acme/api/pulls", envoy.url()),
    ])
    .await;
    answers.push((
        "ext_authz",
        out.status,
        out.body.clone(),
        new_line(&tg, before),
    ));
    for (front, status, text, line) in answers {
        let case = format!("{front}: {text}\n{line}");
        assert_eq!(status, 407, "{case}");
        assert!(
            text.to_ascii_lowercase()
                .contains("proxy-authenticate: bearer realm=\"tollgate\""),
            "{case}"
        );
        assert_eq!(line["status"], 407, "{case}");
        assert_eq!(line["reason"], "unidentified", "{case}");
        assert_eq!(line["decision"], "deny", "{case}");
        assert!(line["workload"].is_null(), "{case}");
    }
    assert_eq!(http.count(), 0);
}
