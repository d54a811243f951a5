//! Shared pieces of tollgate's load benchmarks: the fixed upstream, the
//! participants (tollgate, Envoy, a no-op ext_authz server), wrk runs and
//! their parsing, oha runs for the rows wrk cannot drive (`CONNECT`, TLS to
//! the proxy), a generator of new mTLS connections, workload tokens and
//! certificates, bulk transfer and memory measurements, a network
//! namespace for the transparent rows, a Redis server for decision planes
//! sharing tasks, the task API as an operator calls it, merges held for a
//! person's approval with an approver's client, and an API served both as
//! REST and as an MCP server. The harness itself is
//! `src/bin/loadbench.rs`.

pub mod approvals;
pub mod bulk;
pub mod envoy;
pub mod fixtures;
pub mod handshakes;
pub mod jwt;
pub mod mcp;
pub mod memory;
pub mod netns;
pub mod noop_authz;
pub mod oha;
pub mod pki;
pub mod process;
pub mod redis;
pub mod report;
pub mod slowloris;
pub mod tasks;
pub mod tollgate;
pub mod upstream;
pub mod wrk;

use std::path::PathBuf;

/// One HTTP/1.1 answer at the start of `got`, once all of it has come:
/// its head (lower-cased) and its body, framed by `Content-Length` (the
/// benches' proxies and upstreams always send one).
pub fn whole_answer(got: &[u8]) -> anyhow::Result<Option<(String, &[u8])>> {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("answer without content-length: {head}"))?;
    let body = end + 4;
    Ok((got.len() >= body + length).then(|| (head, &got[body..body + length])))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The workload every tollgate participant decides for.
pub const WORKLOAD: &str = "spiffe://cluster.local/ns/bench/sa/load";
