//! CONNECT to hosts the catalog does not cover: decided as the built-in
//! `connect` action on host:port, tunnelled blind when allowed.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_e2e::{shipped_policies, Setup, TestPki, Tollgate, Upstream, CODER};

async fn uncovered(permit: bool) -> (TestPki, Upstream, Tollgate) {
    let pki = TestPki::new();
    let upstream = Upstream::https(pki.server_config(&["tunnel.test"])).await;
    let tg = tunnel_to(upstream.addr, permit);
    (pki, upstream, tg)
}

/// tollgate with `tunnel.test:443` resolved to `upstream`, the tunnel
/// permitted or not.
fn tunnel_to(upstream: SocketAddr, permit: bool) -> Tollgate {
    let mut policies = shipped_policies();
    if permit {
        policies.push((
            "tunnel.cedar".into(),
            format!(
                "@id(\"tunnel-test\")\npermit(principal == Workload::\"{CODER}\", action == Action::\"connect\", resource == Target::\"tunnel.test:443\");\n"
            ),
        ));
    }
    Tollgate::start(Setup {
        resolve: vec![("tunnel.test:443".into(), upstream)],
        policies: Some(policies),
        // The test upstream speaks HTTP/2 and, like many servers, keeps its
        // side open after the client's half-close; the tunnel must still end.
        forward_extra: "  tunnel_half_close_timeout: 300ms\n".into(),
        ..Setup::default()
    })
}

/// curl through tollgate, verifying the upstream with the test CA (a blind
/// tunnel shows the agent the upstream's own certificate).
async fn fetch(pki: &TestPki, tg: &Tollgate, url: &str) -> tollgate_e2e::CurlOutput {
    let ca = pki.write_ca(tg.dir.path());
    tg.curl(&["--cacert", ca.to_str().unwrap(), url]).await
}

#[tokio::test]
async fn allowed_connect_is_tunnelled_blind() {
    let (pki, upstream, tg) = uncovered(true).await;
    let out = fetch(&pki, &tg, "https://tunnel.test/anything").await;
    assert_eq!(out.status, 200, "{} {}", out.body, out.stderr);
    assert_eq!(out.json()["path"], "/anything");
    assert_eq!(upstream.count(), 1);
    let line = tg.wait_audit(|l| l["mode"] == "tunnel");
    assert_eq!(line["action"], "connect");
    assert_eq!(line["resource"], "tunnel.test:443");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["policy_ids"][0], "tunnel-test");
    assert!(line["bytes_in"].as_u64().unwrap() > 0);
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn connect_without_a_permit_is_403() {
    let (pki, upstream, tg) = uncovered(false).await;
    let out = fetch(&pki, &tg, "https://tunnel.test/anything").await;
    assert_ne!(out.exit, 0);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert_eq!(upstream.count(), 0);
    let line = tg.wait_audit(|l| l["action"] == "connect");
    assert_eq!(line["decision"], "deny");
    assert_eq!(line["reason"], "no_permit");
    assert_eq!(line["status"], 403);
}

#[tokio::test]
async fn covered_host_without_a_ca_is_decided_as_connect() {
    // No interception CA: tollgate cannot read the requests, so it must not
    // wave the tunnel through; it decides `connect` (denied here).
    let pki = TestPki::new();
    let upstream = Upstream::https(pki.server_config(&["api.github.com"])).await;
    let tg = Tollgate::start(Setup {
        resolve: vec![("api.github.com:443".into(), upstream.addr)],
        intercept: false,
        ..Setup::default()
    });
    let out = fetch(&pki, &tg, "https://api.github.com/repos/acme/api/pulls").await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    assert_eq!(upstream.count(), 0);
}

/// Bytes that differ by position, so a lost, repeated or reordered stretch
/// shows.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

#[tokio::test]
async fn megabytes_cross_a_blind_tunnel_intact_each_way_and_are_counted_exactly() {
    const UP: usize = 24 * 1024 * 1024 + 17;
    const DOWN: usize = 40 * 1024 * 1024 + 3;
    // A raw TCP upstream: it reads the whole upload up to the agent's
    // half-close, then sends the download and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await.unwrap();
        socket.write_all(&pattern(0xd0, DOWN)).await.unwrap();
        got
    });
    let tg = tunnel_to(upstream_addr, true);

    let mut agent = TcpStream::connect(tg.proxy).await.unwrap();
    let connect = "CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n";
    // The first bytes of the upload go in the same write as the CONNECT,
    // as a hurried client's would: tollgate has read them with the head.
    let upload = pattern(0x11, UP);
    let mut first = connect.as_bytes().to_vec();
    first.extend_from_slice(&upload[..1000]);
    agent.write_all(&first).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(agent.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    let (mut read_half, mut write_half) = agent.into_split();
    let sending = tokio::spawn(async move {
        write_half.write_all(&upload[1000..]).await.unwrap();
        write_half.shutdown().await.unwrap();
    });
    let mut download = Vec::new();
    read_half.read_to_end(&mut download).await.unwrap();
    sending.await.unwrap();

    let uploaded = upstream.await.unwrap();
    assert_eq!(uploaded.len(), UP);
    assert!(uploaded == pattern(0x11, UP), "the upload arrived changed");
    assert_eq!(download.len(), DOWN);
    assert!(
        download == pattern(0xd0, DOWN),
        "the download arrived changed"
    );

    let line = tg.wait_audit(|l| l["mode"] == "tunnel");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["bytes_in"], UP as u64);
    assert_eq!(line["bytes_out"], DOWN as u64);
    assert!(line["error"].is_null(), "{line}");
}
