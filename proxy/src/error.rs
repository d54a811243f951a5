//! The one place an error becomes an HTTP answer. Every refusal is a clear
//! status with a JSON body an agent can act on, whichever front answers it:
//! the proxy sends [`ProxyError::to_response`], ext_authz has Envoy send the
//! same status, headers and body.

use std::net::IpAddr;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{full, ProxyBody};
use crate::catalog::ErrorFormat;
use crate::decision::credentials::CredentialError;
use crate::decision::{ApprovalState, Decision, Outcome, Reason};
use crate::identity::IdentityError;

/// Why a request was not forwarded (or failed on its way), named as a fact.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No identity, or what the caller presented failed verification.
    #[error(transparent)]
    Identity(IdentityError),
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    /// An MCP request body that cannot be decided as it stands: not
    /// JSON-RPC (`mcp_malformed`), or over a bound (`mcp_over_limit`).
    #[error("{message}")]
    Mcp {
        reason: &'static str,
        message: String,
    },
    /// A JSON-RPC batch with a message refused: none is sent, and the
    /// answer is a batch with an error for each message that has an id.
    #[error("{message}")]
    McpBatch {
        /// The JSON array answered.
        answer: String,
        message: String,
    },
    #[error("request for `{got}` on a connection to `{expected}`")]
    Misdirected { expected: String, got: String },
    #[error("denied by policy: {}", .0.decision.reason)]
    Denied(Box<DeniedRequest>),
    /// The private-address guard refused every address the host
    /// resolved to; `why` names the range, endpoint or listener.
    #[error("destination {host} resolves to {address}, which is not allowed: {why}")]
    DestinationBlocked {
        host: String,
        address: IpAddr,
        why: String,
    },
    /// A redirected connection named a host that does not resolve to the
    /// address it was headed for.
    #[error("{0}")]
    DestinationMismatch(String),
    /// The agent sent a credential of its own in the query string (a
    /// presigned URL, an API key parameter): it would leave with the
    /// request, so nothing leaves. Names only, never values.
    #[error(
        "the request carries a credential of the agent's own in its query string ({}); \
         tollgate never forwards one: leave it out, tollgate adds the credential policy names",
        .0.join(", ")
    )]
    CredentialInQuery(Vec<String>),
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    /// Policy allowed and named a credential that cannot be had: refusing
    /// is safer than sending the request without it (or with the agent's).
    #[error("{0}")]
    CredentialUnavailable(String),
    /// Policy named a credential the configuration does not let go to this
    /// tool. The binding wins over policy: refused, never forwarded.
    #[error("{0}")]
    CredentialNotBound(String),
    /// A request an approval gate stopped has a body too large to hold
    /// while a person decides: refused, never truncated.
    #[error("the request needs approval and its body is over the {limit}-byte limit for held requests (approvals.max_body_bytes)")]
    HeldBodyTooLarge { limit: usize },
    /// The body of a request being held could not be read to its end.
    #[error("reading the body of a held request failed: {0}")]
    HeldBodyUnreadable(String),
    #[error("the request target is over the {limit}-byte limit (limits.max_request_line_bytes)")]
    UriTooLong { limit: usize },
    #[error("{0} (limits.max_headers, limits.max_header_bytes)")]
    HeadersTooLarge(String),
    /// Where the body ends could be read two ways: refused, and the
    /// connection closed, since what follows cannot be trusted either.
    #[error("ambiguous message framing: {0}")]
    AmbiguousFraming(String),
    #[error(
        "the request body is over the {limit}-byte limit for this tool (limits.max_body_bytes)"
    )]
    BodyTooLarge { limit: u64 },
    /// At a limit of open tunnels or requests in flight: try again soon.
    #[error("tollgate is at its limit of {0}; retry shortly")]
    Overloaded(&'static str),
    /// The audit output cannot be written, and requests are not to go out
    /// unaudited (`audit.on_failure: refuse`). Nothing was decided.
    #[error("the audit log cannot be written; requests are refused until it can")]
    AuditUnavailable,
}

/// The JSON-RPC error code of tollgate's refusals of MCP calls, in the
/// range JSON-RPC leaves to servers.
pub const JSON_RPC_REFUSED: i64 = -32001;
/// MCP 2025-11-25's "URL elicitation required".
pub const JSON_RPC_URL_ELICITATION: i64 = -32042;

