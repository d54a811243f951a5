//! The core's sequence without sockets: one snapshot from naming to
//! deciding, refusals recorded like decisions.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

use super::*;
use crate::config::Config;
use crate::decision::snapshot::SnapshotHandle;
use crate::decision::state::TaskStore;
use crate::decision::tasks::TaskLimits;
use crate::decision::{Decider, DecisionFuture, EmbeddedDecider, Outcome, Reason, TaskRevoked};
use crate::identity::IdentitySource;

const CODER: &str = "spiffe://cluster.local/ns/agents/sa/coder";

/// A configuration folder whose catalog names `GET /items/{id}` on
/// `items.test` as `items:<verb>`, and whose policies let the coder do
/// exactly that action.
fn configuration(dir: &Path, verb: &str) -> Config {
    write_configuration(
        dir,
        &format!(
            "tool: items\nendpoints:\n  - hosts: [items.test]\n    routes:\n      \
             - {{ method: GET, path: \"/items/{{id}}\", action: {verb}, risk: read, resource: \"items/{{id}}\" }}\n"
        ),
        &format!(
            "@id(\"coder-{verb}\")\npermit (principal == Workload::\"{CODER}\", \
             action == Action::\"items:{verb}\", resource);\n"
        ),
    )
}

/// A configuration folder with one catalog file and one policy file.
fn write_configuration(dir: &Path, catalog: &str, policies: &str) -> Config {
    for sub in ["catalog", "policies"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("catalog/tool.yaml"), catalog).unwrap();
    std::fs::write(dir.join("policies/tool.cedar"), policies).unwrap();
    std::fs::write(
        dir.join("tollgate.yaml"),
        "catalog: catalog\npolicies: policies\n",
    )
    .unwrap();
    Config::load(&dir.join("tollgate.yaml")).unwrap()
}

fn caller(identity: Option<&str>) -> Caller {
    Caller {
        listener: "test".into(),
        mode: Mode::Http,
        identity: identity.map_or_else(CallerIdentity::default, |name| {
            CallerIdentity::known(Arc::new(Identity::named(
                IdentitySource::Static,
                name.into(),
            )))
        }),
        connect_task: None,
        original_destination: None,
    }
}

fn embedded() -> EmbeddedDecider {
    EmbeddedDecider::new(Arc::new(TaskStore::in_memory(TaskLimits::default())))
}

/// A reload that lands after the request was named and before it is
/// decided: the hook swaps in the other of two configurations, then
/// decides.
struct ReloadFirst {
    handle: Arc<SnapshotHandle>,
    sets: [Config; 2],
    reloads: std::sync::atomic::AtomicUsize,
    decider: EmbeddedDecider,
}

impl Decider for ReloadFirst {
    fn decide<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> DecisionFuture<'a> {
        let n = self
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .reload(&self.sets[(n + 1) % 2])
            .expect("both sets load");
        self.decider.decide(snapshot, request)
    }

    fn may_allow<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        request: &'a DecisionRequest,
    ) -> crate::decision::ProbeFuture<'a> {
        self.decider.may_allow(snapshot, request)
    }

    fn observe_tools<'a>(
        &'a self,
        server: &'a str,
        pinning: crate::catalog::McpPinning,
        tools: &'a [crate::decision::ObservedTool],
    ) -> crate::decision::ObserveFuture<'a> {
        self.decider.observe_tools(server, pinning, tools)
    }

    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        self.decider.revocations()
    }

    fn await_approval<'a>(
        &'a self,
        id: &'a str,
        timeout: std::time::Duration,
    ) -> crate::decision::ApprovalFuture<'a> {
        self.decider.await_approval(id, timeout)
    }
}

