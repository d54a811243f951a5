//! Hostile input: a corpus of malformed and malicious requests sent byte
//! for byte to the running binary, each with the answer it must get — a
//! clear status or a clean close, an audit or log line, never a forwarded
//! request it should not have forwarded, and the next good request served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_e2e::{Setup, TestPki, Tollgate, Upstream};

/// A plain-HTTP service the corpus may reach: reading and writing items.
const PLAIN_CATALOG: &str = r#"
tool: plain
description: a plain HTTP service of the hostile-input test
endpoints:
  - hosts: [plain.test]
    routes:
      - { method: GET, path: "/items/{id}", action: items.read, risk: read, resource: "items/{id}" }
      - { method: [POST, PUT], path: "/items/{id}", action: items.write, risk: write, resource: "items/{id}" }
"#;

/// Small limits, so the corpus finds them without megabytes of input.
const LIMITS: &str = "limits:
  header_read_timeout: 2s
  idle_timeout: 5s
  tls_handshake_timeout: 2s
  max_request_line_bytes: 4096
  max_header_bytes: 16384
  max_headers: 50
  tools:
    plain: { max_body_bytes: 1024 }
";

/// What the agent must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// Closed without an answer (there is no HTTP to answer in).
    Closed,
}

use Answer::{Closed, Status};

struct Corpus {
    tg: Tollgate,
    plain: Upstream,
    _github: Upstream,
    _pki: TestPki,
}

impl Corpus {
    async fn start() -> Corpus {
        let pki = TestPki::new();
        let github = Upstream::https(pki.server_config(&["api.github.com"])).await;
        let plain = Upstream::http().await;
        let policies = vec![(
            "plain.cedar".into(),
            "@id(\"plain\")\npermit(principal, action in Action::\"plain\", resource);\n\
             @id(\"unknown\")\nforbid(principal, action in Action::\"unknown\", resource);\n"
                .into(),
        )];
        let tg = Tollgate::start(Setup {
            resolve: vec![
                ("api.github.com:443".into(), github.addr),
                ("plain.test:80".into(), plain.addr),
            ],
            upstream_ca: Some(pki.ca_pem.clone()),
            extra_catalog: vec![("plain.yaml".into(), PLAIN_CATALOG.into())],
            policies: Some(policies),
            extra_yaml: LIMITS.into(),
            ..Setup::default()
        });
        Corpus {
            tg,
            plain,
            _github: github,
            _pki: pki,
        }
    }

    /// Lines the process wrote so far, audit and log.
    fn lines(&self) -> usize {
        self.tg.audit_lines().len() + self.tg.logs().lines().count()
    }

    /// A good request on a fresh connection is still answered 200.
    async fn still_serves(&self, after: &str) {
        let before = self.plain.count();
        let answer = exchange(
            self.tg.proxy,
            b"GET http://plain.test/items/ok HTTP/1.1\r\nHost: plain.test\r\n\r\n",
        )
        .await;
        assert_eq!(answer, Status(200), "a good request after {after}");
        assert_eq!(self.plain.count(), before + 1);
    }
}

/// Send `bytes` on a new connection; the status of the answer, or a close
/// without one. A connection that neither answers nor closes in time is a
/// hang, and fails the test.
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let _ = stream.write_all(bytes).await;
    answer_on(&mut stream).await
}

async fn answer_on(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("tollgate neither answered nor closed the connection");
    if got.is_empty() {
        return Closed;
    }
    let head = String::from_utf8_lossy(&got);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
    Status(status)
}

/// One request line and its fields, CRLF-terminated, with `body`.
fn request(line: &str, fields: &[&str], body: &str) -> Vec<u8> {
    let mut bytes = format!("{line}\r\n");
    for field in fields {
        bytes.push_str(field);
        bytes.push_str("\r\n");
    }
    bytes.push_str("\r\n");
    bytes.push_str(body);
    bytes.into_bytes()
}

/// A request to the plain service, with fields and a body.
fn plain(method: &str, path: &str, fields: &[&str], body: &str) -> Vec<u8> {
    let mut all = vec!["Host: plain.test"];
    all.extend_from_slice(fields);
    request(
        &format!("{method} http://plain.test{path} HTTP/1.1"),
        &all,
        body,
    )
}

