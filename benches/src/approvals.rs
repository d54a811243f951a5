//! Human approvals as the benchmark gives them: a tool whose merges an
//! approval gate stops, the configuration that holds them, an agent
//! sending merges through the proxy, and an approver's client of the
//! decision API.
//!
//! Every merge has a body of its own (the approval is bound to the body's
//! digest), so each held request waits on an approval of its own: the
//! honest case, where nothing is shared between requests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate::decision::proto::pb;
use tollgate::decision::proto::pb::decision_service_client::DecisionServiceClient;

use crate::WORKLOAD;

/// The gated tool's host, beside the bench catalog's, so the rows of other
/// sections are classified exactly as before.
pub const HOST: &str = "review.bench.test";

/// A tool of its own on [`HOST`]: merging a change is a write, which the
/// shipped guardrails allow only under a task.
pub const CATALOG: &str = r#"
tool: review
description: benchmark code review, whose merges wait for a person
endpoints:
  - hosts: [review.bench.test]
    routes:
      - { method: POST, path: "/v1/changes/{id}/merge", action: changes.merge, risk: write, resource: "changes/{id}" }
"#;

/// Where [`CATALOG`] goes in a participant's `catalog/` folder.
pub const CATALOG_FILE: &str = "review.yaml";

/// The bench workload may merge under a task, and every merge waits for an
/// approval: the gate the issue describes, on the bench's own action.
pub fn policies() -> String {
    format!(
        "@id(\"bench-merge\")\npermit (principal == Workload::\"{WORKLOAD}\", action == Action::\"review:changes.merge\", resource in Target::\"review\");\n\
         @id(\"bench-merge-needs-approval\")\n@reason(\"merging needs a person's approval\")\n\
         forbid (principal, action == Action::\"review:changes.merge\", resource)\nunless {{ context.approved }};\n"
    )
}

/// What every merge is sent to; the change is the same each time, only the
/// body differs.
pub const URL: &str = "http://review.bench.test/v1/changes/7/merge";

/// The one approver every gated participant knows.
pub const APPROVER: &str = "bench-approver";
/// Her token (the benchmark's own, never a real one), handed to the
/// participants in [`APPROVER_ENV`].
pub const APPROVER_TOKEN: &str = "bench-approver-token-0f3a";
pub const APPROVER_ENV: &str = "TOLLGATE_BENCH_APPROVER";

/// Gated merges on [`HOST`], held up to `hold` by the proxy and sent to
/// `upstream` once approved.
#[derive(Clone, Copy)]
pub struct Gate {
    pub upstream: SocketAddr,
    pub hold: Duration,
}

/// The `approvals:` section: requests held up to `hold`, [`APPROVER`]
/// reading her token from [`APPROVER_ENV`].
pub fn yaml(hold: Duration) -> String {
    format!(
        "approvals:\n  hold: {}ms\n  approvers:\n    - {{ name: {APPROVER}, token: {{ env: {APPROVER_ENV} }} }}\n",
        hold.as_millis()
    )
}

/// The body of merge number `n`: the same length for every `n` below a
/// million, so every held request holds as many bytes.
pub fn body(n: usize) -> String {
    format!("{{\"merge_method\":\"squash\",\"request\":{n:06}}}")
}

/// Hex SHA-256, as an approval names its body.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A merge sent through the proxy at `proxy` under the task whose token is
/// `token`, not answered yet. One connection per merge, closed after the
/// answer, as an agent waiting on a held call would have it.
pub async fn send(proxy: SocketAddr, token: &str, body: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "POST {URL} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// What the proxy answered a merge.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Head and body as text.
    pub text: String,
}

/// Read the whole answer to a merge [`send`] sent (the proxy closes the
/// connection after it).
pub async fn answer(mut stream: TcpStream) -> anyhow::Result<Answer> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await?;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP/1.1 status line in {text:?}"))?;
    Ok(Answer { status, text })
}

pub type Approver = DecisionServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn approver_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {APPROVER_TOKEN}")
        .parse()
        .map_err(|_| tonic::Status::internal("header"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// [`APPROVER`]'s client of the decision API at `addr`.
pub async fn approver(addr: SocketAddr) -> anyhow::Result<Approver> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(DecisionServiceClient::with_interceptor(
        channel,
        approver_header as _,
    ))
}

/// The approvals pending now.
pub async fn pending(approver: &mut Approver) -> anyhow::Result<Vec<pb::Approval>> {
    Ok(approver
        .list_approvals(pb::ListApprovalsRequest {
            state: "pending".into(),
        })
        .await?
        .into_inner()
        .approvals)
}

/// Approve (or deny) approval `id`; returns when the decision plane has
/// answered.
pub async fn decide(approver: &mut Approver, id: &str, approve: bool) -> anyhow::Result<()> {
    let request = pb::DecideApprovalRequest {
        approval_id: id.to_string(),
        reason: "benchmark".into(),
    };
    let decided = match approve {
        true => approver.approve(request).await,
        false => approver.deny(request).await,
    }
    .with_context(|| format!("deciding approval {id}"))?
    .into_inner();
    let expected = if approve { "approved" } else { "denied" };
    anyhow::ensure!(
        decided.state == expected,
        "approval {id} is {} after the verdict",
        decided.state
    );
    Ok(())
}