#[tokio::test]
async fn a_request_is_decided_by_the_snapshot_that_named_it() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The first set calls the route `read`, the second `fetch`: each set's
    // action is not even in the other's schema, so a request named by one
    // and decided by the other's policies would be refused.
    let sets = [
        configuration(one.path(), "read"),
        configuration(two.path(), "fetch"),
    ];
    let handle = SnapshotHandle::new(Snapshot::load(&sets[0], 1, 100).unwrap(), 100);
    let core = Core::new(Arc::new(ReloadFirst {
        handle: handle.clone(),
        sets,
        reloads: Default::default(),
        decider: embedded(),
    }));
    let target = RequestTarget {
        tls: true,
        host: "items.test".into(),
        port: 443,
    };
    let (method, uri, headers) = (Method::GET, Uri::from_static("/items/7"), HeaderMap::new());
    let inbound = Inbound {
        target: &target,
        method: &method,
        uri: &uri,
        headers: &headers,
        held: None,
        body: None,
    };
    let mut verbs = Vec::new();
    for round in 1..=4 {
        // What a front does: load once, hand the snapshot to the core.
        let snapshot = handle.load();
        let verdict = core.http(&snapshot, &caller(Some(CODER)), inbound).await;
        assert!(
            handle.load().epoch > snapshot.epoch,
            "round {round}: nothing was reloaded in between"
        );
        let line = serde_json::to_value(&verdict.record).unwrap();
        let allowed = verdict
            .outcome
            .unwrap_or_else(|e| panic!("round {round}: {e}: {line}"));
        let verb = line["action"]
            .as_str()
            .unwrap()
            .trim_start_matches("items:")
            .to_string();
        assert_eq!(
            allowed.decision.policy_ids,
            [format!("coder-{verb}")],
            "{line}"
        );
        verbs.push(verb);
    }
    // The reloads really alternated the sets under the requests.
    assert_eq!(verbs, ["read", "fetch", "read", "fetch"]);
}

#[tokio::test]
async fn refusals_are_recorded_as_decisions_are() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = Snapshot::load(&configuration(dir.path(), "read"), 1, 0).unwrap();
    let core = Core::new(Arc::new(embedded()));
    let target = RequestTarget {
        tls: false,
        host: "items.test".into(),
        port: 80,
    };
    let headers = HeaderMap::new();
    let ask = |identity: Option<&'static str>, path: &'static str| {
        let uri: Uri = path.parse().unwrap();
        let core = &core;
        let snapshot = &snapshot;
        let target = &target;
        let headers = &headers;
        async move {
            let inbound = Inbound {
                target,
                method: &Method::GET,
                uri: &uri,
                headers,
                held: None,
                body: None,
            };
            let verdict = core.http(snapshot, &caller(identity), inbound).await;
            let json = serde_json::to_value(&verdict.record).unwrap();
            (verdict.outcome.err().map(|e| e.reason()), json)
        }
    };
    let (refused, line) = ask(Some(CODER), "/items/7").await;
    assert_eq!(refused, None);
    assert_eq!(line["action"], "items:read");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["workload"], CODER);
    assert_eq!(line["risk"], "read");

    // No identity: refused before anything is named.
    let (refused, line) = ask(None, "/items/7").await;
    assert_eq!(refused, Some("unidentified"));
    assert_eq!(
        (line["status"].as_u64(), line["reason"].as_str()),
        (Some(407), Some("unidentified"))
    );
    assert!(line["action"].is_null(), "{line}");

    // A path the upstream could read differently: refused while naming it.
    let (refused, line) = ask(Some(CODER), "/items/../admin").await;
    assert_eq!(refused, Some("malformed_request"));
    assert_eq!(line["status"], 400);
    assert_eq!(line["workload"], CODER);

    // A route the catalog lacks is the tool's `unknown`, which nothing
    // permits.
    let (refused, line) = ask(Some(CODER), "/other").await;
    assert_eq!(refused, Some(Reason::NoPermit.as_str()));
    assert_eq!(
        (line["action"].as_str(), line["status"].as_u64()),
        (Some("items:unknown"), Some(403))
    );
    assert_eq!(line["decision"], Outcome::Deny.as_str());
}

