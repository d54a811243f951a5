//! tollgate behind a real Envoy: the shipped `deploy/envoy/envoy.yaml`
//! (addresses rewritten to loopback, its ext_authz filter as shipped) asks
//! `tollgate decision` about every request. Agents talk plain HTTP to Envoy
//! with `Host: api.github.com`; "GitHub" is a local recording upstream.

use tollgate_e2e::envoy::{self, Envoy};
use tollgate_e2e::tasks::{end_task, start_task};
use tollgate_e2e::{
    curl, curl_answer, Answer, DecisionService, MtlsFiles, Setup, TestPki, Upstream,
};

const CREDENTIALS: &str =
    "credentials:\n  github-readonly: { env: GITHUB_READONLY_TOKEN, services: [github] }\n";

/// Envoy, the decision service it asks, the upstream it forwards to, and
/// the secret the decision service injects.
struct Gateway {
    github: Upstream,
    decision: DecisionService,
    envoy: Envoy,
    secret: String,
}

async fn gateway() -> Gateway {
    gateway_with_secret(true).await
}

/// `with_secret: false`: the credential is configured but its variable unset.
async fn gateway_with_secret(with_secret: bool) -> Gateway {
    gateway_with(with_secret, CREDENTIALS, None).await
}

/// `credentials`: the `credentials:` section (the secret is in
/// `GITHUB_READONLY_TOKEN` and `TEST_SECRET`); `policies`: instead of the
/// shipped ones.
async fn gateway_with(
    with_secret: bool,
    credentials: &str,
    policies: Option<Vec<(String, String)>>,
) -> Gateway {
    gateway_edited(with_secret, credentials, policies, |text| text).await
}

/// The same, with `edit` applied to Envoy's configuration.
async fn gateway_edited(
    with_secret: bool,
    credentials: &str,
    policies: Option<Vec<(String, String)>>,
    edit: impl FnOnce(String) -> String,
) -> Gateway {
    let github = Upstream::http().await;
    let secret = tollgate_e2e::random_secret("ghs_test");
    let decision = DecisionService::start(Setup {
        env: if with_secret {
            secret_env(&secret)
        } else {
            Vec::new()
        },
        extra_yaml: credentials.into(),
        policies,
        tasks: true,
        ..Setup::default()
    });
    let envoy = Envoy::gateway_edited(decision.addr, github.addr, edit);
    Gateway {
        github,
        decision,
        envoy,
        secret,
    }
}

fn secret_env(secret: &str) -> Vec<(String, String)> {
    vec![
        ("GITHUB_READONLY_TOKEN".into(), secret.into()),
        ("TEST_SECRET".into(), secret.into()),
    ]
}

impl Gateway {
    /// curl through Envoy to `api.github.com`, as an agent would.
    async fn send(&self, method: &str, path: &str, extra: &[&str]) -> Answer {
        let url = format!("{}{path}", self.envoy.url());
        let mut args = vec!["-X", method, "-H", "Host: api.github.com"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl_answer(&args).await
    }

    /// The secret is in none of what tollgate wrote nor any answer the agent got.
    fn assert_secret_kept(&self, answers: &[&Answer]) {
        let secret = self.secret.as_str();
        assert!(!self.decision.logs().contains(secret), "secret in logs");
        assert!(
            !self.decision.stdout_text().contains(secret),
            "secret in audit lines"
        );
        for answer in answers {
            assert!(
                !answer.out.body.contains(secret),
                "secret in a response body"
            );
            assert!(
                !answer.headers.contains(secret),
                "secret in response headers"
            );
        }
    }
}

const PULLS: &str = "/repos/acme/api/pulls";

#[test]
fn the_shipped_envoy_config_is_valid() {
    let out = envoy::validate(&envoy::shipped_gateway_config());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("OK"), "{all}");
}

/// The agent sends its own credentials three ways; the request is allowed
/// and reaches the upstream with the policy's credential and none of them.
async fn send_with_agent_credentials(gw: &Gateway) -> Answer {
    let answer = gw
        .send(
            "GET",
            PULLS,
            &[
                "-H",
                "Authorization: Bearer agent-own-token",
                "-H",
                "X-Api-Key: agent-own-key",
                "-H",
                "Cookie: session=agent",
            ],
        )
        .await;
    assert_eq!(answer.out.status, 200, "{}", answer.out.body);
    assert_eq!(answer.out.json()["upstream"], "ok");

    let seen = gw.github.requests();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path_and_query, PULLS);
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", gw.secret).as_str())
    );
    assert_eq!(request.header("x-api-key"), None);
    assert_eq!(request.header("cookie"), None);
    assert!(
        request
            .headers
            .iter()
            .all(|(_, v)| !v.contains("agent-own")),
        "the agent's credentials went upstream: {:?}",
        request.headers
    );
    answer
}

