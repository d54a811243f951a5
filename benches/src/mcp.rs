//! An API with a REST route and an MCP server side by side, as the MCP
//! section drives it: the same search as a `POST` with a JSON body and as
//! an MCP `tools/call` (streamable HTTP) whose arguments policy reads, both
//! bodies the same size, both answered by one upstream with the same small
//! JSON-RPC result.

use crate::WORKLOAD;

/// The tool's host, beside the bench catalog's, so the rows of other
/// sections are classified exactly as before.
pub const HOST: &str = "notes.bench.test";

/// One tool, `notes`: a search as a REST route and as an MCP tool, both
/// reads scoped to a project. The MCP tool declares `project`, so a call
/// is named with it projected into `context.arguments`.
pub const CATALOG: &str = r#"
tool: notes
description: benchmark notes API, REST and MCP
endpoints:
  - hosts: [notes.bench.test]
    mcp:
      path: /mcp
      tools:
        - { name: search_notes, risk: read, resource: "projects/{project}", arguments: { project: string } }
    routes:
      - { method: POST, path: "/v1/projects/{project}/notes/search", action: notes.search, risk: read, resource: "projects/{project}" }
"#;

/// Where [`CATALOG`] goes in a participant's `catalog/` folder.
pub const CATALOG_FILE: &str = "notes.yaml";

/// The bench workload may search acme's notes either way; the MCP permit
/// reads the declared argument, so every call's arguments are projected
/// and typed before Cedar sees them.
pub fn policies() -> String {
    format!(
        "@id(\"bench-notes-rest\")\npermit (principal == Workload::\"{WORKLOAD}\", action == Action::\"notes:notes.search\", resource in Target::\"notes\");\n\
         @id(\"bench-notes-mcp\")\npermit (principal == Workload::\"{WORKLOAD}\", action == Action::\"notes:search_notes\", resource in Target::\"notes\")\n\
         when {{ context.arguments.project == \"{PROJECT}\" }};\n"
    )
}

/// The project every request searches.
pub const PROJECT: &str = "acme";

/// The size of a call's `arguments` object, as JSON.
pub const ARGUMENTS_BYTES: usize = 4096;

/// What the upstream answers both rows with: a `tools/call` result, small.
pub const ANSWER: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3 notes"}]}}"#;

/// The search's arguments, padded with an argument no policy reads to
/// `bytes` of JSON.
fn arguments(bytes: usize) -> String {
    let head = format!(r#"{{"project":"{PROJECT}","query":"release checklist","context":""#);
    let pad = bytes.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The MCP row's body: a `tools/call` of `search_notes` whose arguments
/// are [`ARGUMENTS_BYTES`] of JSON.
pub fn mcp_body() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"search_notes","arguments":{}}}}}"#,
        arguments(ARGUMENTS_BYTES)
    )
}

/// The REST row's body: the same search as a JSON object, as long as the
/// MCP row's whole message.
pub fn rest_body() -> String {
    arguments(mcp_body().len())
}

/// The wrk script of a row: absolute-form `POST`s of `body` to `url`
/// through the proxy, with `headers`.
fn script(url: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.path = \"{url}\"\nwrk.headers[\"Host\"] = \"{HOST}\"\n"
    );
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    // A long bracket: the JSON is taken as it is, quotes and all.
    assert!(!body.contains("]==]"));
    lua.push_str(&format!("wrk.body = [==[{body}]==]\n"));
    lua
}

/// The REST row's wrk script.
pub fn rest_script() -> String {
    script(
        &format!("http://{HOST}/v1/projects/{PROJECT}/notes/search"),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        &rest_body(),
    )
}

/// The MCP row's wrk script, with the headers a streamable HTTP client
/// sends.
pub fn mcp_script() -> String {
    script(
        &format!("http://{HOST}/mcp"),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        &mcp_body(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_are_json_of_one_size_with_4_kib_of_arguments() {
        let mcp: serde_json::Value = serde_json::from_str(&mcp_body()).unwrap();
        let arguments = &mcp["params"]["arguments"];
        assert_eq!(arguments.to_string().len(), ARGUMENTS_BYTES);
        assert_eq!(arguments["project"], PROJECT);
        assert_eq!(mcp["method"], "tools/call");
        let rest: serde_json::Value = serde_json::from_str(&rest_body()).unwrap();
        assert_eq!(rest_body().len(), mcp_body().len());
        assert_eq!(rest["project"], PROJECT);
    }
}
