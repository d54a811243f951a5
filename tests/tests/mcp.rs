//! MCP tool calls through tollgate: a real MCP server (the official Python
//! SDK, streamable HTTP over TLS on loopback) and the SDK's own client
//! reaching it through the explicit proxy, each call named from its
//! message, decided, and refused as a JSON-RPC error the client raises.

use serde_json::json;
use tollgate_e2e::mcp::{client, policies, proxying, McpServer, CATALOG};
use tollgate_e2e::{Setup, TestPki, Tollgate};

#[tokio::test]
async fn a_tool_call_is_decided_on_its_name_and_a_refusal_is_a_json_rpc_error() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, false);
    let tg = Tollgate::start(proxying(&server, &pki));

    let answer = client(
        &tg,
        json!([
            ["search_issues", {"repo": "acme/api", "query": "crash"}],
            ["merge_pull_request", {"repo": "acme/api", "number": 7}],
            ["search_issues", {"repo": "globex/vault", "query": "keys-7731"}],
            ["search_issues", {"repo": ["acme/api"], "query": "crash"}],
        ]),
    )
    .await;
    // The listing leaves out the tool no call of which policy permits; the
    // search stays, allowed for some repositories.
    assert_eq!(answer["tools"], json!(["search_issues"]), "{answer}");
    let results = &answer["results"];
    assert_eq!(
        results[0]["text"], "3 issues in acme/api match 'crash'",
        "{results}"
    );
    let error = &results[1]["error"];
    assert_eq!(error["code"], -32001, "{results}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no policy permits `issues:merge_pull_request`"),
        "{results}"
    );
    assert_eq!(error["data"]["reason"], "no_permit");
    // The same tool, another repository: the policy reads the arguments.
    assert_eq!(
        results[2]["error"]["data"]["reason"], "no_permit",
        "{results}"
    );
    // An argument that is not what the catalog declares is refused before
    // any policy sees it, saying which.
    let mismatch = &results[3]["error"];
    assert_eq!(mismatch["data"]["error"], "mcp_arguments", "{results}");
    assert!(
        mismatch["message"]
            .as_str()
            .unwrap()
            .contains("argument `repo` must be a string"),
        "{results}"
    );

    // The server saw the allowed call only.
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["tool"], "search_issues");

    // Each call has its own audit line: the action, the resource its
    // arguments name, the message's method, tool and id; never arguments.
    let allowed =
        tg.wait_audit(|l| l["action"] == "issues:search_issues" && l["decision"] == "allow");
    assert_eq!(allowed["policy_ids"], json!(["search-acme"]));
    assert_eq!(
        allowed["mcp"]["arguments_sha256"].as_str().map(str::len),
        Some(64),
        "a digest of the arguments: {allowed}"
    );
    assert_eq!(allowed["resource"], "issues/repos/acme%2Fapi");
    assert_eq!(allowed["mcp"]["method"], "tools/call");
    assert_eq!(allowed["mcp"]["name"], "search_issues");
    let denied = tg.wait_audit(|l| l["action"] == "issues:merge_pull_request");
    assert_eq!(denied["decision"], "deny");
    assert!(denied["mcp"]["id"].is_number(), "the JSON-RPC id: {denied}");
    assert_eq!(error["data"]["decision_id"], denied["decision_id"]);
    assert!(
        !tg.stdout_text().contains("crash") && !tg.stdout_text().contains("keys-7731"),
        "argument values stay out of audit lines (but a resource template names some)"
    );
    // The handshake and listings are the protocol's.
    let protocol = tg.wait_audit(|l| l["action"] == "issues:mcp.protocol");
    assert_eq!(protocol["decision"], "allow");
}

/// The same server answering with JSON bodies instead of SSE streams: the
/// listing is filtered there too, and calls pass as before.
#[tokio::test]
async fn a_json_answer_to_tools_list_is_filtered_too() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, true);
    let tg = Tollgate::start(proxying(&server, &pki));
    let answer = client(
        &tg,
        json!([["search_issues", {"repo": "acme/web", "query": "slow"}]]),
    )
    .await;
    assert_eq!(answer["tools"], json!(["search_issues"]), "{answer}");
    assert_eq!(
        answer["results"][0]["text"], "3 issues in acme/web match 'slow'",
        "{answer}"
    );
    let listing = tg.wait_audit(|l| l["mcp"]["method"] == "tools/list");
    assert_eq!(listing["decision"], "allow");
}

