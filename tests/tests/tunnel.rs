//! CONNECT to hosts the catalog does not cover: decided as the built-in
//! `connect` action on host:port, tunnelled blind when allowed.

use tollgate_e2e::{shipped_policies, Setup, TestPki, Tollgate, Upstream, CODER};

async fn uncovered(permit: bool) -> (TestPki, Upstream, Tollgate) {
    let pki = TestPki::new();
    let upstream = Upstream::https(pki.server_config(&["tunnel.test"])).await;
    let mut policies = shipped_policies();
    if permit {
        policies.push((
            "tunnel.cedar".into(),
            format!(
                "@id(\"tunnel-test\")\npermit(principal == Workload::\"{CODER}\", action == Action::\"connect\", resource == Target::\"tunnel.test:443\");\n"
            ),
        ));
    }
    let tg = Tollgate::start(Setup {
        resolve: vec![("tunnel.test:443".into(), upstream.addr)],
        policies: Some(policies),
        // The test upstream speaks HTTP/2 and, like many servers, keeps its
        // side open after the client's half-close; the tunnel must still end.
        forward_extra: "  tunnel_half_close_timeout: 300ms\n".into(),
        ..Setup::default()
    });
    (pki, upstream, tg)
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
