//! Plain HTTP through the explicit proxy: allowed requests reach the
//! upstream intact, refused ones never do, and every failure is a clear
//! answer.

use tollgate_e2e::{curl, python, repo_root, Setup, Tollgate, Upstream};

fn github_at(upstream: &Upstream) -> Setup {
    Setup::routing("api.github.com:80", upstream.addr)
}

#[tokio::test]
async fn allowed_request_reaches_upstream_without_hop_by_hop_headers() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    let out = tg
        .curl(&[
            "-H",
            "X-Agent-Trace: abc123",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: must-not-travel",
            "-H",
            "Proxy-Authorization: Bearer proxy-only",
            "http://api.github.com/repos/acme/api/pulls?state=open",
        ])
        .await;
    assert_eq!(out.status, 200, "{} {}", out.body, out.stderr);
    assert_eq!(out.json()["upstream"], "ok");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path_and_query, "/repos/acme/api/pulls?state=open");
    assert_eq!(req.header("x-agent-trace"), Some("abc123"));
    assert_eq!(req.header("host"), Some("api.github.com"));
    assert_eq!(req.header("x-hop"), None);
    assert_eq!(req.header("proxy-authorization"), None);
    assert_eq!(req.header("proxy-connection"), None);

    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["tool"], "github");
    assert_eq!(line["resource"], "github/repos/acme/api");
    assert_eq!(line["risk"], "read");
    assert_eq!(line["status"], 200);
    assert_eq!(line["workload"], tollgate_e2e::CODER);
    assert_eq!(line["path"], "/repos/acme/api/pulls?state=[redacted]");
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["decision_id"].as_str().unwrap().len() >= 32);
}

#[tokio::test]
async fn denied_request_never_reaches_upstream() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    let out = tg
        .curl(&["-X", "DELETE", "http://api.github.com/repos/acme/api"])
        .await;
    assert_eq!(out.status, 403, "{}", out.body);
    let body = out.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["action"], "github:repos.delete");
    assert_eq!(body["reason"], "forbidden");
    assert!(!body["policy_ids"].as_array().unwrap().is_empty());
    assert!(body["decision_id"].is_string());
    assert_eq!(upstream.count(), 0, "a denied request reached the upstream");

    let line = tg.wait_audit(|l| l["action"] == "github:repos.delete");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["status"], 403);
    assert_eq!(line["decision_id"], body["decision_id"]);
}

#[tokio::test]
async fn python_requests_through_http_proxy() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    let code = r#"
import requests
ok = requests.get("http://api.github.com/repos/acme/api/pulls")
no = requests.delete("http://api.github.com/repos/acme/api")
print(ok.status_code, ok.json()["upstream"], no.status_code, no.json()["reason"])
"#;
    let (exit, stdout, stderr) = python(code, &[("HTTP_PROXY", tg.proxy_url())]).await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.trim(), "200 ok 403 forbidden");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    let url = "http://api.github.com/repos/acme/api/pulls";
    let out = tg.curl(&[url, url, url]).await;
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(upstream.count(), 3);
    assert_eq!(
        out.num_connects, 0,
        "the third request reused the connection"
    );
}

#[tokio::test]
async fn via_is_added_both_ways_when_configured() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        forward_extra: "  via: true\n".into(),
        ..github_at(&upstream)
    });
    let out = tg
        .curl(&["-D", "-", "http://api.github.com/repos/acme/api/pulls"])
        .await;
    assert_eq!(out.status, 200);
    assert_eq!(upstream.requests()[0].header("via"), Some("1.1 tollgate"));
    assert!(
        out.body.to_ascii_lowercase().contains("via: 1.1 tollgate"),
        "{}",
        out.body
    );
}

