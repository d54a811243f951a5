//! Workload identity through real clients and real keys: curl through an
//! HTTPS proxy listener with X.509-SVID client certificates minted here,
//! JWTs minted with PyJWT (RS256, ES256, EdDSA; Kubernetes service-account
//! tokens and JWT-SVIDs) verified against a JWKS file or a local HTTPS
//! JWKS/discovery server, and a real Envoy 1.40 identifying by its own
//! mTLS, by a JWT tollgate verifies, and by its `jwt_authn` filter.
//!
//! One policy set throughout: reads are allowed to the `agents` namespace
//! (except from the pod `untrusted-pod`) and to workloads whose token says
//! `team: infra`. So the same request is allowed or refused by who sent it.

use std::path::Path;

use serde_json::{json, Value};
use tollgate_e2e::envoy::Envoy;
use tollgate_e2e::hygiene::{assert_no_secrets, Collected};
use tollgate_e2e::identity::{kubernetes_claims, svid_claims, unix_now};
use tollgate_e2e::pki::SvidOptions;
use tollgate_e2e::{
    curl, curl_answer, repo_root, tollgate_bin, Answer, CurlOutput, DecisionService, JwksServer,
    JwtIssuer, MtlsFiles, Setup, TestPki, Tollgate, Upstream,
};

const PULLS: &str = "/repos/acme/api/pulls";
const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SVID_ISSUER: &str = "https://spire.example";
const CODER: &str = "spiffe://cluster.local/ns/agents/sa/coder";

const POLICIES: &str = r#"
@id("agents-read")
permit (principal, action in Action::"read", resource)
when { principal.namespace == "agents" && principal.pod != "untrusted-pod" };

@id("infra-read")
permit (principal, action in Action::"read", resource)
when { principal.claims.team == "infra" };
"#;

fn policies() -> Option<Vec<(String, String)>> {
    Some(vec![("identity.cedar".into(), POLICIES.into())])
}

/// The top-level `identity:` section: a Kubernetes issuer and a SPIRE-like
/// JWT-SVID issuer whose keys are in `jwks`.
fn identity_section(jwks: &Path) -> String {
    format!(
        "identity:\n  claims: [team]\n  trust_domains: [cluster.local]\n  issuers:\n\
         \x20   - {{ name: k8s, issuer: \"{K8S_ISSUER}\", audiences: [tollgate], kind: kubernetes,\n\
         \x20        trust_domain: cluster.local, jwks: {{ file: \"{jwks}\" }} }}\n\
         \x20   - {{ name: spire, issuer: \"{SVID_ISSUER}\", audiences: [tollgate], kind: svid,\n\
         \x20        algorithms: [RS256, ES256, EdDSA], jwks: {{ file: \"{jwks}\" }} }}\n",
        jwks = jwks.display()
    )
}

/// tollgate with one HTTPS proxy listener taking client certificates from
/// `mesh` and JWTs from both issuers; `api.github.com:80` is `github`.
struct World {
    tg: Tollgate,
    github: Upstream,
    /// `api.github.com:443`, for intercepted `CONNECT`s.
    github_tls: Upstream,
    issuer: JwtIssuer,
    mesh: TestPki,
    files: MtlsFiles,
    /// The listener's trust bundle (the mesh CA, in a file of its own).
    bundle: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let github = Upstream::http().await;
    let issuer = JwtIssuer::new();
    issuer.add_key("rsa-1", "RS256");
    issuer.add_key("ec-1", "ES256");
    issuer.add_key("ed-1", "EdDSA");
    issuer.add_key("ps-1", "PS256");
    let jwks = issuer.write_jwks(&["rsa-1", "ec-1", "ed-1", "ps-1"]);
    let upstream_pki = TestPki::new();
    let github_tls = Upstream::https(upstream_pki.server_config(&["api.github.com"])).await;
    let mesh = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = mesh.mtls_files(dir.path(), "unused-client");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &mesh.ca_pem).unwrap();
    let tg = Tollgate::start(Setup {
        identity: None,
        listener_yaml: format!(
            "    tls: {{ cert: \"{}\", key: \"{}\" }}\n    identity:\n      \
             mtls: {{ trust_bundle: \"{}\" }}\n      jwt: [k8s, spire]\n",
            files.server_cert,
            files.server_key,
            bundle.display()
        ),
        extra_yaml: identity_section(&jwks),
        policies: policies(),
        resolve: vec![
            ("api.github.com:80".into(), github.addr),
            ("api.github.com:443".into(), github_tls.addr),
        ],
        upstream_ca: Some(upstream_pki.ca_pem.clone()),
        ..Setup::default()
    });
    World {
        tg,
        github,
        github_tls,
        issuer,
        mesh,
        files,
        bundle,
        _dir: dir,
    }
}

