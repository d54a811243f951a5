//! Approval administration over gRPC: `ListApprovals`, `GetApproval`,
//! `Approve`, `Deny`, `WatchApprovals`, and `AwaitApproval` for holding
//! proxies. An approver is a name in configuration with a token; the name
//! goes into the logs and the audit line of the request it released. A
//! workload can never approve: task tokens are not approver tokens, and an
//! approver whose name is the workload's cannot decide its request.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::config::ApproverConfig;
use crate::decision::approvals::{ApprovalError, ApprovalEvent, ApprovalState, Verdict};
use crate::decision::approvers::ApproverError;
use crate::decision::proto::pb;

use super::{tasks, DecisionPlane};

/// The longest one `AwaitApproval` may wait: a proxy holding longer asks
/// again.
const MAX_AWAIT: Duration = Duration::from_secs(300);
const WATCH_BUFFER: usize = 256;

pub type ApprovalEvents = Pin<Box<dyn Stream<Item = Result<pb::ApprovalEvent, Status>> + Send>>;

/// Who is calling, when they may see approvals.
enum Caller {
    Approver(String),
    Admin,
}

/// The approver whose token `presented` is, if any (see
/// [`crate::decision::approvers::approver_of`]), as gRPC answers it.
pub fn approver_of(
    approvers: &[ApproverConfig],
    presented: &str,
) -> Result<Option<String>, Status> {
    crate::decision::approvers::approver_of(approvers, presented).map_err(|e| match e {
        ApproverError::TaskToken => Status::permission_denied(e.to_string()),
        ApproverError::Unreadable => Status::unavailable(e.to_string()),
    })
}

fn require_approver<T>(plane: &DecisionPlane, request: &Request<T>) -> Result<String, Status> {
    if plane.approvers.is_empty() {
        return Err(Status::permission_denied(
            "approvals are disabled: no approvals.approvers are configured",
        ));
    }
    approver_of(&plane.approvers, tasks::bearer(request, "an approver's")?)?
        .ok_or_else(|| Status::permission_denied("the approver token is not valid"))
}

/// Approvers and the admin may look.
fn require_reader<T>(plane: &DecisionPlane, request: &Request<T>) -> Result<Caller, Status> {
    if let Some(name) = approver_of(&plane.approvers, tasks::bearer(request, "an approver's")?)? {
        return Ok(Caller::Approver(name));
    }
    tasks::require_admin(plane, request)
        .map(|()| Caller::Admin)
        .map_err(|_| {
            Status::permission_denied("the token is neither an approver's nor the admin's")
        })
}

pub fn status(err: ApprovalError) -> Status {
    match err {
        ApprovalError::NotFound(_) => Status::not_found(err.to_string()),
        ApprovalError::AlreadyDecided { .. } => Status::failed_precondition(err.to_string()),
        ApprovalError::OwnWorkload { .. } => Status::permission_denied(err.to_string()),
        ApprovalError::Unavailable(_) => Status::unavailable(err.to_string()),
    }
}

pub async fn list(
    plane: &DecisionPlane,
    request: Request<pb::ListApprovalsRequest>,
) -> Result<pb::ListApprovalsResponse, Status> {
    require_reader(plane, &request)?;
    let state = match request.into_inner().state.as_str() {
        "" => None,
        name => Some(ApprovalState::from_name(name).ok_or_else(|| {
            Status::invalid_argument(format!(
                "state `{name}` is not one of pending, approved, denied, expired"
            ))
        })?),
    };
    let approvals = plane.approvals().list(state).await.map_err(status)?;
    Ok(pb::ListApprovalsResponse {
        approvals: approvals.iter().map(pb::Approval::from).collect(),
    })
}

pub async fn get(
    plane: &DecisionPlane,
    request: Request<pb::GetApprovalRequest>,
) -> Result<pb::Approval, Status> {
    require_reader(plane, &request)?;
    let id = request.into_inner().approval_id;
    let approval = plane.approvals().get(&id).await.map_err(status)?;
    Ok(pb::Approval::from(&approval))
}

pub async fn decide(
    plane: &DecisionPlane,
    request: Request<pb::DecideApprovalRequest>,
    approve: bool,
) -> Result<pb::Approval, Status> {
    let approver = require_approver(plane, &request)?;
    let r = request.into_inner();
    let verdict = Verdict {
        approve,
        approver,
        reason: r.reason.trim().to_string(),
    };
    let decided = plane
        .approvals()
        .decide(&r.approval_id, &verdict)
        .await
        .map_err(status)?;
    Ok(pb::Approval::from(&decided))
}

/// The approvals still current, then every change. A watcher that falls
/// too far behind, or whose replica loses the state store (changes made
/// meanwhile are never heard), is cut off and must watch again (it hears
/// the current ones again first).
pub async fn watch(
    plane: &DecisionPlane,
    request: Request<pb::WatchApprovalsRequest>,
) -> Result<ApprovalEvents, Status> {
    let caller = require_reader(plane, &request)?;
    let who = match caller {
        Caller::Approver(name) => name,
        Caller::Admin => "admin".to_string(),
    };
    let approvals = plane.approvals();
    let mut live = approvals.subscribe();
    let mut health = approvals.health();
    let current = approvals.list(None).await.map_err(status)?;
    let (out, stream) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    tracing::info!(watcher = %who, "approval watcher connected");
    tokio::spawn(async move {
        let now = std::time::SystemTime::now();
        for approval in current.iter().rev().filter(|a| a.current(now)) {
            let event = pb::ApprovalEvent {
                kind: "snapshot".into(),
                approval: Some(pb::Approval::from(approval)),
            };
            if out.send(Ok(event)).await.is_err() {
                return;
            }
        }
        loop {
            let event = tokio::select! {
                event = live.recv() => event,
                () = out.closed() => return,
                true = async { health.wait_for(|up| !*up).await.is_ok() } => {
                    let lost = Status::unavailable("the state store was lost; watch again");
                    let _ = out.send(Err(lost)).await;
                    return;
                }
            };
            let sent = match event {
                Ok(event) => out.send(Ok(to_pb(&event))).await,
                Err(_) => {
                    let _ = out
                        .send(Err(Status::data_loss(
                            "approval changes were missed; watch again",
                        )))
                        .await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(stream)))
}

fn to_pb(event: &ApprovalEvent) -> pb::ApprovalEvent {
    pb::ApprovalEvent {
        kind: event.kind.as_str().to_string(),
        approval: Some(pb::Approval::from(&event.approval)),
    }
}

pub async fn await_verdict(
    plane: &DecisionPlane,
    request: Request<pb::AwaitApprovalRequest>,
) -> Result<pb::ApprovalStatus, Status> {
    let r = request.into_inner();
    let timeout = Duration::from_millis(r.timeout_ms).min(MAX_AWAIT);
    let approval = plane
        .approvals()
        .await_verdict(&r.approval_id, timeout)
        .await
        .map_err(status)?;
    Ok(pb::ApprovalStatus {
        state: approval
            .state_at(std::time::SystemTime::now())
            .as_str()
            .to_string(),
        approval_id: approval.id,
        approver: approval.approver,
        reason: approval.reason,
    })
}