#[tokio::test]
async fn a_tunnel_is_the_connect_action_on_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = Snapshot::load(&configuration(dir.path(), "read"), 1, 0).unwrap();
    let core = Core::new(Arc::new(embedded()));
    let target = RequestTarget {
        tls: true,
        host: "pypi.org".into(),
        port: 443,
    };
    let verdict = core.tunnel(&snapshot, &caller(Some(CODER)), &target).await;
    let line = serde_json::to_value(&verdict.record).unwrap();
    assert_eq!(line["action"], "connect");
    assert_eq!(line["resource"], "pypi.org:443");
    assert_eq!(line["method"], "CONNECT");
    assert_eq!(line["reason"], "no_permit");
    assert_eq!(line["status"], 403);
}

/// A catalog with an MCP server whose `search` tool declares its
/// arguments, and policies that look at them.
fn mcp_configuration(dir: &Path) -> Config {
    write_configuration(
        dir,
        "tool: issues\nendpoints:\n  - hosts: [mcp.test]\n    mcp:\n      path: /mcp\n      tools:\n        \
         - name: search\n          risk: read\n          arguments: { repo: string, limit: long?, labels: set<string>? }\n    routes: []\n",
        &format!(
            "@id(\"acme-only\")\npermit (principal == Workload::\"{CODER}\", \
             action == Action::\"issues:search\", resource) when {{ context.arguments.repo like \"acme/*\" }};\n\
             @id(\"no-bulk\")\nforbid (principal, action == Action::\"issues:search\", resource) \
             when {{ context.arguments has limit && context.arguments.limit > 100 }};\n"
        ),
    )
}

/// `tool` called with `arguments` on the MCP server at `mcp.test/mcp`, by
/// the coder: its refusal (reason and message), if any, and its audit line.
async fn call_mcp_tool(
    core: &Core,
    snapshot: &Snapshot,
    tool: &str,
    arguments: serde_json::Value,
) -> (Option<(&'static str, String)>, serde_json::Value) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})
    .to_string();
    let target = RequestTarget {
        tls: true,
        host: "mcp.test".into(),
        port: 443,
    };
    let inbound = Inbound {
        target: &target,
        method: &Method::POST,
        uri: &Uri::from_static("/mcp"),
        headers: &HeaderMap::new(),
        held: None,
        body: Some(body.as_bytes()),
    };
    let verdict = core.http(snapshot, &caller(Some(CODER)), inbound).await;
    let line = serde_json::to_value(&verdict.record).unwrap();
    let refused = verdict.outcome.err().map(|e| (e.reason(), e.to_string()));
    (refused, line)
}

#[tokio::test]
async fn an_mcp_tool_call_is_decided_on_its_declared_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = Snapshot::load(&mcp_configuration(dir.path()), 1, 0).unwrap();
    let core = Core::new(Arc::new(embedded()));
    let call = |arguments| call_mcp_tool(&core, &snapshot, "search", arguments);
    use serde_json::json;

    let (refused, line) = call(json!({"repo": "acme/api", "query": "crash"})).await;
    assert_eq!(refused, None, "{line}");
    assert_eq!(line["policy_ids"], json!(["acme-only"]));

    let (refused, line) = call(json!({"repo": "other/api"})).await;
    assert_eq!(refused.unwrap().0, "no_permit", "{line}");

    // An optional argument a forbid tests: absent passes, over the bound
    // is refused.
    let (refused, _) = call(json!({"repo": "acme/api", "limit": 10, "labels": ["bug"]})).await;
    assert_eq!(refused, None);
    let (refused, line) = call(json!({"repo": "acme/api", "limit": 500})).await;
    assert_eq!(refused.unwrap().0, "forbidden");
    assert_eq!(line["policy_ids"], json!(["no-bulk"]));

    // Arguments that do not match their declaration are refused before
    // any policy runs, naming the argument, never the value; the record
    // still carries the message's id for the JSON-RPC answer.
    for (arguments, says) in [
        (json!({"limit": 5}), "argument `repo` is required"),
        (json!({"repo": 12345}), "argument `repo` must be a string"),
        (
            json!({"repo": "acme/a", "limit": 1.5}),
            "argument `limit` must be an integer",
        ),
        (
            json!({"repo": "acme/a", "labels": ["x", 7]}),
            "argument `labels` must be an array of strings",
        ),
    ] {
        let (refused, line) = call(arguments.clone()).await;
        let (reason, message) = refused.unwrap_or_else(|| panic!("{arguments} passed"));
        assert_eq!(reason, "mcp_arguments");
        assert!(message.contains(says), "{message}");
        assert_eq!(line["reason"], "mcp_arguments", "{line}");
        assert_eq!(line["status"], 400);
        assert_eq!(line["mcp"]["id"], 9);
        assert!(!line.to_string().contains("12345"), "{line}");
    }
}

