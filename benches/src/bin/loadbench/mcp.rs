//! An MCP `tools/call` against the REST request it stands for. One
//! `tollgate run`, set up as the "tollgate full authz" row (explicit proxy,
//! static identity, decision cache on), knows one API both ways
//! (`benches/src/mcp.rs`): a search as `POST /v1/projects/acme/notes/search`
//! with a JSON body, and as `POST /mcp` with a `tools/call` of
//! `search_notes` whose arguments are 4 KiB of JSON, `project` among them
//! declared and read by the permit. Both bodies are the same size, both go
//! to one upstream that reads them whole and answers the same small JSON
//! result, and wrk drives both (keep-alive, one connection count). The two
//! rows alternate their runs, so a slow spell falls on both.
//!
//! The MCP row pays for what the REST row does not: tollgate reads the
//! body before deciding (an MCP message is named by it), parses the
//! JSON-RPC message, checks its bounds, names the tool, fills the resource
//! from the arguments and projects the declared ones into the decision.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use tollgate_benches::process::Participant;
use tollgate_benches::report::*;
use tollgate_benches::tollgate::{self, RunOptions};
use tollgate_benches::{mcp, upstream};

use super::{Bench, Contender};

pub(super) fn mcp(bench: &Bench) -> anyhow::Result<Vec<ProxyRow>> {
    let answering = upstream::start_json(mcp::ANSWER)?;
    let t = tollgate::run(
        &RunOptions {
            mcp: Some(answering),
            ..RunOptions::plain(answering)
        },
        bench.proxy_cpu,
    )?;
    let scripts = tempfile::tempdir()?;
    let (rest_script, mcp_script) = (
        scripts.path().join("rest.lua"),
        scripts.path().join("mcp.lua"),
    );
    std::fs::write(&rest_script, mcp::rest_script())?;
    std::fs::write(&mcp_script, mcp::mcp_script())?;
    let url = format!("http://{}/", t.addr);
    let rows = bench.alternated(&[
        row(
            bench,
            &t,
            &url,
            MCP_REST,
            &rest_script,
            "notes:notes.search",
        ),
        row(bench, &t, &url, MCP_CALL, &mcp_script, "notes:search_notes"),
    ]);
    rows
}

/// A row of wrk runs whose requests `script` makes, each run checked in
/// the audit log to have been decided as `action`.
fn row<'a>(
    bench: &'a Bench,
    t: &'a Participant,
    url: &'a str,
    name: &'static str,
    script: &'a Path,
    action: &'static str,
) -> Contender<'a> {
    Contender {
        name,
        pid: t.pid(),
        run: Box::new(move |duration| {
            let r = bench.wrk_script(url, script, &[], duration)?;
            expect_last(t, name, action)?;
            Ok(r)
        }),
    }
}

/// The last request `row` sent was named `action` on acme's project and
/// allowed, and a tool call was audited as one: the rows measured what
/// they say.
fn expect_last(t: &Participant, row: &str, action: &str) -> anyhow::Result<()> {
    let last = super::last_audit_line(t)?;
    let line: Value = serde_json::from_str(&last)
        .with_context(|| format!("{row}: the last audit line is not JSON: {last}"))?;
    anyhow::ensure!(
        line["action"] == action
            && line["decision"] == "allow"
            && line["resource"] == format!("notes/projects/{}", mcp::PROJECT),
        "{row}: the last audit line is not an allowed {action} on the project: {last}"
    );
    let is_call = line["mcp"]["method"] == "tools/call";
    anyhow::ensure!(
        is_call == (row == MCP_CALL),
        "{row}: the last audit line's MCP message is not what the row sent: {last}"
    );
    Ok(())
}
