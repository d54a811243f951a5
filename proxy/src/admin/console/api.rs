//! The console's JSON endpoints under `/console/api/`, each reached only
//! with an open session; the ones that change something also need the
//! session's CSRF token and a same-origin request.

use std::sync::Arc;
use std::time::SystemTime;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::{full, ProxyBody};
use crate::core::recent::RecentFilter;
use crate::decision::approvals::{ApprovalError, ApprovalState, Verdict};
use crate::decision::tasks::{unix_ms, TaskError, TaskView};

use super::session::{self, SignedIn};
use super::{events, read_body, Console};

/// Decisions sent at once; the ring holds more for narrower filters.
const DECISIONS_SHOWN: usize = 200;
const TASKS_SHOWN: usize = 200;
/// Longer reasons are cut: a reason is a sentence, not a document.
const MAX_REASON_CHARS: usize = 500;

pub async fn answer(
    console: &Arc<Console>,
    request: Request<Incoming>,
    signed: SignedIn,
) -> Response<ProxyBody> {
    let path = request.uri().path().trim_start_matches("/console/api/");
    let parts: Vec<&str> = path.split('/').collect();
    match (request.method(), parts.as_slice()) {
        (&Method::GET, ["session"]) => session_info(&signed),
        (&Method::GET, ["approvals"]) => pending(console).await,
        (&Method::GET, ["tasks"]) => tasks(console).await,
        (&Method::GET, ["decisions"]) => decisions(console, request.uri().query()),
        (&Method::GET, ["events"]) => events::stream(console.clone(), signed),
        (&Method::POST, ["approvals", id, verb @ ("approve" | "deny")]) => {
            if let Err(refused) = may_change(&request, &signed) {
                return *refused;
            }
            let (id, approve) = (id.to_string(), *verb == "approve");
            decide(console, request, &signed, &id, approve).await
        }
        (&Method::POST, ["tasks", id, "end"]) => {
            if let Err(refused) = may_change(&request, &signed) {
                return *refused;
            }
            let id = id.to_string();
            end_task(console, &signed, &id).await
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A change needs a same-origin request carrying the session's CSRF token.
pub fn may_change<B>(
    request: &Request<B>,
    signed: &SignedIn,
) -> Result<(), Box<Response<ProxyBody>>> {
    if let Err(why) = session::same_origin(request.headers()) {
        tracing::warn!(approver = %signed.approver, why, "console change refused");
        return Err(Box::new(error(StatusCode::FORBIDDEN, why)));
    }
    if !session::csrf_matches(signed, request.headers()) {
        tracing::warn!(approver = %signed.approver, "console change refused: CSRF token");
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "the CSRF token is missing or wrong; reload the console",
        )));
    }
    Ok(())
}

fn session_info(signed: &SignedIn) -> Response<ProxyBody> {
    let left = signed
        .expires
        .saturating_duration_since(std::time::Instant::now());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "approver": signed.approver,
            "csrf_token": signed.csrf,
            "expires_in_s": left.as_secs(),
        }),
    )
}

async fn pending(console: &Console) -> Response<ProxyBody> {
    match console
        .tasks
        .approvals()
        .list(Some(ApprovalState::Pending))
        .await
    {
        Ok(approvals) => json(
            StatusCode::OK,
            &serde_json::json!({
                "now_ms": unix_ms(SystemTime::now()),
                "approvals": approvals,
            }),
        ),
        Err(e) => approval_error(&e),
    }
}

#[derive(Serialize)]
struct TaskJson<'a> {
    id: &'a str,
    workload: &'a str,
    purpose: &'a str,
    scopes: &'a [String],
    budgets: Vec<BudgetJson>,
    state: &'static str,
    created_ms: i64,
    expires_ms: i64,
    ended_ms: Option<i64>,
}

#[derive(Serialize)]
struct BudgetJson {
    class: &'static str,
    limit: u32,
    used: u32,
}

impl<'a> From<&'a TaskView> for TaskJson<'a> {
    fn from(t: &'a TaskView) -> TaskJson<'a> {
        TaskJson {
            id: &t.id,
            workload: &t.workload,
            purpose: &t.purpose,
            scopes: &t.scopes,
            budgets: t
                .budgets
                .iter()
                .map(|(class, (limit, used))| BudgetJson {
                    class: class.as_str(),
                    limit: *limit,
                    used: *used,
                })
                .collect(),
            state: t.state.as_str(),
            created_ms: unix_ms(t.created),
            expires_ms: unix_ms(t.expires),
            ended_ms: t.ended.map(unix_ms),
        }
    }
}

async fn tasks(console: &Console) -> Response<ProxyBody> {
    match console.tasks.list().await {
        Ok(all) => {
            let shown: Vec<TaskJson> = all.iter().take(TASKS_SHOWN).map(TaskJson::from).collect();
            json(
                StatusCode::OK,
                &serde_json::json!({"now_ms": unix_ms(SystemTime::now()), "tasks": shown}),
            )
        }
        Err(e) => task_error(&e),
    }
}

fn decisions(console: &Console, query: Option<&str>) -> Response<ProxyBody> {
    let mut filter = RecentFilter::default();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim().to_string();
        match name.as_ref() {
            "workload" => filter.workload = value,
            "action" => filter.action = value,
            "outcome" => filter.outcome = value,
            _ => {}
        }
    }
    json(
        StatusCode::OK,
        &serde_json::json!({"decisions": console.recent.list(&filter, DECISIONS_SHOWN)}),
    )
}

#[derive(serde::Deserialize)]
struct DecideBody {
    #[serde(default)]
    reason: String,
}

async fn decide(
    console: &Console,
    request: Request<Incoming>,
    signed: &SignedIn,
    id: &str,
    approve: bool,
) -> Response<ProxyBody> {
    let body = read_body(request.into_body()).await;
    let Some(body) = body.and_then(|b| serde_json::from_slice::<DecideBody>(&b).ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a JSON body {\"reason\": \"…\"}",
        );
    };
    let reason: String = body.reason.trim().chars().take(MAX_REASON_CHARS).collect();
    // The agent is told why it was refused: a denial must say.
    if !approve && reason.is_empty() {
        return error(StatusCode::BAD_REQUEST, "a denial needs a reason");
    }
    let verdict = Verdict {
        approve,
        approver: signed.approver.clone(),
        reason,
    };
    match console.tasks.approvals().decide(id, &verdict).await {
        Ok(approval) => json(StatusCode::OK, &approval),
        Err(e) => approval_error(&e),
    }
}

async fn end_task(console: &Console, signed: &SignedIn, id: &str) -> Response<ProxyBody> {
    match console.tasks.end(id).await {
        Ok(task) => {
            tracing::info!(task = %task.id, approver = %signed.approver, "task ended from the console");
            json(StatusCode::OK, &TaskJson::from(&task))
        }
        Err(e) => task_error(&e),
    }
}

fn approval_error(e: &ApprovalError) -> Response<ProxyBody> {
    let status = match e {
        ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
        ApprovalError::AlreadyDecided { .. } => StatusCode::CONFLICT,
        ApprovalError::OwnWorkload { .. } => StatusCode::FORBIDDEN,
        ApprovalError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn task_error(e: &TaskError) -> Response<ProxyBody> {
    let status = match e {
        TaskError::NotFound(_) => StatusCode::NOT_FOUND,
        TaskError::Invalid(_) => StatusCode::BAD_REQUEST,
        TaskError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, &serde_json::json!({ "error": message }))
}