/// A proxy deciding remotely sends the arguments it projected; the decision
/// service reads them against its own catalog, and what does not match is
/// an invalid request, never a guess.
#[tokio::test]
async fn arguments_from_a_remote_proxy_are_checked_where_they_are_decided() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = Snapshot::load(&mcp_configuration(dir.path()), 1, 0).unwrap();
    let core = Core::new(Arc::new(embedded()));
    let request = |arguments: Option<&str>| DecisionRequest {
        principal: CODER.into(),
        attributes: Arc::new(crate::identity::Attributes::of_name(
            IdentitySource::Static,
            CODER,
        )),
        action: "issues:search".into(),
        resource: "issues".into(),
        context: RequestContext {
            method: "POST".into(),
            host: "mcp.test".into(),
            port: 443,
            path: "/mcp".into(),
            tool: "issues".into(),
            risk: crate::catalog::RiskClass::Read,
            sensitivity: "internal".into(),
            arguments: arguments.map(Arc::from),
            mcp_tool: None,
        },
        task: None,
        held: None,
    };
    let caller = caller(Some(CODER));
    let (_, decision) = core
        .named(&snapshot, &caller, &request(Some(r#"{"repo":"acme/api"}"#)))
        .await;
    assert!(decision.is_allow(), "{decision:?}");
    for bad in [None, Some(r#"{"repo":5}"#), Some("[1]"), Some("not json")] {
        let (_, decision) = core.named(&snapshot, &caller, &request(bad)).await;
        assert_eq!(decision.reason, Reason::InvalidRequest, "{bad:?}");
    }
}

/// A tool whose definition changed since it was pinned: reported and
/// still called under the default `pinning: report`; refused, saying how
/// to accept it, under `enforce`, until accepted. A tool never listed has
/// no pin to differ from.
#[tokio::test]
async fn a_changed_mcp_tool_is_refused_only_where_pinning_is_enforced() {
    use crate::decision::ObservedTool;
    for (pinning, refused_while_changed) in [("", false), ("      pinning: enforce\n", true)] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_configuration(
            dir.path(),
            &format!(
                "tool: issues\nendpoints:\n  - hosts: [mcp.test]\n    mcp:\n      path: /mcp\n{pinning}      \
                 tools:\n        - {{ name: search, risk: read }}\n        - {{ name: fresh, risk: read }}\n    routes: []\n"
            ),
            &format!("permit (principal == Workload::\"{CODER}\", action, resource);\n"),
        );
        let snapshot = Snapshot::load(&config, 1, 0).unwrap();
        let core = Core::new(Arc::new(embedded()));
        let call = |tool: &'static str| async {
            call_mcp_tool(&core, &snapshot, tool, serde_json::json!({}))
                .await
                .0
        };
        let listed = |fingerprint: &str| {
            vec![ObservedTool {
                name: "search".into(),
                fingerprint: fingerprint.repeat(64),
            }]
        };
        let decider = core.decider();
        let mode = snapshot.catalog.mcp_pinning("issues");
        assert!(decider
            .observe_tools("issues", mode, &listed("a"))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(call("search").await, None);
        let changes = decider
            .observe_tools("issues", mode, &listed("b"))
            .await
            .unwrap();
        assert_eq!(changes.len(), 1, "reported in every mode");
        let refused = call("search").await;
        assert_eq!(
            refused.is_some(),
            refused_while_changed,
            "{pinning}: {refused:?}"
        );
        if let Some((reason, _)) = refused {
            assert_eq!(reason, "mcp_tool_changed");
        }
        assert_eq!(call("fresh").await, None, "never listed, never pinned");
    }
}