/// The reason a JSON answer gives: a deny's `reason`, a refusal's `error`.
fn reason(answer: &Answer) -> String {
    let body = answer.out.json();
    body.get("reason")
        .or(body.get("error"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl World {
    /// `GET http://api.github.com/repos/acme/api/pulls` through the HTTPS
    /// proxy listener, with `extra` curl arguments (a client certificate,
    /// a `Proxy-Authorization`).
    async fn get(&self, extra: &[&str]) -> Answer {
        let proxy = format!("https://{}", self.tg.proxy);
        let url = format!("http://api.github.com{PULLS}");
        let mut args = vec!["-x", &proxy, "--proxy-cacert", &self.files.ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl_answer(&args).await
    }

    /// `requests` × `GET https://api.github.com/…` through one `CONNECT`
    /// to the HTTPS proxy listener, the token as the proxy password.
    async fn through_tunnel(&self, token: &str, requests: usize) -> CurlOutput {
        let proxy = format!("https://{}", self.tg.proxy);
        let ca = self.tg.ca_cert().display().to_string();
        let user = format!("workload:{token}");
        let url = format!("https://api.github.com{PULLS}");
        let mut args = vec![
            "-x",
            &proxy,
            "--proxy-cacert",
            &self.files.ca,
            "--proxy-user",
            &user,
            "--cacert",
            &ca,
        ];
        args.extend(std::iter::repeat_n(url.as_str(), requests));
        curl(&args).await
    }

    async fn with_jwt(&self, token: &str) -> Answer {
        let header = format!("Proxy-Authorization: Bearer {token}");
        self.get(&["--proxy-header", &header]).await
    }

    /// The audit line of the request refused or answered last with this
    /// status and reason.
    fn audit(&self, status: u16, reason: &str) -> Value {
        self.tg
            .wait_audit(|l| l["status"] == status && l["reason"] == reason)
    }

    fn k8s_token(&self, namespace: &str, pod: &str) -> String {
        let claims = kubernetes_claims(K8S_ISSUER, "tollgate", namespace, "coder", pod, 600);
        self.issuer.mint("rsa-1", "RS256", claims)
    }
}

fn assert_refused(answer: &Answer, expected: &str) {
    assert_eq!(answer.out.status, 407, "{expected}: {}", answer.out.body);
    assert_eq!(reason(answer), expected, "{}", answer.out.body);
    assert_eq!(
        answer.header("proxy-authenticate").as_deref(),
        Some("Bearer realm=\"tollgate\""),
        "{expected}: {}",
        answer.headers
    );
}

#[tokio::test]
async fn client_certificates_on_an_https_proxy_listener_are_x509_svids() {
    let world = world().await;
    let w = &world;
    let svid = |uris: &[&str], options: SvidOptions| w.mesh.client_svid(uris, &options);
    let with_cert = |cert: &tollgate_e2e::pki::ClientSvid| {
        vec![
            "--proxy-cert".to_string(),
            cert.cert.display().to_string(),
            "--proxy-key".to_string(),
            cert.key.display().to_string(),
        ]
    };
    let send = move |cert: &tollgate_e2e::pki::ClientSvid| {
        let args = with_cert(cert);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            w.get(&args).await
        }
    };

    let good = svid(&[CODER], SvidOptions::default());
    let answer = send(&good).await;
    assert_eq!(answer.out.status, 200, "{}", answer.out.body);
    let line = w.audit(200, "allowed");
    assert_eq!(line["workload"], CODER);
    assert_eq!(line["identity_source"], "mtls");
    assert_eq!(w.github.count(), 1);

    // Through the same listener, a workload of another namespace: the same
    // request, refused by policy.
    let other = svid(
        &["spiffe://cluster.local/ns/web/sa/coder"],
        SvidOptions::default(),
    );
    assert_eq!(send(&other).await.out.status, 403);

    let stranger_ca = TestPki::new();
    let stranger = stranger_ca.client_svid(&[CODER], &SvidOptions::default());
    for (cert, reason) in [
        (&stranger, "identity_untrusted"),
        (
            &svid(
                &[CODER],
                SvidOptions {
                    expired: true,
                    ..SvidOptions::default()
                },
            ),
            "identity_expired",
        ),
        (
            &svid(
                &[CODER],
                SvidOptions {
                    not_yet_valid: true,
                    ..SvidOptions::default()
                },
            ),
            "identity_not_yet_valid",
        ),
        (
            &svid(
                &[CODER, "spiffe://cluster.local/ns/agents/sa/other"],
                SvidOptions::default(),
            ),
            "identity_not_svid",
        ),
        (
            &svid(
                &[],
                SvidOptions {
                    dns_names: vec!["coder.agents.svc".into()],
                    ..SvidOptions::default()
                },
            ),
            "identity_not_svid",
        ),
        (
            &svid(
                &[CODER],
                SvidOptions {
                    is_ca: true,
                    ..SvidOptions::default()
                },
            ),
            "identity_not_svid",
        ),
        (
            &svid(
                &["spiffe://evil.example/ns/agents/sa/coder"],
                SvidOptions::default(),
            ),
            "identity_trust_domain_refused",
        ),
    ] {
        let answer = send(cert).await;
        assert_refused(&answer, reason);
        let line = w.audit(407, reason);
        assert_eq!(line["workload"], Value::Null, "{reason}");
    }
    // None of them reached the upstream.
    assert_eq!(w.github.count(), 1);

    // The bundle is replaced by the other CA's, without a restart: its
    // workloads are trusted from the next connection on, the mesh's no
    // longer.
    std::fs::write(&w.bundle, &stranger_ca.ca_pem).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while send(&stranger).await.out.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new bundle was never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_refused(&send(&good).await, "identity_untrusted");
}

#[tokio::test]
async fn jwts_identify_workloads_and_every_bad_one_is_refused_with_its_reason() {
    let w = world().await;
    let now = unix_now();
    let mut secrets = Vec::new();
    // Every answer, with its headers, for the hygiene check at the end.
    let mut collected = Collected::new();

    // RS256 as Bearer, a Kubernetes service-account token.
    let k8s = w.k8s_token("agents", "coder-7d9f");
    let answer = w.with_jwt(&k8s).await;
    assert_eq!(answer.out.status, 200, "{}", answer.out.body);
    let line = w.audit(200, "allowed");
    assert_eq!(line["workload"], CODER);
    assert_eq!(line["identity_source"], "jwt");
    // The token was for tollgate: the upstream never sees it.
    let seen = w.github.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header("proxy-authorization").is_none());
    secrets.push(k8s);

    // ES256 as the password of Basic (`HTTPS_PROXY=https://workload:<jwt>@…`),
    // a JWT-SVID whose `team` claim the policy reads.
    let svid = w.issuer.mint(
        "ec-1",
        "ES256",
        json!({"iss": SVID_ISSUER, "sub": "spiffe://cluster.local/ns/ci/sa/runner", "aud": "tollgate",
               "exp": now + 600, "iat": now, "team": "infra"}),
    );
    let user = format!("workload:{svid}");
    assert_eq!(w.get(&["--proxy-user", &user]).await.out.status, 200);
    let line =
        w.tg.wait_audit(|l| l["workload"] == "spiffe://cluster.local/ns/ci/sa/runner");
    assert_eq!(line["identity_source"], "jwt");
    secrets.push(svid);

    // EdDSA, the same workload with another team: no policy permits it.
    let web = w.issuer.mint(
        "ed-1",
        "EdDSA",
        json!({"iss": SVID_ISSUER, "sub": "spiffe://cluster.local/ns/ci/sa/runner", "aud": ["tollgate"],
               "exp": now + 600, "team": "web"}),
    );
    let answer = w.with_jwt(&web).await;
    assert_eq!(
        (answer.out.status, reason(&answer)),
        (403, "no_permit".into())
    );
    secrets.push(web);

    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = kubernetes_claims(K8S_ISSUER, "tollgate", "agents", "coder", "p", 600);
        edit(&mut c);
        c
    };
    let mut bad_signature = w.issuer.mint("rsa-1", "RS256", claims(&|_| {}));
    let middle = bad_signature.rfind('.').unwrap() + 20;
    let flipped = if &bad_signature[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    bad_signature.replace_range(middle..=middle, flipped);
    let cases = [
        (
            w.issuer.mint("rsa-1", "RS256", claims(&|c| c["aud"] = json!(["someone-else"]))),
            "identity_wrong_audience",
        ),
        (
            w.issuer.mint("rsa-1", "RS256", claims(&|c| c["iss"] = json!("https://evil.example"))),
            "identity_wrong_issuer",
        ),
        (
            w.issuer.mint(
                "rsa-1",
                "RS256",
                claims(&|c| {
                    c["exp"] = json!(now - 120);
                    c["iat"] = json!(now - 720);
                    c["nbf"] = json!(now - 720);
                }),
            ),
            "identity_expired",
        ),
        (
            w.issuer.mint("rsa-1", "RS256", claims(&|c| c["nbf"] = json!(now + 600))),
            "identity_not_yet_valid",
        ),
        (bad_signature, "identity_untrusted"),
        (w.issuer.mint_none(claims(&|_| {})), "identity_algorithm_refused"),
        (
            w.issuer.mint_hs256_with_public_key("rsa-1", claims(&|_| {})),
            "identity_algorithm_refused",
        ),
        (
            w.issuer.mint_with_header(
                "rsa-1",
                "RS256",
                json!({"kid": "not-a-key-of-this-issuer"}),
                claims(&|_| {}),
            ),
            "identity_untrusted",
        ),
        // Signed well, with an algorithm the issuer does not allow.
        (
            w.issuer.mint(
                "ps-1",
                "PS256",
                json!({"iss": SVID_ISSUER, "sub": CODER, "aud": "tollgate", "exp": now + 600}),
            ),
            "identity_algorithm_refused",
        ),
        (
            w.issuer.mint("rsa-1", "RS256", json!({"iss": SVID_ISSUER, "sub": "spiffe://evil.example/x", "aud": "tollgate", "exp": now + 600})),
            "identity_trust_domain_refused",
        ),
    ];
    for (token, reason) in cases {
        let answer = w.with_jwt(&token).await;
        assert_refused(&answer, reason);
        collected.add(reason, format!("{}\n{}", answer.headers, answer.out.body));
        w.audit(407, reason);
        secrets.push(token);
    }
    // Only the first request went out.
    assert_eq!(w.github.count(), 2);

    // A token that is not a JWT at all is no identity: nothing else is
    // configured on this listener, so `unidentified`.
    let answer = w.get(&[]).await;
    assert_refused(&answer, "unidentified");

    // No token, and no signature of one, anywhere tollgate writes.
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|t| {
            t.rsplit('.')
                .next()
                .filter(|s| s.len() >= 12)
                .map(String::from)
        })
        .collect();
    collected.add("logs", w.tg.logs());
    collected.add("audit", w.tg.stdout_text());
    let all: Vec<&str> = secrets
        .iter()
        .chain(&signatures)
        .map(String::as_str)
        .collect();
    assert_no_secrets(&all, &collected);
}

#[tokio::test]
async fn one_listener_tells_kubernetes_workloads_apart_by_namespace_and_pod() {
    let w = world().await;
    // The same request, from three service-account tokens.
    let agents = w.k8s_token("agents", "coder-7d9f");
    let web = w.k8s_token("web", "coder-5c2a");
    let untrusted = w.k8s_token("agents", "untrusted-pod");
    assert_eq!(w.with_jwt(&agents).await.out.status, 200);
    let denied = w.with_jwt(&web).await;
    assert_eq!(
        (denied.out.status, reason(&denied)),
        (403, "no_permit".into())
    );
    assert_eq!(w.with_jwt(&untrusted).await.out.status, 403);
    let lines = w.tg.wait_audit_lines(3);
    let workloads: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["workload"].as_str())
        .collect();
    assert_eq!(
        workloads,
        [CODER, "spiffe://cluster.local/ns/web/sa/coder", CODER]
    );

    // `HTTPS_PROXY=https://workload:<jwt>@…`: the CONNECT's token names
    // every request inside the intercepted tunnel.
    let out = w.through_tunnel(&web, 2).await;
    assert_eq!(
        (out.exit, out.status),
        (0, 403),
        "{}\n{}",
        out.stderr,
        w.tg.logs()
    );
    // Audit lines are written by their own thread: wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let inside = loop {
        let inside: Vec<Value> =
            w.tg.audit_lines()
                .into_iter()
                .filter(|l| l["mode"] == "intercept")
                .collect();
        if inside.len() >= 2 || std::time::Instant::now() > deadline {
            break inside;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(inside.len(), 2, "{}", w.tg.stdout_text());
    for line in inside {
        assert_eq!(line["workload"], "spiffe://cluster.local/ns/web/sa/coder");
        assert_eq!(line["identity_source"], "jwt");
    }
    assert_eq!(w.through_tunnel(&agents, 1).await.status, 200);
    assert_eq!(w.github_tls.count(), 1);
}

#[tokio::test]
async fn issuer_keys_rotate_without_a_restart_and_an_outage_keeps_the_last_good_keys() {
    let github = Upstream::http().await;
    let pki = TestPki::new();
    // Two issuers, each with a server of its own: one by URL (refetched on
    // an unknown `kid`), one by OIDC discovery (refetched every 300 ms).
    let rotating = JwtIssuer::new();
    rotating.add_key("r1", "ES256");
    rotating.write_jwks(&["r1"]);
    let rotating_server = JwksServer::start(&rotating, &pki);
    let discovered = JwtIssuer::new();
    discovered.add_key("d1", "EdDSA");
    discovered.write_jwks(&["d1"]);
    let discovered_server = JwksServer::start(&discovered, &pki);
    let tg = Tollgate::start(Setup {
        identity: None,
        listener_yaml: "    identity: { jwt: [rotating, discovered] }\n".into(),
        extra_yaml: format!(
            "identity:\n  claims: [team]\n  issuers:\n\
             \x20   - {{ name: rotating, issuer: \"https://rotating.example\", audiences: [tollgate], kind: svid,\n\
             \x20        jwks: {{ url: \"{}\" }}, ca: \"{}\", refresh: 1h }}\n\
             \x20   - {{ name: discovered, issuer: \"{}\", audiences: [tollgate], kind: svid,\n\
             \x20        jwks: {{ discovery: true }}, ca: \"{}\", refresh: 300ms }}\n",
            rotating_server.jwks_url(),
            rotating_server.ca_path().display(),
            discovered_server.issuer(),
            discovered_server.ca_path().display(),
        ),
        policies: policies(),
        resolve: vec![("api.github.com:80".into(), github.addr)],
        ..Setup::default()
    });
    let url = format!("http://api.github.com{PULLS}");
    let get = |token: String| {
        let header = format!("Proxy-Authorization: Bearer {token}");
        let (tg, url) = (&tg, &url);
        async move { tg.curl(&["--proxy-header", &header, url]).await }
    };
    let svid = |iss: &str, n: i64| json!({"iss": iss, "sub": CODER, "aud": "tollgate", "exp": unix_now() + 600, "jti": n});

    let fetched = rotating_server.jwks_fetches();
    assert_eq!(fetched, 1, "keys are fetched once at start");
    let first = get(rotating.mint("r1", "ES256", svid("https://rotating.example", 1))).await;
    assert_eq!(first.status, 200, "{}", first.body);

    // The issuer rotates: r2 replaces r1. A token signed with r2 makes
    // tollgate fetch the keys again, and it is accepted.
    rotating.add_key("r2", "ES256");
    rotating.write_jwks(&["r2"]);
    let rotated = get(rotating.mint("r2", "ES256", svid("https://rotating.example", 2))).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotating_server.jwks_fetches(), 2);
    // Made-up `kid`s right after do not make tollgate fetch again.
    for n in 3..6 {
        let made_up = rotating.mint_with_header(
            "r2",
            "ES256",
            json!({"kid": format!("made-up-{n}")}),
            svid("https://rotating.example", n),
        );
        let refused = get(made_up).await;
        assert_eq!(refused.status, 407);
        assert_eq!(refused.json()["error"], "identity_untrusted");
    }
    assert_eq!(rotating_server.jwks_fetches(), 2);

    // Discovery: the issuer's document names the JWKS.
    let iss = discovered_server.issuer();
    assert_eq!(
        get(discovered.mint("d1", "EdDSA", svid(&iss, 10)))
            .await
            .status,
        200
    );
    // The JWKS goes down; refreshes fail, the last good keys stay, and a
    // token never seen before still verifies.
    discovered_server.down();
    tg.wait_log("keeping the last good keys");
    let during = get(discovered.mint("d1", "EdDSA", svid(&iss, 11))).await;
    assert_eq!(during.status, 200, "{}", during.body);
    discovered_server.up();
}