#[tokio::test]
async fn unidentified_caller_gets_407() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        identity: None,
        ..github_at(&upstream)
    });
    let out = tg
        .curl(&["http://api.github.com/repos/acme/api/pulls"])
        .await;
    assert_eq!(out.status, 407);
    assert_eq!(out.json()["error"], "unidentified");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn malformed_requests_get_400_and_are_not_forwarded() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    // Origin-form to a forward proxy.
    let out = curl(&[&format!("{}/repos/acme/api", tg.proxy_url())]).await;
    assert_eq!(out.status, 400, "{}", out.body);
    assert_eq!(out.json()["error"], "malformed_request");
    // A dot segment would be classified as one route and served as another.
    let out = tg
        .curl(&[
            "--path-as-is",
            "http://api.github.com/repos/acme/api/pulls/../../../orgs/acme",
        ])
        .await;
    assert_eq!(out.status, 400, "{}", out.body);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let upstream = Upstream::http().await;
    let mut setup = Setup {
        resolve: vec![
            ("api.github.com:80".into(), closed),
            ("api.github.com:8080".into(), upstream.addr),
        ],
        ..Setup::default()
    };
    setup.forward_extra = "  response_timeout: 300ms\n".into();
    let tg = Tollgate::start(setup);
    let out = tg
        .curl(&["http://api.github.com/repos/acme/api/pulls"])
        .await;
    assert_eq!(out.status, 502, "{}", out.body);
    assert_eq!(out.json()["error"], "upstream_unreachable");

    let line = tg.wait_audit(|l| l["status"] == 502);
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reason"], "allowed");
    assert!(
        line["error"].as_str().unwrap().contains("unreachable"),
        "{line}"
    );

    let out = tg
        .curl(&[
            "-H",
            "x-test-delay-ms: 3000",
            "http://api.github.com:8080/repos/acme/api/pulls",
        ])
        .await;
    assert_eq!(out.status, 504, "{}", out.body);
    assert_eq!(out.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        allow_loopback: false,
        ..github_at(&upstream)
    });
    let out = tg
        .curl(&["http://api.github.com/repos/acme/api/pulls"])
        .await;
    assert_eq!(out.status, 403, "{}", out.body);
    assert_eq!(out.json()["reason"], "destination_blocked");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn admin_serves_health_readiness_and_metrics() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(github_at(&upstream));
    let admin = format!("http://{}", tg.admin);
    assert_eq!(curl(&[&format!("{admin}/healthz")]).await.status, 200);
    assert_eq!(curl(&[&format!("{admin}/readyz")]).await.status, 200);

    // Before anything happened, every metric the operations guide lists
    // is there, every series at 0.
    let documented = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let names: Vec<&str> = documented
        .lines()
        .filter_map(|l| l.strip_prefix("| `tollgate_")?.split_once('`'))
        .map(|(rest, _)| rest)
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    let metrics = curl(&[&format!("{admin}/metrics")]).await.body;
    for name in names {
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.strip_prefix("tollgate_")
                    .and_then(|l| l.strip_prefix(name))
                    .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
            })
            .collect();
        assert!(
            !series.is_empty(),
            "no tollgate_{name} at start:\n{metrics}"
        );
        for line in series {
            let value = line.rsplit(' ').next().unwrap();
            // Histogram buckets count 0 too; `+Inf` is a label, not a value.
            assert_eq!(value.parse::<f64>(), Ok(0.0), "{line}");
        }
    }
    for needle in [
        r#"tollgate_requests_total{tool="github",action="github:repos.delete",decision="deny"} 0"#,
        r#"tollgate_requests_total{tool="",action="connect",decision="allow"} 0"#,
        r#"tollgate_reloads_total{result="refused"} 0"#,
    ] {
        assert!(
            metrics.contains(needle),
            "missing {needle} at start:\n{metrics}"
        );
    }

    tg.curl(&["http://api.github.com/repos/acme/api/pulls"])
        .await;
    tg.curl(&["-X", "DELETE", "http://api.github.com/repos/acme/api"])
        .await;
    tg.wait_audit(|l| l["action"] == "github:repos.delete");
    let metrics = curl(&[&format!("{admin}/metrics")]).await.body;
    for needle in [
        r#"tollgate_requests_total{tool="github",action="github:pulls.list",decision="allow"} 1"#,
        r#"tollgate_requests_total{tool="github",action="github:repos.delete",decision="deny"} 1"#,
        "tollgate_decision_duration_seconds_bucket",
        "tollgate_upstream_duration_seconds_bucket",
        "tollgate_open_connections",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
}
