//! Requests to switch protocols (WebSocket) through tollgate: decided like
//! any request, given the credential the decision names, then joined to the
//! upstream's switched connection until one side closes it.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_e2e::{
    ask_to_switch, github_tls, python, Seen, Setup, Tollgate, Upstream, HARNESS_CREDENTIALS,
};

const PULLS: &str = "http://api.github.com/repos/acme/api/pulls";

const AGENTS_OWN: &str = "Authorization: Bearer agents-own-token";

/// The upstream got the credential the decision named, not the agent's.
fn injected(seen: &Seen) -> bool {
    let (_, value) = HARNESS_CREDENTIALS[0];
    seen.header("authorization") == Some(format!("Bearer {value}").as_str())
}

/// Python's websocket-client, through tollgate's proxy port (and trusting
/// its CA), sends each of `messages` to `url` and must get it echoed.
/// Then the upstream must have had one opening request, with the injected
/// credential, and the session's audit line, returned, no error.
async fn python_echoes(tg: &Tollgate, upstream: &Upstream, url: &str, messages: &[&str]) -> Value {
    let code = r#"
import json, os, websocket
ws = websocket.create_connection(
    os.environ["URL"],
    http_proxy_host=os.environ["PROXY_HOST"], http_proxy_port=int(os.environ["PROXY_PORT"]),
    proxy_type="http", sslopt={"ca_certs": os.environ["TOLLGATE_CA"]},
    header=["Authorization: Bearer agents-own-token"], timeout=20)
for message in json.loads(os.environ["MESSAGES"]):
    ws.send(message)
    got = ws.recv()
    assert got == message, (len(got), len(message))
ws.close()
print("echoed")
"#;
    let env = [
        ("URL", url.to_string()),
        ("MESSAGES", serde_json::to_string(messages).unwrap()),
        ("PROXY_HOST", tg.proxy.ip().to_string()),
        ("PROXY_PORT", tg.proxy.port().to_string()),
        ("TOLLGATE_CA", tg.ca_cert().display().to_string()),
    ];
    let (exit, stdout, stderr) = python(code, &env).await;
    assert_eq!(exit, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "echoed");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, "HTTP/1.1");
    assert!(injected(&seen[0]), "{:?}", seen[0].headers);
    let line = tg.wait_audit(|l| l["status"] == 101);
    assert_eq!(line["action"], "github:pulls.list", "{line}");
    // Python closes its TLS socket without a close_notify: that ends the
    // session, it does not fail it.
    assert!(line["error"].is_null(), "{line}");
    line
}

/// Ask tollgate to switch the pulls route to `protocol`: the stream and
/// the answer's head, lower-cased (header names are case-insensitive).
async fn switch_pulls(
    tg: &Tollgate,
    protocol: &str,
    headers: &[&str],
) -> (tokio::net::TcpStream, String) {
    let (stream, head) = ask_to_switch(tg.proxy, PULLS, protocol, headers).await;
    (stream, head.to_ascii_lowercase())
}

#[tokio::test]
async fn an_allowed_upgrade_is_joined_to_the_upstream_and_counted() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    let (stream, head) = switch_pulls(&tg, "websocket", &[AGENTS_OWN]).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("sec-websocket-accept:"), "{head}");

    // Bytes that depend on their position, so a lost or reordered piece
    // shows; written while the echo is read, so neither side waits.
    const SENT: usize = 3 * 1024 * 1024 + 17;
    let sent: Vec<u8> = (0..SENT).map(|i| (i % 251) as u8).collect();
    let (mut from, mut to) = stream.into_split();
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            to.write_all(&sent).await.unwrap();
            to.shutdown().await.unwrap();
        }
    });
    let mut echoed = Vec::new();
    from.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed.len(), SENT);
    assert!(echoed == sent, "the echo differs from what was sent");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(seen[0].header("connection"), Some("upgrade"));
    assert!(injected(&seen[0]), "{:?}", seen[0].headers);

    let line = tg.wait_audit(|l| l["status"] == 101);
    assert_eq!(line["action"], "github:pulls.list", "{line}");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["bytes_in"], SENT as u64, "{line}");
    assert_eq!(line["bytes_out"], SENT as u64, "{line}");
    assert!(line["error"].is_null(), "{line}");
}

#[tokio::test]
async fn a_refused_upgrade_never_reaches_the_upstream_and_nothing_switches() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup {
        identity: Some("spiffe://cluster.local/ns/outside/sa/nobody".into()),
        ..Setup::routing("api.github.com:80", upstream.addr)
    });
    let (mut stream, head) = switch_pulls(&tg, "websocket", &[AGENTS_OWN]).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(!head.contains("upgrade: websocket"), "{head}");
    // The connection stays HTTP: what follows is read as a request, not
    // carried anywhere.
    stream.write_all(b"not a request\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut rest),
    )
    .await;
    let rest = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(!rest.contains("not a request"), "{rest}");
    assert_eq!(
        upstream.count(),
        0,
        "a refused upgrade reached the upstream"
    );
    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["decision"], "deny", "{line}");
    assert_eq!(line["status"], 403, "{line}");
}

#[tokio::test]
async fn a_switch_to_anything_but_websocket_is_not_passed_on() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    // h2c would give the agent an HTTP/2 connection whose later requests
    // tollgate never reads.
    let (_stream, head) = switch_pulls(&tg, "h2c", &[AGENTS_OWN]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), None);
    assert_eq!(seen[0].header("connection"), None);
}

#[tokio::test]
async fn an_upstream_that_switches_to_another_protocol_is_not_joined() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    let (mut stream, head) =
        switch_pulls(&tg, "websocket", &[AGENTS_OWN, "X-Test-Switch-To: h2c"]).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    // Nothing is carried to the upstream's switched connection: the agent's
    // bytes are read as HTTP, and the garbage gets a 400.
    stream.write_all(b"not a request\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("upstream_failed"), "{rest}");
    assert!(rest.contains("HTTP/1.1 400"), "{rest}");
    let line = tg.wait_audit(|l| l["action"] == "github:pulls.list");
    assert_eq!(line["status"], 502, "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("other than websocket"),
        "{line}"
    );
}

#[tokio::test]
async fn python_websocket_client_over_intercepted_https() {
    let (_pki, upstream, tg) = github_tls(Setup::default()).await;
    // websocket-client reaches a proxy through CONNECT; tollgate intercepts
    // it (the catalog covers the host) and decides the upgrade inside.
    let big = "x".repeat(100_000);
    let line = python_echoes(
        &tg,
        &upstream,
        "wss://api.github.com/repos/acme/api/pulls",
        &["first", &big, "last"],
    )
    .await;
    assert_eq!(line["mode"], "intercept", "{line}");
    assert_eq!(line["port"], 443, "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 100_000, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 100_000, "{line}");
}

#[tokio::test]
async fn python_websocket_client_to_ws_url_through_connect() {
    let upstream = Upstream::http().await;
    let tg = Tollgate::start(Setup::routing("api.github.com:80", upstream.addr));
    // For ws:// too, websocket-client opens a CONNECT tunnel and speaks
    // plain HTTP inside it; tollgate reads and decides it all the same.
    let line = python_echoes(
        &tg,
        &upstream,
        "ws://api.github.com/repos/acme/api/pulls",
        &["over plain http"],
    )
    .await;
    assert_eq!(line["mode"], "intercept", "{line}");
    assert_eq!(line["port"], 80, "{line}");
}