#[tokio::test]
async fn an_allowed_request_goes_out_with_the_policy_credential_not_the_agents() {
    let gw = gateway().await;
    let answer = send_with_agent_credentials(&gw).await;

    // Envoy's access log and tollgate's audit line name the same decision.
    let logged = gw
        .envoy
        .wait_access_log(|l| l["path"] == PULLS && l["status"] == 200);
    assert_eq!(logged["tool"], "github");
    assert_eq!(logged["action"], "github:pulls.list");
    let decision_id = logged["decision_id"].as_str().unwrap().to_string();
    assert!(!decision_id.is_empty() && decision_id != "-", "{logged}");
    let audit = gw.decision.wait_audit(|l| l["decision_id"] == decision_id);
    assert_eq!(audit["mode"], "ext_authz");
    assert_eq!(audit["decision"], "allow");
    assert_eq!(audit["action"], "github:pulls.list");
    assert_eq!(audit["workload"], tollgate_e2e::CODER);
    assert_eq!(audit["method"], "GET");
    assert_eq!(audit["host"], "api.github.com");

    gw.assert_secret_kept(&[&answer]);
}

#[tokio::test]
async fn with_raw_header_encoding_the_agents_credentials_are_still_stripped() {
    // `encode_raw_headers: true` makes Envoy send the headers as a list
    // with byte values (`header_map`) instead of the `headers` map. A
    // header tollgate did not see would not be removed.
    let gw = gateway_edited(true, CREDENTIALS, None, |text| {
        envoy::replace_once(
            &text,
            "              include_peer_certificate: true\n",
            "              include_peer_certificate: true\n              encode_raw_headers: true\n",
        )
    })
    .await;
    let answer = send_with_agent_credentials(&gw).await;
    gw.assert_secret_kept(&[&answer]);
}

#[tokio::test]
async fn a_denied_request_gets_tollgates_403_from_envoy_and_never_leaves() {
    let gw = gateway().await;
    let answer = gw
        .send(
            "DELETE",
            "/repos/acme/api",
            &["-H", "Authorization: Bearer agent-own-token"],
        )
        .await;
    assert_eq!(answer.out.status, 403, "{}", answer.out.body);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        answer.headers
    );
    let body = answer.out.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["action"], "github:repos.delete");
    assert_eq!(body["reason"], "forbidden");
    assert_eq!(body["policy_ids"][0], "forbid-prod-change");
    assert!(
        body["message"].as_str().unwrap().contains("production"),
        "{body}"
    );
    assert_eq!(gw.github.count(), 0);

    // The id in the body is the audit line's, and Envoy's access log's.
    let decision_id = body["decision_id"].as_str().unwrap();
    let audit = gw.decision.wait_audit(|l| l["decision_id"] == decision_id);
    assert_eq!(audit["mode"], "ext_authz");
    assert_eq!(audit["decision"], "deny");
    assert_eq!(audit["reason"], "forbidden");
    let logged = gw
        .envoy
        .wait_access_log(|l| l["status"] == 403 && l["decision_id"] == decision_id);
    assert_eq!(logged["action"], "github:repos.delete");

    gw.assert_secret_kept(&[&answer]);
}

#[tokio::test]
async fn envoy_fails_closed_while_tollgate_is_down_and_recovers_after_restart() {
    let mut gw = gateway().await;
    let before = gw.send("GET", PULLS, &[]).await;
    assert_eq!(before.out.status, 200, "{}", before.out.body);
    assert_eq!(gw.github.count(), 1);

    gw.assert_secret_kept(&[&before]);

    gw.decision.stop();
    let down = gw.send("GET", PULLS, &[]).await;
    assert_eq!(down.out.status, 403, "{}", down.out.body);
    assert_eq!(
        gw.github.count(),
        1,
        "a request went out with tollgate down"
    );

    gw.decision.restart();
    // Envoy reconnects on its own; a bounded number of tries.
    let mut answers = Vec::new();
    for _ in 0..50 {
        let answer = gw.send("GET", PULLS, &[]).await;
        let allowed = answer.out.status == 200;
        answers.push(answer);
        if allowed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let last = answers.last().unwrap();
    assert_eq!(
        last.out.status,
        200,
        "never allowed again after restart: {}\nenvoy:\n{}",
        last.out.body,
        gw.envoy.logs()
    );
    assert_eq!(gw.github.count(), 2);
    let seen = gw.github.requests();
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer {}", gw.secret).as_str())
    );

    let mut all = vec![&before, &down];
    all.extend(answers.iter());
    gw.assert_secret_kept(&all);
}

