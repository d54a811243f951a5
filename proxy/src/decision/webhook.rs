//! Approval notifications: a JSON POST to a configured URL when an
//! approval is requested, decided or expires. The body has a `text` field,
//! so a Slack incoming webhook shows it as a message, and the approval
//! itself for anything that wants more.
//!
//! Never in the way: changes queue in memory and one task sends them in
//! order, each within a timeout. A failure is logged (naming the host, not
//! the URL, which for Slack is itself the secret) and the change is not
//! sent again; a full queue drops the newest and says so.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;
use tokio::sync::mpsc;

use super::approvals::{ApprovalEvent, ApprovalEventKind};
use crate::config::SecretSource;

/// Changes waiting to be sent before new ones are dropped.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<ApprovalEvent>,
}

impl Webhook {
    /// Start the sender. `url` is read for every POST, so a rotated file
    /// or secret takes effect at once. Needs a runtime.
    pub fn start(url: SecretSource, timeout: Duration, tls: Arc<rustls::ClientConfig>) -> Webhook {
        let (queue, changes) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(changes, url, timeout, tls));
        Webhook { queue }
    }

    /// Queue one change; never waits.
    pub fn notify(&self, event: &ApprovalEvent) {
        if event.kind == ApprovalEventKind::Used {
            return;
        }
        if self.queue.try_send(event.clone()).is_err() {
            tracing::warn!(approval = %event.approval.id, "approval webhook queue full; notification dropped");
        }
    }
}

async fn send_all(
    mut changes: mpsc::Receiver<ApprovalEvent>,
    url: SecretSource,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .build(https);
    while let Some(event) = changes.recv().await {
        let id = event.approval.id.clone();
        let kind = event.kind.as_str();
        let (host, result) = match url.read() {
            Ok(url) => {
                let host = url::Url::parse(url.trim())
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| "(not a URL)".into());
                let post = post(&client, url.trim(), &event);
                let result = match tokio::time::timeout(timeout, post).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (host, result)
            }
            Err(e) => ("(unreadable)".into(), Err(e)),
        };
        match result {
            Ok(()) => tracing::debug!(approval = %id, event = kind, %host, "approval webhook sent"),
            Err(error) => {
                tracing::warn!(approval = %id, event = kind, %host, %error, "approval webhook failed")
            }
        }
    }
}

async fn post<C>(
    client: &Client<C, Full<Bytes>>,
    url: &str,
    event: &ApprovalEvent,
) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "the URL is not valid".to_string())?;
    let body = serde_json::to_vec(&message(event)).map_err(|e| e.to_string())?;
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "tollgate")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| {
        // The error's text can hold the URL; its kind is enough.
        if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        }
    })?;
    let status = response.status();
    // Read the answer so the connection can be reused.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// The POST body: Slack's `text`, and the approval as the API shows it.
pub fn message(event: &ApprovalEvent) -> serde_json::Value {
    let a = &event.approval;
    let call = format!(
        "`{}` on `{}` ({} {}{}{}) by `{}`",
        a.action,
        a.resource,
        a.method,
        a.host,
        a.path,
        if a.query.is_empty() {
            String::new()
        } else {
            format!("?{}", a.query)
        },
        a.workload
    );
    let task = match (a.task_id.as_str(), a.task_purpose.as_str()) {
        ("", _) => String::new(),
        (id, "") => format!(" in task {id}"),
        (id, purpose) => format!(" in task {id} ({purpose})"),
    };
    let because = |reason: &str| {
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        }
    };
    let text = match event.kind {
        ApprovalEventKind::Requested => format!(
            "Approval needed for {call}{task}. {} — `tollgate approvals approve {}`",
            a.message, a.id
        ),
        ApprovalEventKind::Approved => {
            format!(
                "Approved by {}{}: {call}{task} ({})",
                a.approver,
                because(&a.reason),
                a.id
            )
        }
        ApprovalEventKind::Denied => {
            format!(
                "Denied by {}{}: {call}{task} ({})",
                a.approver,
                because(&a.reason),
                a.id
            )
        }
        ApprovalEventKind::Expired => format!("Expired undecided: {call}{task} ({})", a.id),
        ApprovalEventKind::Used => format!("Used: {call}{task} ({})", a.id),
    };
    json!({
        "text": text,
        "event": event.kind.as_str(),
        "approval": a,
    })
}