/// (name, bytes, answer, whether the plain upstream must receive it)
fn http1_corpus() -> Vec<(&'static str, Vec<u8>, Answer, bool)> {
    let big = format!("X-Big: {}", "a".repeat(100_000));
    let many: Vec<String> = (0..60).map(|i| format!("X-Many-{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let wide: Vec<String> = (0..20)
        .map(|i| format!("X-Wide-{i}: {}", "w".repeat(1000)))
        .collect();
    let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
    let long_path = format!("/items/{}", "p".repeat(5000));
    let over_body = "b".repeat(2000);
    let chunked_over = format!("7d0\r\n{over_body}\r\n0\r\n\r\n");
    vec![
        // A well-formed pair, to show the table can tell.
        (
            "a plain GET",
            plain("GET", "/items/1", &[], ""),
            Status(200),
            true,
        ),
        (
            "a POST with a body",
            plain("POST", "/items/1", &["Content-Length: 5"], "hello"),
            Status(200),
            true,
        ),
        (
            "a chunked POST",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: chunked"],
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Status(200),
            true,
        ),
        (
            "Transfer-Encoding after a tab (valid whitespace)",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding:\tchunked"],
                "0\r\n\r\n",
            ),
            Status(200),
            true,
        ),
        // --- smuggling: two readers must not disagree on where a body ends
        (
            "Content-Length and Transfer-Encoding",
            plain(
                "POST",
                "/items/1",
                &["Content-Length: 5", "Transfer-Encoding: chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "Transfer-Encoding and Content-Length",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: chunked", "Content-Length: 5"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "two different Content-Lengths",
            plain(
                "POST",
                "/items/1",
                &["Content-Length: 5", "Content-Length: 6"],
                "hello!",
            ),
            Status(400),
            false,
        ),
        (
            "two equal Content-Lengths",
            plain(
                "POST",
                "/items/1",
                &["Content-Length: 5", "Content-Length: 5"],
                "hello",
            ),
            Status(400),
            false,
        ),
        (
            "a Content-Length list",
            plain("POST", "/items/1", &["Content-Length: 5, 5"], "hello"),
            Status(400),
            false,
        ),
        (
            "a signed Content-Length",
            plain("POST", "/items/1", &["Content-Length: +5"], "hello"),
            Status(400),
            false,
        ),
        (
            "a negative Content-Length",
            plain("POST", "/items/1", &["Content-Length: -1"], ""),
            Status(400),
            false,
        ),
        (
            "a hexadecimal Content-Length",
            plain("POST", "/items/1", &["Content-Length: 0x5"], "hello"),
            Status(400),
            false,
        ),
        (
            "an obfuscated coding (xchunked)",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: xchunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "chunked, then identity",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: chunked, identity"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "identity, then chunked",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: identity, chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "two Transfer-Encoding fields",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "a space before the colon",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding : chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "a coding folded onto the next line",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding:", " chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "an obs-folded field",
            plain("GET", "/items/1", &["X-Folded: a", "\tb"], ""),
            Status(400),
            false,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            request(
                "POST http://plain.test/items/1 HTTP/1.0",
                &["Host: plain.test", "Transfer-Encoding: chunked"],
                "0\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        (
            "a bare LF after the request line",
            b"GET http://plain.test/items/1 HTTP/1.1\nHost: plain.test\r\n\r\n".to_vec(),
            Status(400),
            false,
        ),
        (
            "bare LFs throughout",
            b"GET http://plain.test/items/1 HTTP/1.1\nHost: plain.test\n\n".to_vec(),
            Status(400),
            false,
        ),
        (
            "a bare CR in a value",
            plain("GET", "/items/1", &["X-A: a\rb"], ""),
            Status(400),
            false,
        ),
        (
            "a NUL in a value",
            plain("GET", "/items/1", &["X-A: a\0b"], ""),
            Status(400),
            false,
        ),
        (
            "a request smuggled in a body's place",
            plain(
                "POST",
                "/items/1",
                &["Content-Length: 0", "Transfer-Encoding: chunked"],
                "0\r\n\r\nGET http://plain.test/items/2 HTTP/1.1\r\nHost: plain.test\r\n\r\n",
            ),
            Status(400),
            false,
        ),
        // --- request lines
        (
            "two spaces in the request line",
            b"GET  http://plain.test/items/1 HTTP/1.1\r\nHost: plain.test\r\n\r\n".to_vec(),
            Status(400),
            false,
        ),
        (
            "no version",
            b"GET http://plain.test/items/1\r\nHost: plain.test\r\n\r\n".to_vec(),
            Status(400),
            false,
        ),
        (
            "HTTP/2.0 spoken as text",
            request(
                "GET http://plain.test/items/1 HTTP/2.0",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "an invalid method token",
            request(
                "G(T http://plain.test/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "an unknown method",
            plain("FROB", "/items/1", &[], ""),
            Status(403),
            false,
        ),
        (
            "a lower-case method",
            plain("get", "/items/1", &[], ""),
            Status(403),
            false,
        ),
        (
            "TRACE",
            plain("TRACE", "/items/1", &[], ""),
            Status(403),
            false,
        ),
        // --- targets
        (
            "origin-form to a forward proxy",
            request("GET /items/1 HTTP/1.1", &["Host: plain.test"], ""),
            Status(400),
            false,
        ),
        (
            "asterisk-form",
            request("OPTIONS * HTTP/1.1", &["Host: plain.test"], ""),
            Status(400),
            false,
        ),
        (
            "an ftp URL",
            request(
                "GET ftp://plain.test/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "userinfo in the target",
            request(
                "GET http://user:pw@plain.test/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "port 0",
            request(
                "GET http://plain.test:0/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "a port out of range",
            request(
                "GET http://plain.test:65536/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "no host",
            request("GET http:///items/1 HTTP/1.1", &["Host: plain.test"], ""),
            Status(400),
            false,
        ),
        (
            "an unclosed IPv6 literal",
            request(
                "GET http://[::1/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "an IPv6 literal with a zone",
            request("GET http://[fe80::1%25lo]/ HTTP/1.1", &["Host: x"], ""),
            Status(400),
            false,
        ),
        (
            "an IPv6 literal no policy permits",
            request("GET http://[::1]:1/ HTTP/1.1", &["Host: x"], ""),
            Status(403),
            false,
        ),
        (
            "raw UTF-8 in the host (IDN)",
            request("GET http://b\u{fc}cher.test/ HTTP/1.1", &["Host: x"], ""),
            Status(400),
            false,
        ),
        (
            "a punycode host no policy permits",
            request("GET http://xn--bcher-kva.test/ HTTP/1.1", &["Host: x"], ""),
            Status(403),
            false,
        ),
        (
            "a percent-encoded host",
            request(
                "GET http://plain%2etest/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(400),
            false,
        ),
        (
            "a trailing dot (the same host)",
            request(
                "GET http://plain.test./items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(200),
            true,
        ),
        (
            "an upper-case host (the same host)",
            request(
                "GET http://PLAIN.TEST/items/1 HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(200),
            true,
        ),
        (
            "a Host naming elsewhere (the target wins)",
            request(
                "GET http://plain.test/items/1 HTTP/1.1",
                &["Host: evil.test"],
                "",
            ),
            Status(200),
            true,
        ),
        // Never sent on: what is decided is what goes out.
        (
            "a fragment in the target",
            request(
                "GET http://plain.test/items/1#x HTTP/1.1",
                &["Host: plain.test"],
                "",
            ),
            Status(200),
            true,
        ),
        // --- paths meant to dodge the catalog
        (
            "an empty segment",
            plain("GET", "/items//1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a leading double slash",
            plain("GET", "//items/1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a dot segment",
            plain("GET", "/items/./1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a dot-dot segment",
            plain("GET", "/items/../items/1", &[], ""),
            Status(400),
            false,
        ),
        (
            "an encoded dot-dot",
            plain("GET", "/items/%2e%2e/admin", &[], ""),
            Status(400),
            false,
        ),
        (
            "a half-encoded dot-dot",
            plain("GET", "/items/.%2E/admin", &[], ""),
            Status(400),
            false,
        ),
        (
            "an encoded slash",
            plain("GET", "/items%2F1", &[], ""),
            Status(400),
            false,
        ),
        (
            "an encoded backslash",
            plain("GET", "/items%5C1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a raw backslash",
            plain("GET", "/items\\1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a case that differs from the route",
            plain("GET", "/ITEMS/1", &[], ""),
            Status(400),
            false,
        ),
        (
            "an encoded unreserved character",
            plain("GET", "/it%65ms/1", &[], ""),
            Status(400),
            false,
        ),
        (
            "a ; parameter",
            plain("GET", "/items/1;jsessionid=x", &[], ""),
            Status(400),
            false,
        ),
        (
            "invalid percent-encoding",
            plain("GET", "/items/%zz", &[], ""),
            Status(400),
            false,
        ),
        (
            "a cut-off escape",
            plain("GET", "/items/1%", &[], ""),
            Status(400),
            false,
        ),
        (
            "an encoded NUL",
            plain("GET", "/items/1%00.json", &[], ""),
            Status(400),
            false,
        ),
        (
            "a path no route names",
            plain("GET", "/admin", &[], ""),
            Status(403),
            false,
        ),
        // --- sizes
        (
            "a 100 KB header",
            plain("GET", "/items/1", &[big.as_str()], ""),
            Status(431),
            false,
        ),
        (
            "60 header fields",
            plain("GET", "/items/1", &many, ""),
            Status(431),
            false,
        ),
        (
            "20 KB of header fields",
            plain("GET", "/items/1", &wide, ""),
            Status(431),
            false,
        ),
        (
            "a 5 KB target",
            plain("GET", &long_path, &[], ""),
            Status(414),
            false,
        ),
        (
            "a body over the tool's limit",
            plain("POST", "/items/1", &["Content-Length: 2000"], &over_body),
            Status(413),
            false,
        ),
        (
            "a chunked body over the tool's limit",
            plain(
                "POST",
                "/items/1",
                &["Transfer-Encoding: chunked"],
                &chunked_over,
            ),
            Status(413),
            false,
        ),
        // --- time
        (
            "a head that never ends (slowloris)",
            b"GET http://plain.test/items/1 HTTP/1.1\r\nHost: plain.test\r\nX-Slow: 1\r\n".to_vec(),
            Status(408),
            false,
        ),
        ("nothing at all", Vec::new(), Closed, false),
    ]
}

#[tokio::test]
async fn http1_corpus_gets_its_answers() {
    let corpus = Corpus::start().await;
    let cases = http1_corpus();
    let mut wrong = Vec::new();
    for (name, bytes, expected, forwarded) in &cases {
        let (before, lines) = (corpus.plain.count(), corpus.lines());
        let got = exchange(corpus.tg.proxy, bytes).await;
        let reached = corpus.plain.count() > before;
        if got != *expected || reached != *forwarded {
            wrong.push(format!(
                "{name}: got {got:?} (upstream reached: {reached}), want {expected:?} (reached: {forwarded})"
            ));
        }
        // Every refusal leaves a trace an operator can find.
        wait_until(
            || corpus.lines() > lines,
            &format!("an audit or log line for {name}"),
        )
        .await;
        corpus.still_serves(name).await;
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}\nlogs:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        corpus.tg.logs()
    );
    assert!(
        !corpus.tg.logs().contains("panicked"),
        "{}",
        corpus.tg.logs()
    );
}

async fn wait_until(done: impl Fn() -> bool, what: &str) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {what}");
}

/// `CONNECT`, then what the agent sends inside the tunnel.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = answer_on(&mut stream).await;
    (stream, answer)
}

#[tokio::test]
async fn connect_corpus_gets_its_answers() {
    let corpus = Corpus::start().await;
    let proxy = corpus.tg.proxy;
    let targets = [
        ("no port", "plain.test", Status(400)),
        ("port 0", "plain.test:0", Status(400)),
        ("a port out of range", "plain.test:99999", Status(400)),
        ("userinfo", "user@plain.test:443", Status(400)),
        ("a path", "/items/1", Status(400)),
        ("an absolute URL", "http://plain.test:443/", Status(400)),
        (
            "an IPv6 literal no policy permits",
            "[::1]:443",
            Status(403),
        ),
        ("an unclosed IPv6 literal", "[::1:443", Status(400)),
        (
            "a host no policy permits",
            "uncovered.test:443",
            Status(403),
        ),
    ];
    for (name, target, expected) in targets {
        let lines = corpus.lines();
        let (_, got) = connect(proxy, target).await;
        assert_eq!(got, expected, "CONNECT with {name}");
        wait_until(|| corpus.lines() > lines, name).await;
        corpus.still_serves(name).await;
    }

    // Inside a tunnel to an intercepted host: bytes that are neither TLS
    // nor HTTP, a ClientHello for another name, a handshake that stalls.
    let (mut tunnel, answer) = connect(proxy, "api.github.com:443").await;
    assert_eq!(answer, Status(200));
    tunnel
        .write_all(b"\x00\x01\x02\x03garbage\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        answer_on(&mut tunnel).await,
        Status(400),
        "garbage inside a tunnel"
    );

    let (mut tunnel, _) = connect(proxy, "api.github.com:443").await;
    tunnel.write_all(&client_hello("evil.test")).await.unwrap();
    assert_eq!(
        answer_on(&mut tunnel).await,
        Closed,
        "a ClientHello for another host"
    );

    let (mut tunnel, _) = connect(proxy, "api.github.com:443").await;
    let hello = client_hello("api.github.com");
    tunnel.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert_eq!(
        answer_on(&mut tunnel).await,
        Closed,
        "a ClientHello cut short"
    );

    let (mut tunnel, _) = connect(proxy, "api.github.com:443").await;
    tunnel
        .write_all(b"\x16\x03\x01\x00\x05hello")
        .await
        .unwrap();
    assert_eq!(
        answer_on(&mut tunnel).await,
        Closed,
        "a record that is no ClientHello"
    );

    // No SNI (an IP literal leaves it out): the CONNECT named the host, so
    // the handshake goes on with that host's certificate, and requests
    // inside are decided as always.
    let (tunnel, _) = connect(proxy, "api.github.com:443").await;
    let config = tls_config(&corpus.tg, vec![b"http/1.1".to_vec()]);
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let failed = tokio_rustls::TlsConnector::from(config)
        .connect(ip, tunnel)
        .await
        .unwrap_err();
    // The certificate names api.github.com, not the address: the client's
    // check is what fails, after tollgate answered the hello.
    assert!(failed.to_string().contains("certificate"), "{failed}");

    corpus.still_serves("the tunnel cases").await;
    assert!(
        !corpus.tg.logs().contains("panicked"),
        "{}",
        corpus.tg.logs()
    );
}

/// A ClientHello from rustls for `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).unwrap();
    bytes
}

fn tls_config(tg: &Tollgate, alpn: Vec<Vec<u8>>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(tg.ca_cert()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

// --- HTTP/2, by hand: frames as an abusive client writes them.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// HPACK literal fields without indexing (names and values under 127 bytes).
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

fn get_repo() -> Vec<u8> {
    hpack(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "api.github.com"),
        (":path", "/repos/acme/api"),
    ])
}

/// An HTTP/2 connection inside an intercepted tunnel, preface and
/// settings sent.
async fn h2_tunnel(tg: &Tollgate) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (tunnel, answer) = connect(tg.proxy, "api.github.com:443").await;
    assert_eq!(answer, Status(200));
    let mut tls = tokio_rustls::TlsConnector::from(tls_config(tg, vec![b"h2".to_vec()]))
        .connect(ServerName::try_from("api.github.com").unwrap(), tunnel)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tls
}

/// Read frames until the server sends GOAWAY (its error code) or closes.
async fn until_goaway(stream: &mut (impl AsyncRead + Unpin)) -> Option<u32> {
    let read = async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return None;
            }
            if header[3] == GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("tollgate neither sent GOAWAY nor closed")
}

async fn write_quietly(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    // The server may close while the flood is still being written.
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

#[tokio::test]
async fn http2_abuses_end_the_connection_not_the_proxy() {
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    const PROTOCOL_ERROR: u32 = 0x1;
    let corpus = Corpus::start().await;

    // Rapid reset (CVE-2023-44487): streams opened and reset at once.
    let mut tls = h2_tunnel(&corpus.tg).await;
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &get_repo(),
        ));
        flood.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    write_quietly(&mut tls, &flood).await;
    let code = until_goaway(&mut tls).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "rapid reset");

    // A CONTINUATION flood: one header block that never ends.
    let mut tls = h2_tunnel(&corpus.tg).await;
    let mut flood = frame(HEADERS, END_STREAM, 1, &get_repo());
    let junk = hpack(&[("x-flood", &"f".repeat(100))]);
    for _ in 0..2000 {
        flood.extend(frame(CONTINUATION, 0, 1, &junk));
    }
    write_quietly(&mut tls, &flood).await;
    let code = until_goaway(&mut tls).await;
    assert!(
        code.is_none() || code == Some(PROTOCOL_ERROR) || code == Some(ENHANCE_YOUR_CALM),
        "CONTINUATION flood: GOAWAY {code:?}"
    );

    // More streams at once than allowed: the extra ones are refused, the
    // connection and the proxy go on.
    let mut tls = h2_tunnel(&corpus.tg).await;
    let mut burst = Vec::new();
    for i in 0..150u32 {
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &get_repo(),
        ));
    }
    write_quietly(&mut tls, &burst).await;
    let refused = count_refused_streams(&mut tls).await;
    assert!(
        refused >= 50,
        "{refused} of 150 streams refused over the limit of 100"
    );

    corpus.still_serves("the HTTP/2 abuses").await;
    assert!(
        !corpus.tg.logs().contains("panicked"),
        "{}",
        corpus.tg.logs()
    );
}

/// RST_STREAM(REFUSED_STREAM) frames read within a short while.
async fn count_refused_streams(stream: &mut (impl AsyncRead + Unpin)) -> usize {
    const REFUSED_STREAM: u32 = 0x7;
    let mut refused = 0;
    let read = async {
        loop {
            let mut header = [0u8; 9];
            if stream.read_exact(&mut header).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            if header[3] == RST_STREAM && payload == REFUSED_STREAM.to_be_bytes() {
                refused += 1;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
    refused
}
