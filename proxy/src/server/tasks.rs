//! Task administration over gRPC: `StartTask`, `EndTask`, `GetTask`,
//! `ListTasks`. Each needs the admin bearer token; a workload that reaches
//! the decision service (it must, to be decided) still cannot start, end or
//! widen a task.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Status};

use crate::authorization;
use crate::decision::proto::pb;
use crate::decision::tasks::{TaskError, TaskSpec};
use crate::decision::TokenHash;

use super::DecisionPlane;

/// Refuse unless the call carries `authorization: Bearer <admin token>`.
/// Compared as SHA-256 digests, so the comparison's timing says nothing
/// about the token.
pub fn require_admin<T>(plane: &DecisionPlane, request: &Request<T>) -> Result<(), Status> {
    let Some(source) = &plane.admin_token else {
        return Err(Status::permission_denied(
            "task administration is disabled: no tasks.admin_token is configured",
        ));
    };
    let expected = source.read().map_err(|e| {
        tracing::error!(error = %e, "admin token unreadable; refusing task administration");
        Status::unavailable("the admin token cannot be read")
    })?;
    let presented = bearer(request, "an admin")?;
    if TokenHash::of(presented) != TokenHash::of(expected.trim()) {
        return Err(Status::permission_denied("the admin token is not valid"));
    }
    Ok(())
}

/// The bearer token of a call's `authorization` metadata; `whose` names
/// the token expected when there is none.
pub fn bearer<'r, T>(request: &'r Request<T>, whose: &str) -> Result<&'r str, Status> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(authorization::bearer)
        .ok_or_else(|| Status::unauthenticated(format!("{whose} bearer token is required")))
}

fn status(err: TaskError) -> Status {
    match err {
        TaskError::NotFound(_) => Status::not_found(err.to_string()),
        TaskError::Invalid(_) => Status::invalid_argument(err.to_string()),
        TaskError::Unavailable(_) => Status::unavailable(err.to_string()),
    }
}

pub async fn start(
    plane: &DecisionPlane,
    request: Request<pb::StartTaskRequest>,
) -> Result<pb::StartTaskResponse, Status> {
    require_admin(plane, &request)?;
    let r = request.into_inner();
    let spec = TaskSpec {
        workload: r.workload,
        purpose: r.purpose,
        ttl: Duration::from_secs(r.ttl_seconds),
        scopes: r.scopes,
        budgets: r.budgets.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let (task, token) = plane.tasks.start(spec).await.map_err(status)?;
    Ok(pb::StartTaskResponse {
        task: Some(pb::Task::from(&task)),
        token: token.expose().to_string(),
    })
}

pub async fn end(
    plane: &DecisionPlane,
    request: Request<pb::EndTaskRequest>,
) -> Result<pb::Task, Status> {
    require_admin(plane, &request)?;
    let task = plane
        .tasks
        .end(&request.into_inner().task_id)
        .await
        .map_err(status)?;
    Ok(pb::Task::from(&task))
}

pub async fn get(
    plane: &DecisionPlane,
    request: Request<pb::GetTaskRequest>,
) -> Result<pb::Task, Status> {
    require_admin(plane, &request)?;
    let task = plane
        .tasks
        .get(&request.into_inner().task_id)
        .await
        .map_err(status)?;
    Ok(pb::Task::from(&task))
}

pub async fn list(
    plane: &DecisionPlane,
    request: Request<pb::ListTasksRequest>,
) -> Result<pb::ListTasksResponse, Status> {
    require_admin(plane, &request)?;
    Ok(pb::ListTasksResponse {
        tasks: plane
            .tasks
            .list()
            .await
            .map_err(status)?
            .iter()
            .map(pb::Task::from)
            .collect(),
    })
}