#[test]
fn validate_refuses_a_policy_on_an_attribute_no_identity_source_provides() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root().join("config");
    for sub in ["catalog"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.cedar"), POLICIES).unwrap();
    let validate = |config: &str| {
        std::fs::write(dir.path().join("tollgate.yaml"), config).unwrap();
        std::process::Command::new(tollgate_bin())
            .args(["validate", "--config"])
            .arg(dir.path().join("tollgate.yaml"))
            .output()
            .unwrap()
    };
    // `team` is selected by no identity source.
    let out = validate("catalog: catalog\npolicies: policies\n");
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("team"), "{stderr}");
    assert!(stderr.contains("p.cedar"), "{stderr}");
    let out = validate("catalog: catalog\npolicies: policies\nidentity: { claims: [team] }\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tollgate decision` with the identity section and the policies above,
/// and Envoy's `decision_service.identity` as given.
fn decision_service(jwks: &Path, envoy_identity: &str) -> DecisionService {
    DecisionService::start(Setup {
        extra_yaml: identity_section(jwks),
        decision_service_yaml: envoy_identity.into(),
        policies: policies(),
        ..Setup::default()
    })
}

async fn through_envoy(envoy: &Envoy, extra: &[&str]) -> CurlOutput {
    let url = format!("{}{PULLS}", envoy.url());
    let mut args = vec!["-H", "Host: api.github.com"];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).await
}

