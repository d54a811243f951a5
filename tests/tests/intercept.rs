//! HTTPS through CONNECT with interception: the agent trusts tollgate's CA,
//! tollgate reads each inner request, decides it, and forwards it over its
//! own TLS connection to the upstream.

use tollgate_e2e::{python, CurlOutput, Setup, TestPki, Tollgate, Upstream};

async fn github_tls() -> (TestPki, Upstream, Tollgate) {
    tollgate_e2e::github_tls(Setup::default()).await
}

/// curl as an agent that trusts tollgate's CA, through tollgate.
async fn agent(tg: &Tollgate, args: &[&str]) -> CurlOutput {
    let ca = tg.ca_cert().display().to_string();
    let mut all = vec!["--cacert", ca.as_str()];
    all.extend_from_slice(args);
    tg.curl(&all).await
}

#[tokio::test]
async fn python_requests_over_intercepted_https() {
    let (_pki, upstream, tg) = github_tls().await;
    let code = r#"
import requests
r = requests.get("https://api.github.com/repos/acme/api/pulls", headers={"X-Agent": "py"})
d = requests.delete("https://api.github.com/repos/acme/api")
print(r.status_code, r.json()["upstream"], d.status_code, d.json()["action"])
"#;
    let ca = tg.ca_cert().display().to_string();
    let (exit, stdout, stderr) = python(
        code,
        &[("HTTPS_PROXY", tg.proxy_url()), ("REQUESTS_CA_BUNDLE", ca)],
    )
    .await;
    assert_eq!(exit, 0, "{stderr}\n{}", tg.logs());
    assert_eq!(stdout.trim(), "200 ok 403 github:repos.delete");

    let seen = upstream.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed request reaches the upstream"
    );
    assert_eq!(seen[0].path_and_query, "/repos/acme/api/pulls");
    assert_eq!(seen[0].header("x-agent"), Some("py"));

    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["mode"], "intercept");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["host"], "api.github.com");
    assert_eq!(line["port"], 443);
    let line = tg.wait_audit(|l| l["action"] == "github:repos.delete");
    assert_eq!(line["decision"], "deny");
}

#[tokio::test]
async fn http2_to_the_agent_and_to_the_upstream() {
    let (_pki, upstream, tg) = github_tls().await;
    let out = agent(
        &tg,
        &["--http2", "https://api.github.com/repos/acme/api/pulls"],
    )
    .await;
    assert_eq!(out.status, 200, "{} {}", out.body, out.stderr);
    assert_eq!(out.http_version, "2", "agent side should speak HTTP/2");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    // The upstream offers h2 by ALPN, so tollgate's pooled client uses it.
    assert_eq!(seen[0].version, "HTTP/2.0");

    let out = agent(
        &tg,
        &[
            "--http2",
            "-X",
            "DELETE",
            "https://api.github.com/repos/acme/api",
        ],
    )
    .await;
    assert_eq!(out.status, 403);
    assert_eq!(out.json()["reason"], "forbidden");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn http1_inside_the_tunnel_and_keep_alive() {
    let (_pki, upstream, tg) = github_tls().await;
    let url = "https://api.github.com/repos/acme/api/pulls";
    let out = agent(&tg, &["--http1.1", url, url]).await;
    assert_eq!(out.status, 200, "{}", out.stderr);
    assert_eq!(out.http_version, "1.1");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn plain_http_inside_a_tunnel_to_a_catalog_host_is_decided_too() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    // `-p`: curl opens a CONNECT tunnel even for http://, as WebSocket
    // clients do for ws://.
    let allowed = tg
        .curl(&["-p", "http://api.github.com/repos/acme/api/pulls"])
        .await;
    assert_eq!(allowed.status, 200, "{} {}", allowed.body, allowed.stderr);
    let denied = tg
        .curl(&["-p", "-X", "DELETE", "http://api.github.com/repos/acme/api"])
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "the refused request reached the upstream");
    let (_, value) = tollgate_e2e::HARNESS_CREDENTIALS[0];
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["mode"], "intercept", "{line}");
    assert_eq!(line["status"], 200, "{line}");
}

#[tokio::test]
async fn request_for_another_host_inside_the_tunnel_is_misdirected() {
    let (_pki, upstream, tg) = github_tls().await;
    let out = agent(
        &tg,
        &[
            "--http1.1",
            "-H",
            "Host: evil.example",
            "https://api.github.com/repos/acme/api/pulls",
        ],
    )
    .await;
    assert_eq!(out.status, 421, "{}", out.body);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn tls_server_name_must_match_the_connect_host() {
    let (_pki, upstream, tg) = github_tls().await;
    // CONNECT to api.github.com, then a TLS hello naming another host.
    let code = r#"
import socket, ssl, sys
s = socket.create_connection(sys.argv[1].split(":")[0:1] + [int(sys.argv[1].split(":")[1])])
s.sendall(b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n")
head = s.recv(4096)
assert head.startswith(b"HTTP/1.1 200"), head
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    ctx.wrap_socket(s, server_hostname="evil.example")
    print("handshake succeeded")
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("refused")
"#;
    let script = format!(
        "import sys; sys.argv = ['x', '{}', '{}']\n{code}",
        tg.proxy,
        tg.ca_cert().display()
    );
    let (exit, stdout, stderr) = python(&script, &[]).await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(stdout.trim(), "refused");
    assert_eq!(upstream.count(), 0);
    tg.wait_log("does not match CONNECT host");
}

#[tokio::test]
async fn ca_private_key_never_appears_in_output() {
    let (_pki, _upstream, tg) = github_tls().await;
    agent(&tg, &["https://api.github.com/repos/acme/api/pulls"]).await;
    let key = std::fs::read_to_string(tg.path("ca/ca.key")).unwrap();
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    assert!(body.len() > 40);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tg.path("ca/ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    for chunk in body.as_bytes().chunks(24) {
        let chunk = std::str::from_utf8(chunk).unwrap();
        assert!(!tg.logs().contains(chunk));
        assert!(!tg.stdout_text().contains(chunk));
    }
}