#[tokio::test]
async fn an_agent_can_use_the_gateway_as_its_http_proxy() {
    let gw = gateway().await;
    let url = format!("http://api.github.com{PULLS}");
    let out = curl(&["-x", &gw.envoy.url(), &url]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let seen = gw.github.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, PULLS);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", gw.secret).as_str())
    );
}

#[tokio::test]
async fn a_credential_that_cannot_be_read_refuses_the_request() {
    let gw = gateway_with_secret(false).await;
    let answer = gw
        .send(
            "GET",
            PULLS,
            &["-H", "Authorization: Bearer agent-own-token"],
        )
        .await;
    assert_eq!(answer.out.status, 503, "{}", answer.out.body);
    let body = answer.out.json();
    assert_eq!(body["error"], "credential_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("GITHUB_READONLY_TOKEN"),
        "{body}"
    );
    // Neither without a credential nor with the agent's own.
    assert_eq!(gw.github.count(), 0);
}

/// Policies for the non-bearer styles and the binding: pull requests with
/// a query-parameter credential, issues with a header template, and commits
/// with a credential bound to Slack only.
fn styled_gateway() -> (String, Vec<(String, String)>) {
    let credentials = "credentials:
  gh-query: { env: TEST_SECRET, inject: { query: { param: access_token } }, services: [github] }
  gh-header:
    env: TEST_SECRET
    inject: { header: { name: X-Upstream-Token, template: \"token {value}\" } }
    services: [github]
  slack-bot: { env: TEST_SECRET, services: [slack] }
"
    .to_string();
    let coder = tollgate_e2e::CODER;
    let permit = |credential: &str, action: &str| {
        format!(
            "@id(\"{credential}\")\n@credential(\"{credential}\")\npermit (principal == Workload::\"{coder}\", action == Action::\"{action}\", resource);\n"
        )
    };
    let policies = [
        permit("gh-query", "github:pulls.list"),
        permit("gh-header", "github:issues.list"),
        permit("slack-bot", "github:commits.list"),
    ]
    .concat();
    (credentials, vec![("test.cedar".into(), policies)])
}

#[tokio::test]
async fn a_query_credential_is_refused_through_envoy_and_a_task_token_there_removed() {
    let gw = gateway().await;
    let refused = gw
        .send("GET", &format!("{PULLS}?state=open&api_key=agent-own"), &[])
        .await;
    assert_eq!(refused.out.status, 403, "{}", refused.out.body);
    let body = refused.out.json();
    assert_eq!(body["reason"], "credential_in_query");
    assert!(
        body["message"].as_str().unwrap().contains("api_key"),
        "{body}"
    );
    assert!(!refused.out.body.contains("agent-own"));
    assert_eq!(gw.github.count(), 0);

    // The task token as a key parameter: the task is the request's, and
    // Envoy takes the parameter off before the request leaves.
    let task = tollgate_e2e::tasks::start_task(&gw.decision.url(), tollgate_e2e::CODER, &[]);
    let allowed = gw
        .send(
            "GET",
            &format!("{PULLS}?access_token={}&state=open", task.token),
            &[],
        )
        .await;
    assert_eq!(allowed.out.status, 200, "{}", allowed.out.body);
    let seen = gw.github.requests();
    assert_eq!(seen[0].path_and_query, format!("{PULLS}?state=open"));
    let line = gw
        .decision
        .wait_audit(|l| l["mode"] == "ext_authz" && l["decision"] == "allow");
    assert_eq!(line["task"], task.id.as_str());
    assert_eq!(line["removed_query"], serde_json::json!(["access_token"]));
    gw.assert_secret_kept(&[&refused, &allowed]);
}

#[tokio::test]
async fn query_and_header_template_credentials_reach_the_upstream_through_envoy() {
    let (credentials, policies) = styled_gateway();
    let gw = gateway_with(true, &credentials, Some(policies)).await;
    let agent = [
        "-H",
        "Authorization: Bearer agent-own-token",
        "-H",
        "X-Api-Key: agent-key",
    ];
    let query = gw
        .send(
            "GET",
            &format!("{PULLS}?state=open&access_token=agent-own&access%5Ftoken=agent-sneaky"),
            &agent,
        )
        .await;
    assert_eq!(query.out.status, 200, "{}", query.out.body);
    let header = gw.send("GET", "/repos/acme/api/issues", &agent).await;
    assert_eq!(header.out.status, 200, "{}", header.out.body);

    let seen = gw.github.requests();
    assert_eq!(seen.len(), 2);
    // Envoy rebuilds the query in its own order.
    let (path, query_string) = seen[0].path_and_query.split_once('?').unwrap();
    let mut pairs: Vec<&str> = query_string.split('&').collect();
    pairs.sort_unstable();
    assert_eq!(path, PULLS);
    assert_eq!(
        pairs,
        [format!("access_token={}", gw.secret).as_str(), "state=open"]
    );
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(
        seen[1].header("x-upstream-token"),
        Some(format!("token {}", gw.secret).as_str())
    );
    for request in &seen {
        assert_eq!(request.header("x-api-key"), None);
        assert!(
            request.headers.iter().all(|(_, v)| !v.contains("agent-")),
            "the agent's credential went upstream: {:?}",
            request.headers
        );
        assert!(
            !request.path_and_query.contains("agent-"),
            "{}",
            request.path_and_query
        );
    }
    gw.assert_secret_kept(&[&query, &header]);
}

#[tokio::test]
async fn a_credential_bound_elsewhere_is_refused_by_envoy_and_never_sent() {
    let (credentials, policies) = styled_gateway();
    let gw = gateway_with(true, &credentials, Some(policies)).await;
    let answer = gw
        .send(
            "GET",
            "/repos/acme/api/commits",
            &["-H", "Authorization: Bearer agent-own-token"],
        )
        .await;
    assert_eq!(answer.out.status, 403, "{}", answer.out.body);
    let body = answer.out.json();
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["reason"], "credential_not_bound");
    assert_eq!(gw.github.count(), 0);
    let decision_id = body["decision_id"].as_str().unwrap();
    let audit = gw.decision.wait_audit(|l| l["decision_id"] == decision_id);
    assert_eq!(audit["mode"], "ext_authz");
    assert_eq!(audit["reason"], "credential_not_bound");
    gw.assert_secret_kept(&[&answer]);
}

#[tokio::test]
async fn envoy_sees_the_same_tasks_and_their_end() {
    let gw = gateway().await;
    // A write outside a task: the shipped guardrail, answered by Envoy.
    let answer = gw.send("POST", PULLS, &["-d", "{}"]).await;
    assert_eq!(answer.out.status, 403, "{}", answer.out.body);
    assert_eq!(answer.out.json()["policy_ids"][0], "writes-need-a-task");

    let task = start_task(&gw.decision.url(), tollgate_e2e::CODER, &[]);
    let auth = format!("Authorization: Bearer {}", task.token);
    let answer = gw.send("GET", PULLS, &["-H", &auth]).await;
    assert_eq!(answer.out.status, 200, "{}", answer.out.body);
    let seen = &gw.github.requests()[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", gw.secret).as_str())
    );
    let audit = gw
        .decision
        .wait_audit(|l| l["mode"] == "ext_authz" && l["decision"] == "allow");
    assert_eq!(audit["task"], task.id.as_str());

    end_task(&gw.decision.url(), &task.id);
    let answer = gw.send("GET", PULLS, &["-H", &auth]).await;
    assert_eq!(answer.out.status, 401, "{}", answer.out.body);
    assert_eq!(answer.out.json()["reason"], "task_ended");
    assert_eq!(gw.github.requests().len(), 1);
    gw.assert_secret_kept(&[&answer]);
}

/// Envoy's TLS toward the decision service: it trusts `ca` for the
/// service's address and, with `client`, shows that certificate and key.
fn decision_tls(ca: &str, client: Option<(&str, &str)>) -> String {
    let identity = client.map_or(String::new(), |(cert, key)| {
        format!(
            "          tls_certificates:\n          - certificate_chain: {{ filename: \"{cert}\" }}\n            private_key: {{ filename: \"{key}\" }}\n"
        )
    });
    format!(
        "    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          alpn_protocols: [h2]
{identity}          validation_context:
            trusted_ca: {{ filename: \"{ca}\" }}
            match_typed_subject_alt_names:
            - san_type: IP_ADDRESS
              matcher: {{ exact: 127.0.0.1 }}
"
    )
}

#[tokio::test]
async fn envoy_asks_over_mutual_tls_and_without_a_client_certificate_gets_no_decision() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestPki::new().mtls_files(dir.path(), "envoy.tollgate.test");
    let MtlsFiles {
        ca,
        client_cert,
        client_key,
        ..
    } = &files;

    let github = Upstream::http().await;
    let secret = tollgate_e2e::random_secret("ghs_test");
    let decision = DecisionService::start(Setup {
        env: secret_env(&secret),
        extra_yaml: CREDENTIALS.into(),
        decision_service_yaml: files.service_tls_yaml(),
        ..Setup::default()
    });
    let with_tls = |client: Option<(&str, &str)>| {
        let tls = decision_tls(ca, client);
        move |text: String| {
            envoy::replace_once(
                &text,
                "    connect_timeout: 1s\n",
                &format!("    connect_timeout: 1s\n{tls}"),
            )
        }
    };
    let envoy = Envoy::gateway_edited(
        decision.addr,
        github.addr,
        with_tls(Some((client_cert, client_key))),
    );
    let gw = Gateway {
        github,
        decision,
        envoy,
        secret,
    };

    // Allowed with the credential swapped, and denied with tollgate's
    // answer: both came over the mutual-TLS connection.
    let allowed = send_with_agent_credentials(&gw).await;
    let denied = gw.send("DELETE", "/repos/acme/api", &[]).await;
    assert_eq!(denied.out.status, 403, "{}", denied.out.body);
    assert_eq!(denied.out.json()["policy_ids"][0], "forbid-prod-change");

    // An Envoy without a client certificate gets no decision, so it
    // refuses on its own (`status_on_error`) and nothing leaves.
    let gw = Gateway {
        envoy: Envoy::gateway_edited(gw.decision.addr, gw.github.addr, with_tls(None)),
        ..gw
    };
    let refused = gw.send("GET", PULLS, &[]).await;
    assert_eq!(refused.out.status, 403, "{}", refused.out.body);
    assert!(refused.out.body.is_empty(), "{}", refused.out.body);
    assert_eq!(gw.github.count(), 1);
    gw.decision.wait_log("TLS handshake refused");
    gw.assert_secret_kept(&[&allowed, &denied, &refused]);
}

#[tokio::test]
async fn a_credential_rebound_in_the_configuration_file_applies_without_a_restart() {
    let (credentials, policies) = styled_gateway();
    let gw = gateway_with(true, &credentials, Some(policies)).await;
    let commits = "/repos/acme/api/commits";
    let refused = gw.send("GET", commits, &[]).await;
    assert_eq!(refused.out.json()["reason"], "credential_not_bound");

    // Watching is on: the file's change alone reloads it.
    gw.decision.rewrite("tollgate.yaml", |text| {
        text.replace("services: [slack] }", "services: [slack, github] }")
    });
    gw.decision
        .wait_log("catalog, policies and credentials reloaded");
    let allowed = gw
        .send(
            "GET",
            commits,
            &["-H", "Authorization: Bearer agent-own-token"],
        )
        .await;
    assert_eq!(allowed.out.status, 200, "{}", allowed.out.body);
    let seen = gw.github.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", gw.secret).as_str())
    );
    gw.assert_secret_kept(&[&refused, &allowed]);
}

#[tokio::test]
async fn an_approval_gate_through_envoy_answers_with_the_approval_id_and_passes_once_approved() {
    use tollgate_e2e::approvals::{approvals_yaml, approver_env, decide, gated_policies, pending};
    let github = Upstream::http().await;
    let decision = DecisionService::start(Setup {
        env: vec![approver_env()],
        extra_yaml: approvals_yaml("30s", ""),
        policies: Some(gated_policies()),
        tasks: true,
        ..Setup::default()
    });
    let envoy = Envoy::gateway(decision.addr, github.addr);
    let gw = Gateway {
        github,
        decision,
        envoy,
        secret: String::new(),
    };
    let body = r#"{"merge_method":"squash"}"#;
    let merge = ["-d", body];
    let first = gw
        .send("PUT", "/repos/acme/api/pulls/7/merge", &merge)
        .await;
    assert_eq!(first.out.status, 428, "{}", first.out.body);
    let answer = first.out.json();
    assert_eq!(answer["reason"], "approval_required");
    assert_eq!(answer["status"], "pending");
    assert_eq!(first.header("retry-after").as_deref(), Some("5"));
    let id = answer["approval_id"].as_str().unwrap().to_string();
    // Bound to the body Envoy sent.
    let asked = pending(&gw.decision.url());
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(asked[0]["body_sha256"], hex);
    assert_eq!(gw.github.count(), 0);

    decide(&gw.decision.url(), "approve", &id, "ok");
    let second = gw
        .send("PUT", "/repos/acme/api/pulls/7/merge", &merge)
        .await;
    assert_eq!(second.out.status, 200, "{}", second.out.body);
    assert_eq!(gw.github.count(), 1);
    let seen = gw.github.requests();
    assert_eq!(seen[0].body_head, body);
    // Used once: the next one is gated again.
    let third = gw
        .send("PUT", "/repos/acme/api/pulls/7/merge", &merge)
        .await;
    assert_eq!(third.out.status, 428);
    assert_eq!(gw.github.count(), 1);
}

#[tokio::test]
async fn an_mcp_tool_call_is_decided_on_the_body_envoy_sends_and_refused_as_json_rpc() {
    // The MCP tests' catalog and policies: searching acme's repositories
    // only, on the arguments Envoy's body carries.
    let upstream = Upstream::http().await;
    let decision = DecisionService::start(Setup {
        policies: Some(tollgate_e2e::mcp::policies()),
        extra_catalog: vec![("issues.yaml".into(), tollgate_e2e::mcp::CATALOG.into())],
        ..Setup::default()
    });
    // The gateway's route for one egress host, given to the MCP server's.
    let envoy = Envoy::gateway_edited(decision.addr, upstream.addr, |text| {
        text.replacen(
            "domains: [\"api.github.com\"]",
            "domains: [\"mcp.issues.test\"]",
            1,
        )
    });
    let call_in = |id: u32, tool: &str, repo: &str| {
        serde_json::json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"repo": repo, "query": "crash"}}
        })
        .to_string()
    };
    let call = |id: u32, tool: &str| call_in(id, tool, "acme/api");
    let url = format!("{}/mcp", envoy.url());
    let post = |body: String| {
        let url = url.clone();
        async move {
            curl_answer(&[
                "-H",
                "Host: mcp.issues.test",
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "--data-binary",
                &body,
                &url,
            ])
            .await
        }
    };

    let allowed = post(call(1, "search_issues")).await;
    assert_eq!(allowed.out.status, 200, "{}", allowed.out.body);
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        upstream.requests()[0].body_len,
        call(1, "search_issues").len() as u64
    );

    let refused = post(call(2, "merge_pull_request")).await;
    assert_eq!(refused.out.status, 200, "{}", refused.out.body);
    let rpc = refused.out.json();
    assert_eq!(rpc["id"], 2);
    assert_eq!(rpc["error"]["code"], -32001);
    assert_eq!(rpc["error"]["data"]["reason"], "no_permit");
    assert_eq!(upstream.count(), 1, "the refused call never left");
    let line = decision.wait_audit(|l| l["action"] == "issues:merge_pull_request");
    assert_eq!(
        (&line["mode"], &line["decision"]),
        (&serde_json::json!("ext_authz"), &serde_json::json!("deny"))
    );
    assert_eq!(line["mcp"]["name"], "merge_pull_request");
    assert_eq!(rpc["error"]["data"]["decision_id"], line["decision_id"]);

    // The same tool on another repository: decided on its arguments.
    let elsewhere = post(call_in(3, "search_issues", "globex/vault")).await;
    let rpc = elsewhere.out.json();
    assert_eq!(
        (rpc["id"].as_u64(), rpc["error"]["data"]["reason"].as_str()),
        (Some(3), Some("no_permit")),
        "{rpc}"
    );
    assert_eq!(upstream.count(), 1);

    // A batch: each message decided; one refused, none sent, and the
    // answer is a batch.
    let batch = format!(
        "[{},{}]",
        call(4, "search_issues"),
        call(5, "merge_pull_request")
    );
    let refused = post(batch).await;
    assert_eq!(refused.out.status, 200, "{}", refused.out.body);
    let rpc = refused.out.json();
    assert_eq!(
        (
            rpc[0]["id"].as_u64(),
            rpc[0]["error"]["data"]["reason"].as_str()
        ),
        (Some(4), Some("mcp_batch_refused")),
        "{rpc}"
    );
    assert_eq!(rpc[1]["error"]["data"]["reason"], "no_permit", "{rpc}");
    assert_eq!(upstream.count(), 1, "no message of the batch left");
    decision.wait_audit(|l| l["mcp"]["id"] == 4 && l["decision"] == "allow");
}
