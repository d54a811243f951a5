//! `mcp:` endpoints: where the server is, and what its messages are named.

use super::super::RiskClass::*;
use super::{one, CatalogError};

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

    let args = |owner: Option<&'static str>| {
        move |name: &str| match name {
            "owner" => owner.map(str::to_string),
            "repo" => Some("api".to_string()),
            _ => None,
        }
    };
    let merge = server.tool_call("merge_pull_request", args(Some("acme")));
    assert_eq!(&*merge.action, "ghmcp:merge_pull_request");
    assert_eq!(
        (merge.risk, &*merge.sensitivity),
        (ProdChange, "confidential")
    );
    assert_eq!(merge.resource, "ghmcp/repos/acme/api");
    // An argument is one segment however it is spelled.
    let forged = server.tool_call("merge_pull_request", args(Some("acme/api/../x%2F")));
    assert_eq!(forged.resource, "ghmcp/repos/acme%2Fapi%2F..%2Fx%252F/api");
    // Missing: the whole tool, which a permit on one repository misses.
    assert_eq!(
        server.tool_call("merge_pull_request", args(None)).resource,
        "ghmcp"
    );

    let search = server.tool_call("search_issues", |_| None);
    assert_eq!(
        (&*search.action, search.risk, &*search.resource),
        ("ghmcp:search_issues", Read, "ghmcp")
    );
    let unlisted = server.tool_call("delete_repository", |_| None);
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
    let unlisted = server.tool_call("create_issue", |_| None);
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
