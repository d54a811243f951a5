//! `mcp:` endpoints: where the server is, and what its messages are named.

use super::super::RiskClass::*;
use super::{one, shipped, CatalogError};

const SERVER: &str = r#"
tool: ghmcp
endpoints:
  - hosts: [mcp.example.com]
    defaults: { sensitivity: internal }
    mcp:
      path: /mcp/
      tools:
        - { name: search_issues, risk: read }
        - { name: merge_pull_request, risk: prod_change, sensitivity: confidential, resource: "repos/{owner}/{repo}" }
    routes:
      - { method: GET, path: /health, action: health, risk: read }
"#;

#[test]
fn a_listed_tool_is_its_own_action_with_a_resource_from_its_arguments() {
    let catalog = one(SERVER).unwrap();
    let server = catalog.mcp_server("MCP.example.com.", "/mcp").unwrap();
    assert_eq!(server.tool(), "ghmcp");
    assert!(catalog.mcp_server("mcp.example.com", "/mcp/").is_some());
    assert!(catalog.mcp_server("mcp.example.com", "/health").is_none());
    assert!(catalog.mcp_server("other.example.com", "/mcp").is_none());

    let args = |owner: Option<&str>| {
        let mut map = serde_json::Map::new();
        if let Some(owner) = owner {
            map.insert("owner".into(), owner.into());
        }
        map.insert("repo".into(), "api".into());
        map
    };
    let call = |name: &str, arguments: &serde_json::Map<String, serde_json::Value>| {
        let (named, declared) = server.tool_call(name, arguments).unwrap();
        assert_eq!(declared, None, "no arguments are declared");
        named
    };
    let merge = call("merge_pull_request", &args(Some("acme")));
    assert_eq!(&*merge.action, "ghmcp:merge_pull_request");
    assert_eq!(
        (merge.risk, &*merge.sensitivity),
        (ProdChange, "confidential")
    );
    assert_eq!(merge.resource, "ghmcp/repos/acme/api");
    // An argument is one segment however it is spelled.
    let forged = call("merge_pull_request", &args(Some("acme/api/../x%2F")));
    assert_eq!(forged.resource, "ghmcp/repos/acme%2Fapi%2F..%2Fx%252F/api");
    // Missing: the whole tool, which a permit on one repository misses.
    assert_eq!(call("merge_pull_request", &args(None)).resource, "ghmcp");

    let none = serde_json::Map::new();
    let search = call("search_issues", &none);
    assert_eq!(
        (&*search.action, search.risk, &*search.resource),
        ("ghmcp:search_issues", Read, "ghmcp")
    );
    let unlisted = call("delete_repository", &none);
    assert_eq!(
        (&*unlisted.action, unlisted.risk),
        ("ghmcp:unknown", Unknown)
    );
    assert_eq!(&*server.protocol().action, "ghmcp:mcp.protocol");
    assert_eq!(&*server.resources_read().action, "ghmcp:mcp.resources.read");
    assert_eq!(&*server.prompts_get().action, "ghmcp:mcp.prompts.get");
    assert_eq!(&*server.unknown_method().action, "ghmcp:unknown");

    // Every action a message can be named is in the catalog's list, so
    // policies may name it.
    let actions: Vec<&str> = catalog.actions().iter().map(|a| &*a.name).collect();
    for action in [
        "ghmcp:search_issues",
        "ghmcp:merge_pull_request",
        "ghmcp:mcp.protocol",
        "ghmcp:mcp.resources.read",
        "ghmcp:mcp.prompts.get",
        "ghmcp:unknown",
    ] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
}

#[test]
fn unlisted_tools_take_the_class_the_file_gives_them() {
    let catalog = one(&SERVER.replace(
        "      path: /mcp/\n",
        "      path: /mcp/\n      unlisted: write\n",
    ))
    .unwrap();
    let server = catalog.mcp_server("mcp.example.com", "/mcp").unwrap();
    let (unlisted, _) = server
        .tool_call("create_issue", &serde_json::Map::new())
        .unwrap();
    assert_eq!(
        (&*unlisted.action, unlisted.risk),
        ("ghmcp:mcp.unlisted", Write)
    );
}

