//! An MCP server's answer to `tools/list`, with the tools the workload may
//! never call left out ([`ToolList`]), as JSON or inside an SSE stream.
//!
//! A listing is what an agent plans with, not what enforces anything: each
//! call is still decided on its own. So the filter works on whole JSON
//! documents and whole SSE events, passes anything else through as it
//! comes, and refuses only what it cannot read at all (an encoded body, an
//! event or answer over [`MAX_LISTING_BYTES`]).
//!
//! The definitions a listing shows are recorded against their pins
//! ([`ToolPins`]) before it goes on, so a call the agent makes after
//! reading a changed definition is decided knowing of the change.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::body::{BoxError, ProxyBody};
use crate::core::mcp::{filter_tool_list, tool_definitions};
use crate::core::ToolList;
use crate::error::ProxyError;

/// The most of one JSON answer, or of one SSE event, read whole to filter.
pub const MAX_LISTING_BYTES: usize = 4 << 20;

/// The request's headers, so the answer comes unencoded: a compressed
/// listing could not be filtered.
pub fn prepare_request(headers: &mut HeaderMap) {
    headers.remove(http::header::ACCEPT_ENCODING);
}

/// `response` with `list` applied to its body.
pub async fn filter(
    response: Response<Incoming>,
    list: ToolList,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    if parts
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|e| e != "identity")
    {
        return Err(ProxyError::UpstreamFailed(
            "the MCP server encoded its tools/list answer, which tollgate cannot filter".into(),
        ));
    }
    let media = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = match media.as_str() {
        "application/json" => {
            let bytes = Limited::new(body, MAX_LISTING_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    ProxyError::UpstreamFailed(format!(
                        "reading the MCP server's tools/list answer: {e}"
                    ))
                })?
                .to_bytes();
            parts.headers.remove(CONTENT_LENGTH);
            Full::new(filter_json(bytes, &list).await)
                .map_err(|e| match e {})
                .boxed()
        }
        "text/event-stream" => {
            parts.headers.remove(CONTENT_LENGTH);
            FilteredEvents::new(body, list).boxed()
        }
        // Not an answer with tools in it (an error page, `202`): as sent.
        _ => body.map_err(BoxError::from).boxed(),
    };
    Ok(Response::from_parts(parts, body))
}

/// The JSON document with the hidden tools left out, or as sent when it
/// is not JSON or hides nothing; its definitions recorded first.
async fn filter_json(bytes: Bytes, list: &ToolList) -> Bytes {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return bytes;
    };
    if let Some(pins) = &list.pins {
        pins.record(&tool_definitions(&answer)).await;
    }
    if filter_tool_list(&mut answer, &|name| list.shows(name)) {
        Bytes::from(answer.to_string())
    } else {
        bytes
    }
}

/// An SSE stream whose events carrying a `tools/list` answer are filtered
/// (and their definitions recorded); every other event goes on as soon as
/// it is complete.
pub struct FilteredEvents {
    inner: Incoming,
    pending: BytesMut,
    list: ToolList,
    ended: bool,
    /// A listing's event, waiting for its definitions to be recorded (on
    /// a task of its own, which finishes should the agent leave).
    recording: Option<(tokio::task::JoinHandle<()>, Bytes)>,
}

impl FilteredEvents {
    fn new(inner: Incoming, list: ToolList) -> FilteredEvents {
        FilteredEvents {
            inner,
            pending: BytesMut::new(),
            list,
            ended: false,
            recording: None,
        }
    }
}

impl Body for FilteredEvents {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some((recording, _)) = &mut this.recording {
                // A recording that panicked is as one that failed: logged.
                let _ = ready!(Pin::new(recording).poll(cx));
                let (_, event) = this.recording.take().expect("recording");
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            if let Some(end) = event_end(&this.pending) {
                let event = this.pending.split_to(end).freeze();
                let message = event_message(&event);
                let tools = match (&this.list.pins, &message) {
                    (Some(_), Some(message)) => tool_definitions(message),
                    _ => Vec::new(),
                };
                let event = filter_event(event, message, &this.list);
                match &this.list.pins {
                    Some(pins) if !tools.is_empty() => {
                        let pins = pins.clone();
                        let recording = tokio::spawn(async move { pins.record(&tools).await });
                        this.recording = Some((recording, event));
                        continue;
                    }
                    _ => return Poll::Ready(Some(Ok(Frame::data(event)))),
                }
            }
            if this.ended {
                // A last event without its blank line: as sent.
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
            }
            if this.pending.len() > MAX_LISTING_BYTES {
                return Poll::Ready(Some(Err(format!(
                    "an event of the MCP server's stream is over {MAX_LISTING_BYTES} bytes"
                )
                .into())));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending.extend_from_slice(&data),
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => this.ended = true,
            }
        }
    }
}

/// Where the first complete event ends (after its blank line).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = find(buffer, b"\n\n").map(|i| i + 2);
    let crlf = find(buffer, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The JSON-RPC message an event's `data:` lines carry, if they do.
fn event_message(event: &[u8]) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// One event whose message ([`event_message`]) is a listing that hides
/// something, written again with the filtered message as its one data
/// line, its other fields kept; any other as it came.
fn filter_event(event: Bytes, message: Option<serde_json::Value>, list: &ToolList) -> Bytes {
    let (Ok(text), Some(mut message)) = (std::str::from_utf8(&event), message) else {
        return event;
    };
    let lines: Vec<&str> = text.lines().collect();
    if !filter_tool_list(&mut message, &|name| list.shows(name)) {
        return event;
    }
    let mut out = String::with_capacity(event.len());
    let mut data_written = false;
    for line in lines.iter().filter(|l| !l.is_empty()) {
        if line.starts_with("data:") {
            if !data_written {
                out.push_str("data: ");
                out.push_str(&message.to_string());
                out.push('\n');
                data_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hiding(hidden: &[&str]) -> ToolList {
        ToolList::hiding(hidden.iter().copied(), false)
    }

    #[tokio::test]
    async fn a_json_listing_loses_the_hidden_tools_and_nothing_else() {
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"look","inputSchema":{}},{"name":"merge"},{"description":"no name"}],"nextCursor":"c"}}"#;
        let filtered = filter_json(Bytes::from(answer), &hiding(&["merge"])).await;
        let value: serde_json::Value = serde_json::from_slice(&filtered).unwrap();
        assert_eq!(
            value["result"]["tools"],
            serde_json::json!([{"name": "look", "inputSchema": {}}])
        );
        assert_eq!(value["result"]["nextCursor"], "c");
        // Not a listing, or nothing hidden: the bytes as sent.
        let other = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(filter_json(other.clone(), &hiding(&["merge"])).await, other);
        let kept =
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"look"}]}}"#);
        assert_eq!(filter_json(kept.clone(), &hiding(&["merge"])).await, kept);
    }

    #[test]
    fn an_sse_event_is_rewritten_with_its_other_fields_kept() {
        let event = Bytes::from_static(
            b"event: message\r\nid: 7\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"merge\"},{\"name\":\"look\"}]}}\r\n\r\n",
        );
        assert_eq!(event_end(&event), Some(event.len()));
        let message = event_message(&event);
        let out = filter_event(event, message, &hiding(&["merge"]));
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("event: message\nid: 7\ndata: "), "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
        assert!(!text.contains("merge") && text.contains("look"), "{text}");
        // A keep-alive comment, a ping: as sent.
        let ping = Bytes::from_static(b": ping\n\n");
        assert_eq!(event_message(&ping), None);
        assert_eq!(filter_event(ping.clone(), None, &hiding(&["merge"])), ping);
    }
}