/// How long an agent told tollgate is overloaded should wait.
pub const OVERLOAD_RETRY_AFTER_SECONDS: u64 = 1;

/// How long an agent told its approval is pending should wait before
/// asking again (`Retry-After`). Asking again holds again, so a short wait
/// costs nothing.
pub const APPROVAL_RETRY_AFTER_SECONDS: u64 = 5;

impl From<CredentialError> for ProxyError {
    fn from(err: CredentialError) -> ProxyError {
        match err {
            CredentialError::NotBound { .. } => ProxyError::CredentialNotBound(err.to_string()),
            _ => ProxyError::CredentialUnavailable(err.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct DeniedRequest {
    pub action: String,
    pub decision: Decision,
}

impl ProxyError {
    pub fn denied(action: impl Into<String>, decision: Decision) -> ProxyError {
        ProxyError::Denied(Box::new(DeniedRequest {
            action: action.into(),
            decision,
        }))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            // Keys that cannot be had are tollgate's trouble, not the agent's.
            ProxyError::Identity(IdentityError::KeysUnavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Identity(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::MalformedRequest(_)
            | ProxyError::AmbiguousFraming(_)
            | ProxyError::Mcp { .. } => StatusCode::BAD_REQUEST,
            // The exchange worked; each message's refusal is in the answer.
            ProxyError::McpBatch { .. } => StatusCode::OK,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            // A task token that no longer works is an authentication
            // problem the agent can fix (ask for a new task), not policy.
            ProxyError::Denied(d) if d.decision.reason.is_about_the_token() => {
                StatusCode::UNAUTHORIZED
            }
            // tollgate's own trouble, gone when the store or the decision
            // service is back: an agent may try again, unlike after a 403.
            ProxyError::Denied(d)
                if matches!(
                    d.decision.reason,
                    Reason::StateUnavailable | Reason::DecisionUnavailable
                ) =>
            {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Not refused for good: the same request passes once a person
            // approves it. 428 says "not yet, under a condition", which a
            // 403 would not; the body names the approval to wait for.
            ProxyError::Denied(d) if d.decision.outcome == Outcome::ApprovalRequired => {
                StatusCode::PRECONDITION_REQUIRED
            }
            ProxyError::Denied(_)
            | ProxyError::DestinationBlocked { .. }
            | ProxyError::DestinationMismatch(_)
            | ProxyError::CredentialInQuery(_)
            | ProxyError::CredentialNotBound(_) => StatusCode::FORBIDDEN,
            ProxyError::UpstreamConnect(_) | ProxyError::UpstreamFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::CredentialUnavailable(_) | ProxyError::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::HeldBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeldBodyUnreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable machine code for the audit line and the JSON body.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Identity(err) => err.reason(),
            ProxyError::MalformedRequest(_) => "malformed_request",
            ProxyError::Mcp { reason, .. } => reason,
            ProxyError::McpBatch { .. } => "mcp_batch_refused",
            ProxyError::Misdirected { .. } => "misdirected_request",
            ProxyError::Denied(d) => d.decision.reason.as_str(),
            ProxyError::DestinationBlocked { .. } => "destination_blocked",
            ProxyError::DestinationMismatch(_) => "destination_mismatch",
            ProxyError::CredentialInQuery(_) => "credential_in_query",
            ProxyError::UpstreamConnect(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamFailed(_) => "upstream_failed",
            ProxyError::CredentialUnavailable(_) => "credential_unavailable",
            ProxyError::CredentialNotBound(_) => "credential_not_bound",
            ProxyError::HeldBodyTooLarge { .. } => "held_body_too_large",
            ProxyError::HeldBodyUnreadable(_) => "held_body_unreadable",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::AmbiguousFraming(_) => "ambiguous_framing",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The JSON body every refusal carries, wherever it is answered (the
    /// proxy, or Envoy through ext_authz).
    pub fn body(&self, decision_id: &str) -> serde_json::Value {
        match self {
            ProxyError::Denied(d) => {
                let mut body = json!({
                    "decision": d.decision.outcome.as_str(),
                    "action": d.action,
                    "reason": d.decision.reason.as_str(),
                    "message": d.decision.message,
                    "policy_ids": d.decision.policy_ids,
                    "task_id": d.decision.task.as_ref().map(|t| t.id.as_str()),
                    "decision_id": decision_id,
                });
                if let Some(approval) = &d.decision.approval {
                    body["approval_id"] = json!(approval.id);
                    body["status"] = json!(approval.state.as_str());
                    if !approval.approver.is_empty() {
                        body["approver"] = json!(approval.approver);
                        body["approver_reason"] = json!(approval.reason);
                    }
                }
                if d.decision.outcome == Outcome::ApprovalRequired {
                    body["retry_after"] = json!(APPROVAL_RETRY_AFTER_SECONDS);
                }
                body
            }
            ProxyError::DestinationBlocked { .. }
            | ProxyError::DestinationMismatch(_)
            | ProxyError::CredentialInQuery(_)
            | ProxyError::CredentialNotBound(_) => json!({
                "decision": "deny",
                "reason": self.reason(),
                "message": self.to_string(),
                "policy_ids": [],
                "decision_id": decision_id,
            }),
            _ => json!({
                "error": self.reason(),
                "message": self.to_string(),
                "decision_id": decision_id,
            }),
        }
    }

    /// The headers every refusal carries besides its body.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        if self.status() == StatusCode::PRECONDITION_REQUIRED {
            headers.push((
                header::RETRY_AFTER,
                HeaderValue::from(APPROVAL_RETRY_AFTER_SECONDS),
            ));
        }
        if let ProxyError::Overloaded(_) = self {
            headers.push((
                header::RETRY_AFTER,
                HeaderValue::from(OVERLOAD_RETRY_AFTER_SECONDS),
            ));
        }
        if let ProxyError::AmbiguousFraming(_) = self {
            headers.push((header::CONNECTION, HeaderValue::from_static("close")));
        }
        if self.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            headers.push((
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate\""),
            ));
        }
        headers
    }

    /// The answer's headers and body, written as `format` says.
    pub fn rendered(
        &self,
        decision_id: &str,
        format: ErrorFormat,
    ) -> (Vec<(HeaderName, HeaderValue)>, String) {
        let mut headers = self.headers();
        if let ProxyError::McpBatch { answer, .. } = self {
            return (headers, answer.clone());
        }
        let body = self.body(decision_id);
        match format {
            ErrorFormat::Json => (headers, body.to_string()),
            ErrorFormat::S3Xml => {
                headers[0] = (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml"),
                );
                // Where AWS SDKs read a request's id from.
                if let Ok(id) = HeaderValue::from_str(decision_id) {
                    headers.push((HeaderName::from_static("x-amz-request-id"), id));
                }
                (headers, self.s3_xml(&body, decision_id))
            }
        }
    }

    pub fn to_response(&self, decision_id: &str, format: ErrorFormat) -> Response<ProxyBody> {
        let (headers, body) = self.rendered(decision_id, format);
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        response.headers_mut().extend(headers);
        response
    }

    /// The refusal of an MCP request as a JSON-RPC error answering `id`:
    /// HTTP `200`, since the exchange itself worked, with tollgate's
    /// message as the error's and its whole answer as `data`.
    pub fn to_json_rpc(
        &self,
        decision_id: &str,
        id: serde_json::Value,
        elicit: Option<(&str, &str)>,
    ) -> Response<ProxyBody> {
        let mut response = Response::new(full(self.json_rpc_answer(decision_id, id, elicit)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    /// The JSON-RPC answer to a refused MCP request: with `elicit` (the
    /// console's URL and the client's `MCP-Protocol-Version`), a pending
    /// approval as [`ProxyError::approval_elicitation`] writes it where the
    /// revision allows; otherwise [`ProxyError::json_rpc_error`].
    pub fn json_rpc_answer(
        &self,
        decision_id: &str,
        id: serde_json::Value,
        elicit: Option<(&str, &str)>,
    ) -> String {
        elicit
            .and_then(|(url, version)| {
                self.approval_elicitation(decision_id, id.clone(), url, version)
            })
            .unwrap_or_else(|| self.json_rpc_error(decision_id, id))
    }

    /// A tool call held for a pending approval, answered to an MCP client
    /// whose revision can send its user to a URL (`version`, the
    /// `MCP-Protocol-Version` it sent), with the approval console's
    /// `console_url`: 2025-11-25's URL elicitation error (`-32042`), or
    /// 2026-07-28's `input_required` result asking for the same. `None`
    /// for any other refusal or revision: [`ProxyError::json_rpc_error`].
    pub fn approval_elicitation(
        &self,
        decision_id: &str,
        id: serde_json::Value,
        console_url: &str,
        version: &str,
    ) -> Option<String> {
        let ProxyError::Denied(d) = self else {
            return None;
        };
        let approval = d
            .decision
            .approval
            .as_ref()
            .filter(|a| a.state == ApprovalState::Pending)?;
        let message = format!(
            "{}: approval {} is pending; an approver can decide it in the console, then send the call again",
            match d.decision.message.as_str() {
                "" => "this call needs a person's approval",
                m => m,
            },
            approval.id
        );
        let data = self.body(decision_id);
        let answer = match version {
            "2025-11-25" => json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": JSON_RPC_URL_ELICITATION,
                    "message": message,
                    "data": {
                        "elicitations": [{
                            "mode": "url",
                            "elicitationId": approval.id,
                            "url": console_url,
                            "message": message,
                        }],
                        "tollgate": data,
                    },
                },
            }),
            // Dated revisions compare as text.
            v if v >= "2026-07-28" => json!({
                "jsonrpc": "2.0",
                "id": id,
                "result": {
                    "resultType": "input_required",
                    "inputRequests": {
                        "tollgate-approval": {
                            "method": "elicitation/create",
                            "params": {"mode": "url", "message": message, "url": console_url},
                        },
                    },
                    "requestState": approval.id,
                    "_meta": {"tollgate": data},
                },
            }),
            _ => return None,
        };
        Some(answer.to_string())
    }

    /// The JSON-RPC error document of [`ProxyError::to_json_rpc`].
    pub fn json_rpc_error(&self, decision_id: &str, id: serde_json::Value) -> String {
        if let ProxyError::McpBatch { answer, .. } = self {
            return answer.clone();
        }
        let data = self.body(decision_id);
        let message = match data["message"].as_str() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self.to_string(),
        };
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": JSON_RPC_REFUSED, "message": message, "data": data},
        })
        .to_string()
    }

    /// S3's error document: the SDKs raise `Code` and `Message` (boto3:
    /// "An error occurred (AccessDenied) when calling the GetObject
    /// operation: …"). `RequestId` (and `x-amz-request-id`) is the
    /// decision id.
    fn s3_xml(&self, body: &serde_json::Value, decision_id: &str) -> String {
        let code = match self.status().as_u16() {
            401 | 403 | 407 | 428 => "AccessDenied",
            413 => "EntityTooLarge",
            400..=499 => "InvalidRequest",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        let message = match body["message"].as_str() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self.to_string(),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{}</Message><Reason>{}</Reason><RequestId>{}</RequestId></Error>",
            escape_markup(&message),
            escape_markup(self.reason()),
            escape_markup(decision_id),
        )
    }
}

/// `text` safe as character data or a quoted attribute value in HTML and
/// XML alike. Control characters other than tab and newline, which XML
/// does not allow, are left out.
pub(crate) fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\n' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_tools_refusals_are_s3_error_documents() {
        let err = ProxyError::CredentialInQuery(vec!["X-Amz-Signature".into()]);
        let (headers, body) = err.rendered("d-1", ErrorFormat::S3Xml);
        assert!(headers.contains(&(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml")
        )));
        assert!(headers
            .iter()
            .any(|(n, v)| n == "x-amz-request-id" && v == "d-1"));
        assert!(
            body.starts_with(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
            ),
            "{body}"
        );
        assert!(
            body.contains("<Reason>credential_in_query</Reason><RequestId>d-1</RequestId></Error>"),
            "{body}"
        );
        assert!(body.contains("(X-Amz-Signature)"), "{body}");

        // Markup in a message is text, and the code follows the status.
        let err = ProxyError::MalformedRequest("a <b> & \"c\"\u{1}".into());
        let (_, body) = err.rendered("d-2", ErrorFormat::S3Xml);
        assert!(body.contains("<Code>InvalidRequest</Code>"), "{body}");
        assert!(
            body.contains("a &lt;b&gt; &amp; &quot;c&quot;</Message>"),
            "{body}"
        );
        let (headers, json) = err.rendered("d-2", ErrorFormat::Json);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["decision_id"],
            "d-2"
        );
        assert!(!headers.iter().any(|(n, _)| n == "x-amz-request-id"));
    }
}