#[test]
fn bad_mcp_entries_point_at_their_line() {
    for (edit, location, needle) in [
        (
            (
                "{ name: search_issues, risk: read }",
                "{ name: \"search issues\", risk: read }",
            ),
            "test.yaml:9:11",
            "use 1 to 128",
        ),
        (
            (
                "{ name: search_issues, risk: read }",
                "{ name: mcp.protocol, risk: read }",
            ),
            "test.yaml:9:11",
            "tollgate's own actions",
        ),
        (
            (
                "{ name: search_issues, risk: read }",
                "{ name: merge_pull_request, risk: prod_change }",
            ),
            "test.yaml:10:11",
            "listed twice",
        ),
        (
            ("path: /mcp/", "path: /{x}"),
            "test.yaml:7:7",
            "a literal path",
        ),
        (
            ("path: /mcp/", "path: mcp"),
            "test.yaml:7:7",
            "a literal path",
        ),
        (
            (
                "{ name: search_issues, risk: read }",
                "{ name: search_issues, risk: read, resource: \"/x\" }",
            ),
            "test.yaml:9:11",
            "leading or trailing",
        ),
        (
            (
                "{ name: search_issues, risk: read }",
                "{ name: search_issues, risk: read, arguments: { repo: text } }",
            ),
            "test.yaml:9:11",
            "type `text` is not one of string, long",
        ),
    ] {
        let text = SERVER.replacen(edit.0, edit.1, 1);
        match one(&text) {
            Err(CatalogError::Invalid {
                location: got,
                message,
            }) => {
                assert_eq!(got, location, "{message}");
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("{edit:?}: {other:?}"),
        }
    }
}

#[test]
fn declared_arguments_are_projected_checked_and_typed_in_the_schema() {
    let text = SERVER.replace(
        "{ name: search_issues, risk: read }",
        "{ name: search_issues, risk: read, arguments: { repo: string, \"max-results\": long?, labels: set<string>? } }",
    );
    let catalog = one(&text).unwrap();
    let server = catalog.mcp_server("mcp.example.com", "/mcp").unwrap();
    let given = serde_json::json!({"repo": "acme/api", "query": "not declared", "labels": ["a"]});
    let (_, declared) = server
        .tool_call("search_issues", given.as_object().unwrap())
        .unwrap();
    // Only what is declared, keys sorted: a stable cache key and a small
    // request to a remote decision service.
    assert_eq!(
        declared.as_deref(),
        Some(r#"{"labels":["a"],"repo":"acme/api"}"#)
    );
    let wrong = serde_json::json!({"repo": ["acme/api"]});
    let err = server
        .tool_call("search_issues", wrong.as_object().unwrap())
        .unwrap_err();
    assert_eq!(err.to_string(), "argument `repo` must be a string");

    let info = catalog
        .actions()
        .iter()
        .find(|a| &*a.name == "ghmcp:search_issues")
        .unwrap();
    let names: Vec<&str> = info
        .arguments
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| &*a.name)
        .collect();
    assert_eq!(names, ["labels", "max-results", "repo"]);
    let schema = crate::decision::schema_text(catalog.actions(), &[]);
    assert!(
        schema.contains(
            r#"arguments: { "labels"?: Set<String>, "max-results"?: Long, "repo": String }"#
        ),
        "{schema}"
    );
    assert!(
        schema.contains(r#"action "ghmcp:search_issues" in ["read", "ghmcp"] appliesTo { principal: Workload, resource: Target, context: ArgumentsContext0 };"#),
        "{schema}"
    );
}

#[test]
fn one_tool_on_two_servers_declares_one_set_of_arguments() {
    let text = SERVER.replace(
        "{ name: search_issues, risk: read }",
        "{ name: search_issues, risk: read, arguments: { repo: string } }",
    ) + "  - hosts: [mcp2.example.com]\n    mcp:\n      path: /mcp\n      tools:\n        - { name: search_issues, risk: read, arguments: { repo: long } }\n    routes: []\n";
    let err = one(&text).unwrap_err().to_string();
    assert!(
        err.contains("declared elsewhere with other arguments"),
        "{err}"
    );
}

#[test]
fn the_shipped_github_mcp_server_names_tools_by_repository() {
    let catalog = shipped();
    let server = catalog
        .mcp_server("api.githubcopilot.com", "/mcp/")
        .unwrap();
    let call = |tool: &str, arguments: serde_json::Value| {
        server
            .tool_call(tool, arguments.as_object().unwrap())
            .map(|(c, declared)| (c.action.to_string(), c.risk, c.resource, declared))
    };
    let repo = serde_json::json!({"owner": "acme", "repo": "api", "pullNumber": 7});
    let (action, risk, resource, declared) = call("merge_pull_request", repo.clone()).unwrap();
    assert_eq!(
        (action.as_str(), risk, resource.as_str()),
        (
            "github-mcp:merge_pull_request",
            Write,
            "github-mcp/repos/acme/api"
        )
    );
    assert_eq!(
        declared.as_deref(),
        Some(r#"{"owner":"acme","repo":"api"}"#)
    );
    assert_eq!(call("run_workflow", repo.clone()).unwrap().1, CodeExec);
    assert_eq!(
        call("list_secret_scanning_alerts", repo).unwrap().1,
        SecretsRead
    );
    let (action, risk, ..) = call("search_code", serde_json::json!({"query": "x"})).unwrap();
    assert_eq!((action.as_str(), risk), ("github-mcp:search_code", Read));
    // A tool the catalog has not classified: `unknown`, which the
    // guardrails forbid.
    let (action, risk, ..) = call("delete_repository", serde_json::json!({})).unwrap();
    assert_eq!((action.as_str(), risk), ("github-mcp:unknown", Unknown));
    // A repository tool called without its repository is refused, not
    // widened to every repository.
    assert!(call("get_issue", serde_json::json!({"owner": "acme"})).is_err());
}