/// A proxy deciding through a remote decision service: the arguments go
/// with each `Decide`, the listing's questions go as probes, and the
/// answers are those of embedded mode.
#[tokio::test]
async fn a_proxy_deciding_remotely_filters_and_decides_the_same() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, false);
    let service = tollgate_e2e::DecisionService::start(Setup {
        policies: Some(policies()),
        extra_catalog: vec![("issues.yaml".into(), CATALOG.into())],
        ..Setup::default()
    });
    let tg = Tollgate::start(Setup {
        decision_endpoint: Some(service.url()),
        ..proxying(&server, &pki)
    });
    let answer = client(
        &tg,
        json!([
            ["search_issues", {"repo": "acme/api", "query": "crash"}],
            ["search_issues", {"repo": "globex/vault", "query": "keys"}],
        ]),
    )
    .await;
    assert_eq!(answer["tools"], json!(["search_issues"]), "{answer}");
    let results = &answer["results"];
    assert_eq!(
        results[0]["text"], "3 issues in acme/api match 'crash'",
        "{answer}"
    );
    assert_eq!(
        results[1]["error"]["data"]["reason"], "no_permit",
        "{answer}"
    );
    // The service decided both calls on their arguments; the listing's
    // probes left no audit lines there.
    let denied = service.wait_audit(|l| l["resource"] == "issues/repos/globex%2Fvault");
    assert_eq!(
        (denied["mode"].as_str(), denied["decision"].as_str()),
        (Some("decide"), Some("deny"))
    );
    let allowed = service.wait_audit(|l| l["resource"] == "issues/repos/acme%2Fapi");
    assert_eq!(allowed["policy_ids"], json!(["search-acme"]));
    assert!(
        !service.stdout_text().contains("merge_pull_request"),
        "a probe is not audited: {}",
        service.stdout_text()
    );
    assert_eq!(server.calls().len(), 1);
}

/// A tool call an approval gate stops is held like any request: the
/// listing still shows the tool, a person approves the exact call through
/// the approvals API, and the call completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_tool_call_is_held_and_completes_once_approved() {
    use tollgate_e2e::approvals::{approvals_yaml, approver_env, decide, wait_pending};
    let pki = TestPki::new();
    let server = McpServer::start(&pki, false);
    let mut rules = policies();
    rules.push((
        "gate.cedar".into(),
        "@id(\"merge-allowed\")\npermit (principal, action == Action::\"issues:merge_pull_request\", resource);\n\
         @id(\"merge-needs-approval\")\n@reason(\"merging needs a person's approval\")\n\
         forbid (principal, action == Action::\"issues:merge_pull_request\", resource) unless { context.approved };\n"
            .into(),
    ));
    let tg = std::sync::Arc::new(Tollgate::start(Setup {
        policies: Some(rules),
        tasks: true,
        extra_yaml: approvals_yaml("30s", ""),
        env: vec![approver_env()],
        ..proxying(&server, &pki)
    }));
    let agent = {
        let tg = tg.clone();
        tokio::spawn(async move {
            client(
                &tg,
                json!([["merge_pull_request", {"repo": "acme/api", "number": 7}]]),
            )
            .await
        })
    };
    let api = tg.decision_url();
    let asked = wait_pending(&api, 1);
    assert_eq!(asked[0]["action"], "issues:merge_pull_request");
    assert_eq!(asked[0]["resource"], "issues/repos/acme%2Fapi");
    assert!(
        server.calls().is_empty(),
        "nothing reaches the server before the verdict"
    );
    let id = asked[0]["id"].as_str().unwrap();
    decide(&api, "approve", id, "release train");

    let answer = agent.await.unwrap();
    // A gated tool is one a call of which may be allowed: listed.
    assert_eq!(
        answer["tools"],
        json!(["merge_pull_request", "search_issues"]),
        "{answer}"
    );
    assert_eq!(
        answer["results"][0]["text"], "merged acme/api#7",
        "{answer}"
    );
    assert_eq!(server.calls().len(), 1);
    let line = tg.wait_audit(|l| l["action"] == "issues:merge_pull_request");
    assert_eq!(line["approval"]["state"], "approved", "{line}");
}

/// Bodies that cannot be decided are refused saying why, never sent on,
/// and the proxy goes on serving.
#[tokio::test]
async fn malformed_deep_and_oversized_messages_are_refused_and_the_proxy_keeps_serving() {
    let pki = TestPki::new();
    let server = McpServer::start(&pki, false);
    let tg = Tollgate::start(proxying(&server, &pki));
    let ca = tg.ca_cert().display().to_string();
    let url = format!("https://{}/mcp", tollgate_e2e::mcp::HOST);
    let call = |arguments: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "search_issues", "arguments": arguments}})
        .to_string()
    };
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    for (body, reason) in [
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"#.to_string(),
            "mcp_malformed",
        ),
        (
            r#"{"id":5,"method":"tools/call"}"#.to_string(),
            "mcp_malformed",
        ),
        (
            call(json!({"repo": "acme/api", "query": deep})),
            "mcp_over_limit",
        ),
        (
            call(json!({"repo": "acme/api", "query": "q".repeat(70 * 1024)})),
            "mcp_over_limit",
        ),
    ] {
        let out = tg
            .curl(&[
                "--cacert",
                &ca,
                "-H",
                "content-type: application/json",
                "-H",
                "accept: application/json, text/event-stream",
                "--data-binary",
                &body,
                &url,
            ])
            .await;
        // Nothing of such a body can be trusted to name an id to answer:
        // a plain 400 naming what is wrong.
        assert_eq!(
            (out.status, out.json()["error"].as_str()),
            (400, Some(reason)),
            "{}",
            out.body
        );
    }
    assert!(server.calls().is_empty(), "nothing undecidable was sent on");
    // Still serving: the SDK's client calls through the same proxy.
    let answer = client(
        &tg,
        json!([["search_issues", {"repo": "acme/api", "query": "crash"}]]),
    )
    .await;
    assert_eq!(
        answer["results"][0]["text"], "3 issues in acme/api match 'crash'",
        "{answer}"
    );
}
