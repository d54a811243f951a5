//! `/console/api/events`: Server-Sent Events telling the page what changed,
//! so it fetches a list again only then. Driven by the stores' own
//! announcements (approvals, task ends) and the recent-decisions ring;
//! events carry no more than a kind and an id, the data stays behind the
//! JSON endpoints.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::body::{BoxError, ProxyBody};

use super::session::SignedIn;
use super::Console;

/// A comment line this often keeps intermediaries from closing an idle
/// stream, and lets a closed session end it.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Under load decisions arrive by the thousand: the page hears about
/// them at most this often.
const DECISIONS_EVERY: Duration = Duration::from_secs(1);

pub fn stream(console: Arc<Console>, signed: SignedIn) -> Response<ProxyBody> {
    let (out, events) = mpsc::channel::<Bytes>(16);
    tokio::spawn(follow(console, signed, out));
    let body = StreamBody::new(
        ReceiverStream::new(events).map(|chunk| Ok::<_, BoxError>(Frame::data(chunk))),
    );
    let mut response = Response::new(BodyExt::boxed(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

async fn follow(console: Arc<Console>, signed: SignedIn, out: mpsc::Sender<Bytes>) {
    // Subscribed before the page is told to fetch, so nothing falls
    // between its first lists and the first event.
    let mut approvals = console.tasks.approvals().subscribe();
    let mut ended = console.tasks.subscribe();
    let recent = &console.recent;
    let mut seen = recent.pushed();
    let mut last_decisions = Instant::now() - DECISIONS_EVERY;
    let mut decisions_due: Option<Instant> = None;
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    if out
        .send(event("ready", &serde_json::json!({})))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let changed = recent.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if decisions_due.is_none() && recent.pushed() != seen {
            decisions_due = Some(Instant::now().max(last_decisions + DECISIONS_EVERY));
        }
        let chunk = tokio::select! {
            () = out.closed() => return,
            heard = approvals.recv() => match heard {
                Ok(e) => event(
                    "approvals",
                    &serde_json::json!({"kind": e.kind.as_str(), "id": e.approval.id}),
                ),
                // Missed some: the page lists them all again anyway.
                Err(RecvError::Lagged(_)) => event("approvals", &serde_json::json!({})),
                Err(RecvError::Closed) => return,
            },
            heard = ended.recv() => match heard {
                Ok(_) | Err(RecvError::Lagged(_)) => event("tasks", &serde_json::json!({})),
                Err(RecvError::Closed) => return,
            },
            () = tokio::time::sleep_until(decisions_due.unwrap_or_else(Instant::now)),
                if decisions_due.is_some() =>
            {
                seen = recent.pushed();
                decisions_due = None;
                last_decisions = Instant::now();
                event("decisions", &serde_json::json!({}))
            }
            () = &mut changed, if decisions_due.is_none() => continue,
            _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
        };
        if !console.sessions.is_open(&signed) {
            let _ = out.send(event("signed_out", &serde_json::json!({}))).await;
            return;
        }
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}