#[tokio::test]
async fn envoy_identifies_by_a_jwt_tollgate_verifies_before_the_route_extension() {
    let issuer = JwtIssuer::new();
    issuer.add_key("rsa-1", "RS256");
    let jwks = issuer.write_jwks(&["rsa-1"]);
    let decision = decision_service(&jwks, "  identity: { jwt: [k8s] }\n");
    let github = Upstream::http().await;
    // The shipped gateway: its route names the coder as a fallback.
    let envoy = Envoy::gateway(decision.addr, github.addr);
    let token = |ns: &str| {
        issuer.mint(
            "rsa-1",
            "RS256",
            kubernetes_claims(K8S_ISSUER, "tollgate", ns, "coder", "p", 600),
        )
    };
    let bearer = |t: &str| format!("Proxy-Authorization: Bearer {t}");

    let allowed = through_envoy(&envoy, &["-H", &bearer(&token("agents"))]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let line = decision.wait_audit(|l| l["status"] == 200);
    assert_eq!(
        (line["workload"].as_str(), line["identity_source"].as_str()),
        (Some(CODER), Some("jwt"))
    );
    assert!(github.requests()[0].header("proxy-authorization").is_none());

    // The token names another namespace: it wins over the route's coder.
    let web = through_envoy(&envoy, &["-H", &bearer(&token("web"))]).await;
    assert_eq!(web.status, 403, "{}", web.body);
    decision.wait_audit(|l| l["workload"] == "spiffe://cluster.local/ns/web/sa/coder");

    let expired = issuer.mint(
        "rsa-1",
        "RS256",
        kubernetes_claims(K8S_ISSUER, "tollgate", "agents", "coder", "p", -600),
    );
    let refused = through_envoy(&envoy, &["-H", &bearer(&expired)]).await;
    assert_eq!(refused.status, 407, "{}", refused.body);
    assert_eq!(refused.json()["error"], "identity_expired");

    // No token: the route's extension, the weakest source.
    let fallback = through_envoy(&envoy, &[]).await;
    assert_eq!(fallback.status, 200);
    decision.wait_audit(|l| l["identity_source"] == "static");
    assert_eq!(github.count(), 2);
}

#[tokio::test]
async fn envoy_jwt_authn_verifies_and_tollgate_names_the_workload_from_its_payload() {
    let issuer = JwtIssuer::new();
    issuer.add_key("rsa-1", "RS256");
    let jwks = issuer.write_jwks(&["rsa-1"]);
    // tollgate does not verify here; it maps the payload Envoy verified.
    let decision = decision_service(&jwks, "");
    let github = Upstream::http().await;
    let shipped = repo_root().join("deploy/envoy/envoy-jwt.yaml");
    let envoy = Envoy::gateway_from(&shipped, decision.addr, github.addr, |text| {
        tollgate_e2e::envoy::replace_once(
            &text,
            "filename: /etc/tollgate/jwks.json",
            &format!("filename: {}", jwks.display()),
        )
    });
    let token = |ns: &str, pod: &str| {
        issuer.mint(
            "rsa-1",
            "RS256",
            kubernetes_claims(K8S_ISSUER, "tollgate", ns, "coder", pod, 600),
        )
    };
    let bearer = |t: &str| format!("Proxy-Authorization: Bearer {t}");

    let allowed = through_envoy(&envoy, &["-H", &bearer(&token("agents", "coder-1"))]).await;
    assert_eq!(allowed.status, 200, "{}\n{}", allowed.body, envoy.logs());
    let line = decision.wait_audit(|l| l["status"] == 200);
    assert_eq!(line["workload"], CODER);
    assert_eq!(line["identity_source"], "envoy_jwt");
    // `forward: false`: the token stays at the gateway.
    assert!(github.requests()[0].header("proxy-authorization").is_none());

    // The pod from the token's `kubernetes.io` claim reaches policy.
    let untrusted =
        through_envoy(&envoy, &["-H", &bearer(&token("agents", "untrusted-pod"))]).await;
    assert_eq!(untrusted.status, 403, "{}", untrusted.body);

    // No token: tollgate's own answer; a bad one: Envoy's.
    let missing = through_envoy(&envoy, &[]).await;
    assert_eq!(
        (missing.status, missing.json()["error"].as_str()),
        (407, Some("unidentified"))
    );
    let mut forged = token("agents", "coder-1");
    forged.push_str("AAAA");
    assert_eq!(
        through_envoy(&envoy, &["-H", &bearer(&forged)])
            .await
            .status,
        401
    );
    assert_eq!(github.count(), 1);
}

#[tokio::test]
async fn envoy_mtls_principal_names_the_workload() {
    let issuer = JwtIssuer::new();
    let jwks = issuer.write_jwks(&[]);
    let decision = decision_service(&jwks, "");
    let github = Upstream::http().await;
    let mesh = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = mesh.mtls_files(dir.path(), "unused");
    // Agents reach the gateway over mutual TLS with their X.509-SVIDs.
    let envoy = Envoy::gateway_edited(decision.addr, github.addr, |text| {
        tollgate_e2e::envoy::replace_once(
            &text,
            "    filter_chains:\n    - filters:\n",
            &format!(
                "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n        \
                 typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          \
                 require_client_certificate: true\n          common_tls_context:\n            \
                 tls_certificates: [{{ certificate_chain: {{ filename: \"{}\" }}, private_key: {{ filename: \"{}\" }} }}]\n            \
                 validation_context: {{ trusted_ca: {{ filename: \"{}\" }} }}\n      filters:\n",
                files.server_cert, files.server_key, files.ca
            ),
        )
    });
    let send = |id: &str| {
        let cert = mesh.client_svid(&[id], &SvidOptions::default());
        let url = format!("https://{}{PULLS}", envoy.addr);
        let ca = files.ca.clone();
        async move {
            // The whole certificate (and the folder it owns) moves in.
            let cert = cert;
            let (c, k) = (
                cert.cert.display().to_string(),
                cert.key.display().to_string(),
            );
            curl(&[
                "--cacert",
                &ca,
                "--cert",
                &c,
                "--key",
                &k,
                "-H",
                "Host: api.github.com",
                &url,
            ])
            .await
        }
    };
    let allowed = send(CODER).await;
    assert_eq!(
        allowed.status,
        200,
        "{} {}\n{}",
        allowed.body,
        allowed.stderr,
        envoy.logs()
    );
    let line = decision.wait_audit(|l| l["status"] == 200);
    assert_eq!(line["identity_source"], "envoy_mtls");
    // The certificate wins over the route's extension (the coder).
    let web = send("spiffe://cluster.local/ns/web/sa/coder").await;
    assert_eq!(web.status, 403, "{}", web.body);
    decision.wait_audit(|l| {
        l["workload"] == "spiffe://cluster.local/ns/web/sa/coder"
            && l["identity_source"] == "envoy_mtls"
    });
}

#[tokio::test]
async fn a_remote_decision_sees_the_identity_the_proxy_verified() {
    let issuer = JwtIssuer::new();
    issuer.add_key("ec-1", "ES256");
    let jwks = issuer.write_jwks(&["ec-1"]);
    let decision = decision_service(&jwks, "");
    let github = Upstream::http().await;
    let proxy = Tollgate::start(Setup {
        identity: None,
        listener_yaml: "    identity: { jwt: [spire] }\n".into(),
        extra_yaml: identity_section(&jwks),
        decision_endpoint: Some(decision.url()),
        policies: policies(),
        resolve: vec![("api.github.com:80".into(), github.addr)],
        ..Setup::default()
    });
    let runner = |team: &str| {
        let mut claims = svid_claims(
            Some(SVID_ISSUER),
            "tollgate",
            "spiffe://cluster.local/ns/ci/sa/runner",
            600,
        );
        claims["team"] = json!(team);
        issuer.mint("ec-1", "ES256", claims)
    };
    let url = format!("http://api.github.com{PULLS}");
    for (team, status) in [("infra", 200), ("web", 403)] {
        let header = format!("Proxy-Authorization: Bearer {}", runner(team));
        let out = proxy.curl(&["--proxy-header", &header, &url]).await;
        assert_eq!(out.status, status, "team {team}: {}", out.body);
    }
    // The decision service's audit line says how the proxy identified it.
    let line = decision.wait_audit(|l| l["status"] == 200);
    assert_eq!(line["identity_source"], "jwt");
    assert_eq!(line["workload"], "spiffe://cluster.local/ns/ci/sa/runner");
}

#[tokio::test]
async fn source_addresses_and_static_are_fallbacks_a_presented_token_overrides_and_task_tokens_ride_beside(
) {
    let github = Upstream::http().await;
    let issuer = JwtIssuer::new();
    issuer.add_key("rsa-1", "RS256");
    let jwks = issuer.write_jwks(&["rsa-1"]);
    let tg = Tollgate::start(Setup {
        identity: None,
        listener_yaml: "    identity:\n      jwt: [k8s]\n      \
                        source_addresses: { 127.0.0.0/8: \"spiffe://cluster.local/ns/agents/sa/by-address\" }\n      \
                        static: \"spiffe://cluster.local/ns/web/sa/sidecar\"\n"
            .into(),
        extra_yaml: identity_section(&jwks),
        policies: policies(),
        resolve: vec![("api.github.com:80".into(), github.addr)],
        tasks: true,
        ..Setup::default()
    });
    let url = format!("http://api.github.com{PULLS}");

    // Nothing presented: the address (loopback is in the range) before the
    // static identity.
    assert_eq!(tg.curl(&[&url]).await.status, 200);
    let line = tg.wait_audit(|l| l["status"] == 200);
    assert_eq!(
        line["workload"],
        "spiffe://cluster.local/ns/agents/sa/by-address"
    );
    assert_eq!(line["identity_source"], "source_address");

    // A token overrides both; a bad one is refused, not replaced by them.
    let web = issuer.mint(
        "rsa-1",
        "RS256",
        kubernetes_claims(K8S_ISSUER, "tollgate", "web", "coder", "p", 600),
    );
    let header = format!("Proxy-Authorization: Bearer {web}");
    assert_eq!(
        tg.curl(&["--proxy-header", &header, &url]).await.status,
        403
    );
    // Python requests with the token as the proxy URL's password
    // (`HTTPS_PROXY=http://workload:<jwt>@…` works the same way).
    let (code, stdout, stderr) = tollgate_e2e::python(
        "import os, requests\n\
         r = requests.get(os.environ['URL'], proxies={'http': os.environ['PROXY']}, timeout=10)\n\
         print(r.status_code, r.json().get('reason'))\n",
        &[
            ("URL", url.clone()),
            ("PROXY", format!("http://workload:{web}@{}", tg.proxy)),
        ],
    )
    .await;
    assert_eq!((code, stdout.trim()), (0, "403 no_permit"), "{stderr}");
    let expired = issuer.mint(
        "rsa-1",
        "RS256",
        kubernetes_claims(K8S_ISSUER, "tollgate", "agents", "coder", "p", -600),
    );
    let header = format!("Proxy-Authorization: Bearer {expired}");
    let refused = tg.curl(&["--proxy-header", &header, &url]).await;
    assert_eq!(
        (refused.status, refused.json()["error"].as_str()),
        (407, Some("identity_expired"))
    );

    // The JWT in Proxy-Authorization, the task token where the API key
    // goes: both are read.
    let agents = issuer.mint(
        "rsa-1",
        "RS256",
        kubernetes_claims(K8S_ISSUER, "tollgate", "agents", "coder", "p", 600),
    );
    let task = tollgate_e2e::tasks::start_task(&tg.decision_url(), CODER, &["--ttl", "10m"]);
    let proxy_auth = format!("Proxy-Authorization: Bearer {agents}");
    let api_key = format!("Authorization: Bearer {}", task.token);
    let out = tg
        .curl(&["--proxy-header", &proxy_auth, "-H", &api_key, &url])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let line = tg.wait_audit(|l| l["task"] == task.id.as_str());
    assert_eq!(
        (line["workload"].as_str(), line["identity_source"].as_str()),
        (Some(CODER), Some("jwt"))
    );

    // Each request counted by how it was identified.
    let metrics = curl(&[&format!("http://{}/metrics", tg.admin)]).await.body;
    for series in [
        "tollgate_identifications_total{source=\"source_address\",outcome=\"identified\"} 1",
        "tollgate_identifications_total{source=\"jwt\",outcome=\"identified\"} 3",
        "tollgate_identifications_total{source=\"none\",outcome=\"identity_expired\"} 1",
        "tollgate_identifications_total{source=\"mtls\",outcome=\"identified\"} 0",
    ] {
        assert!(metrics.contains(series), "no `{series}` in\n{metrics}");
    }
}
