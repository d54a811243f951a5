//! Limits as an agent meets them: slow heads cut off with `408` (inside
//! intercepted TLS too), idle keep-alive connections closed while busy
//! ones are not, and overload answered with `503` and `Retry-After`
//! rather than queued.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::{read_head, Setup, Tollgate, Upstream};

const CATALOG: &str = r#"
tool: plain
description: a plain HTTP service of the limits test
endpoints:
  - hosts: [plain.test]
    routes:
      - { method: GET, path: "/items/{id}", action: items.read, risk: read, resource: "items/{id}" }
"#;

fn start(upstream: &Upstream, limits: &str) -> Tollgate {
    Tollgate::start(Setup {
        resolve: vec![("plain.test:80".into(), upstream.addr)],
        extra_catalog: vec![("plain.yaml".into(), CATALOG.into())],
        policies: Some(vec![(
            "plain.cedar".into(),
            "@id(\"plain\")\npermit(principal, action in Action::\"plain\", resource);\n".into(),
        )]),
        extra_yaml: format!("limits:\n{limits}"),
        ..Setup::default()
    })
}

const GET: &[u8] = b"GET http://plain.test/items/1 HTTP/1.1\r\nHost: plain.test\r\n\r\n";

/// The whole answer to a request sent on `stream` (its body is small),
/// head and body.
async fn answer(stream: &mut TcpStream) -> String {
    let head = read_head(stream).await;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok());
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            stream.read_exact(&mut body).await.unwrap();
        }
        // Ended by the close.
        None => {
            let _ = stream.read_to_end(&mut body).await;
        }
    }
    head + &String::from_utf8_lossy(&body)
}

/// Whether the peer closed the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_connections_close_and_busy_ones_do_not() {
    let upstream = Upstream::http().await;
    let tg = start(&upstream, "  idle_timeout: 1s\n  header_read_timeout: 1s\n");
    let mut stream = TcpStream::connect(tg.proxy).await.unwrap();
    // An upstream slower than both clocks: the request is under way, so
    // neither applies.
    stream
        .write_all(b"GET http://plain.test/items/1 HTTP/1.1\r\nHost: plain.test\r\nX-Test-Delay-Ms: 2500\r\n\r\n")
        .await
        .unwrap();
    assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Kept alive, then idle past its clock: closed, without a word.
    stream.write_all(GET).await.unwrap();
    assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_slow_head_inside_intercepted_tls_gets_408() {
    let (_pki, upstream, tg) = tollgate_e2e::github_tls(Setup {
        extra_yaml: "limits:\n  header_read_timeout: 1s\n".into(),
        ..Setup::default()
    })
    .await;
    // curl sends its head at once; this client sends half, then waits.
    let ca = tg.ca_cert().display().to_string();
    let code = format!(
        r#"
import socket, ssl, time
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n")
assert b" 200" in s.recv(1024)
tls = ssl.create_default_context(cafile="{ca}").wrap_socket(s, server_hostname="api.github.com")
tls.sendall(b"GET /repos/acme/api HTTP/1.1\r\nHost: api.github.com\r\n")
tls.settimeout(20)
print(tls.recv(1024).split(b"\r\n")[0].decode())
"#,
        port = tg.proxy.port()
    );
    let (status, out, err) = tollgate_e2e::python(&code, &[]).await;
    assert_eq!(status, 0, "{err}");
    assert_eq!(out.trim(), "HTTP/1.1 408 Request Timeout");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn overload_is_answered_503_with_retry_after() {
    let upstream = Upstream::http().await;
    let tg = start(
        &upstream,
        "  max_in_flight: 1\n  max_connections: 3\n  max_tunnels: 1\n",
    );
    // One request waits on a slow upstream; the next finds no place.
    let mut slow = TcpStream::connect(tg.proxy).await.unwrap();
    slow.write_all(b"GET http://plain.test/items/1 HTTP/1.1\r\nHost: plain.test\r\nX-Test-Delay-Ms: 2000\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = TcpStream::connect(tg.proxy).await.unwrap();
    second.write_all(GET).await.unwrap();
    let head = answer(&mut second).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let line = tg.wait_audit(|l| l["reason"] == "overloaded");
    assert_eq!(line["status"], 503);
    assert!(answer(&mut slow).await.starts_with("HTTP/1.1 200"));
    // With its place back, the next request passes.
    second.write_all(GET).await.unwrap();
    assert!(answer(&mut second).await.starts_with("HTTP/1.1 200"));

    // Two connections open (slow, second) and one tunnel: a second tunnel
    // is refused, and a fourth connection too.
    let mut tunnel = TcpStream::connect(tg.proxy).await.unwrap();
    tunnel
        .write_all(b"CONNECT plain.test:80 HTTP/1.1\r\nHost: plain.test:80\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    let mut fourth = TcpStream::connect(tg.proxy).await.unwrap();
    let mut refused = String::new();
    let _ = fourth.read_to_string(&mut refused).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"overloaded\""), "{refused}");
    drop(second);
    // A place freed: a new connection is served; its CONNECT finds the
    // one tunnel taken.
    let mut refused_tunnel = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(tg.proxy).await.unwrap();
        // Still at the connection limit, tollgate speaks first (503) and
        // closes: wait for a connection it keeps.
        let mut first = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(300), stream.peek(&mut first))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        stream
            .write_all(b"CONNECT plain.test:80 HTTP/1.1\r\nHost: plain.test:80\r\n\r\n")
            .await
            .unwrap();
        let text = answer(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("limit of tunnels"), "{text}");
        refused_tunnel = true;
        break;
    }
    assert!(
        refused_tunnel,
        "a second tunnel is refused once a connection is free"
    );
    assert!(tg.logs().contains("at the limit of"), "{}", tg.logs());
}
