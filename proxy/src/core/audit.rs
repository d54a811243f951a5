//! Audit: one JSON line per decision, written by a dedicated thread so a slow
//! disk never stalls the event loop; lines go out in batches at most a few
//! milliseconds old. The channel is bounded and `emit` blocks when it is
//! full: lines are delayed under pressure, never dropped. An output that
//! fails (full disk, closed pipe) is retried with its lines held; while it
//! fails, the decision core refuses requests (`audit.on_failure: refuse`,
//! the default) or lets them through (`forward`): see [`AuditGate`].

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::{Catalog, McpPinning, RiskClass};
use crate::config::{AuditOnFailure, AuditOutput};
use crate::decision::pins::{PinEvents, ToolChange};
use crate::decision::{Decision, Outcome, Reason, CONNECT_ACTION, WOULD_DENY};
use crate::error::ProxyError;
use crate::identity::IdentitySource;
use crate::telemetry;

use super::classify::Named;
use super::recent::{RecentDecision, RecentDecisions};
use super::{Caller, Mode};

/// One audit line. Built by the decision core as the request goes through
/// it; a front only adds what happened after the decision (the answer's
/// status, the bytes moved, what ended the exchange). Fields are private so
/// that every line is put together the same way, whichever front wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    time: String,
    decision_id: String,
    listener: Arc<str>,
    mode: Mode,
    /// Where a redirected connection was headed (transparent mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    original_destination: Option<SocketAddr>,
    workload: Option<Arc<str>>,
    /// How the workload was identified.
    identity_source: Option<IdentitySource>,
    /// Why the caller was refused an identity, for the metric.
    #[serde(skip)]
    identity_refused: Option<&'static str>,
    tool: Option<Arc<str>>,
    action: Option<Arc<str>>,
    resource: Option<String>,
    risk: Option<RiskClass>,
    sensitivity: Option<Arc<str>>,
    method: String,
    host: String,
    port: u16,
    /// Path with every query value replaced, so tokens in URLs stay out.
    path: String,
    /// `allow`, `deny`, `approval_required`, or `would_deny`: report mode
    /// forwarded a request policy denies (`reason` and `policy_ids` say
    /// why it would have been denied).
    decision: &'static str,
    reason: &'static str,
    /// The task the request ran under, when it carried a known task token.
    task: Option<String>,
    /// Query parameters removed before the request left (a task token, a
    /// parameter tollgate injects into): names as sent, never values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removed_query: Vec<String>,
    policy_ids: Vec<String>,
    /// An MCP request's message: method, tool (or prompt) name, JSON-RPC
    /// id. Never its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp: Option<AuditedMcp>,
    /// The approval asked for, or the one that decided the request, with
    /// who decided and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<AuditedApproval>,
    /// Set when something other than policy ended the request.
    error: Option<String>,
    status: u16,
    decision_us: u64,
    latency_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// `latency_us` is counted from here to the line's emission.
    #[serde(skip)]
    started: Instant,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditedMcp {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `None` for a notification.
    pub id: Option<serde_json::Value>,
    /// SHA-256 of a tool call's or prompt's arguments as JSON: tells two
    /// calls apart, and matches a server's log, without writing values
    /// that may be secrets into the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// The arguments themselves, only under `audit.mcp_arguments: full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
    /// The `MCP-Protocol-Version` the client sent: how a refusal is
    /// answered to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct AuditedApproval {
    id: String,
    state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    approver: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
}

/// What a record is about before anything is decided: the request line as
/// the front read it (empty where it could not be read).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path_and_query: &'a str,
}

impl AuditRecord {
    /// A new line for one request, with a fresh decision id. Until a
    /// decision says otherwise, it records a deny.
    pub fn of(caller: &Caller, line: RequestLine<'_>) -> AuditRecord {
        AuditRecord {
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            decision_id: uuid::Uuid::now_v7().to_string(),
            listener: caller.listener.clone(),
            mode: caller.mode,
            original_destination: caller.original_destination,
            workload: None,
            identity_source: None,
            identity_refused: None,
            tool: None,
            action: None,
            resource: None,
            risk: None,
            sensitivity: None,
            method: line.method.to_string(),
            host: line.host.to_string(),
            port: line.port,
            path: redact_query(line.path_and_query),
            decision: Outcome::Deny.as_str(),
            reason: "",
            task: None,
            removed_query: Vec::new(),
            policy_ids: Vec::new(),
            mcp: None,
            approval: None,
            error: None,
            status: 0,
            decision_us: 0,
            latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            started: Instant::now(),
        }
    }

    pub fn decision_id(&self) -> &str {
        &self.decision_id
    }

    pub fn tool(&self) -> Option<&str> {
        self.tool.as_deref()
    }

    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }

    pub fn identified(&mut self, workload: Arc<str>, source: IdentitySource) {
        self.workload = Some(workload);
        self.identity_source = Some(source);
    }

    pub fn named(&mut self, named: &Named) {
        self.tool = named.tool.clone();
        self.action = Some(named.action.clone());
        self.resource = Some(named.resource.clone());
        self.risk = Some(named.risk);
        self.sensitivity = Some(named.sensitivity.clone());
    }

    /// Query parameters the credential plan removes.
    pub fn removed_query(&mut self, names: &[String]) {
        self.removed_query = names.to_vec();
    }

    /// An MCP request's message; its arguments written whole when
    /// `full_arguments` (`audit.mcp_arguments: full`), else as a digest.
    pub fn mcp(
        &mut self,
        message: &super::mcp::McpMessage,
        protocol_version: Option<&str>,
        full_arguments: bool,
    ) {
        use super::mcp::McpMessage;
        use crate::decision::tasks::hex;
        let (name, arguments_sha256, arguments) = match message {
            McpMessage::ToolCall {
                name, arguments, ..
            }
            | McpMessage::PromptGet {
                name, arguments, ..
            } => {
                let whole = full_arguments.then(|| arguments.all());
                (Some(name.clone()), Some(hex(arguments.sha256())), whole)
            }
            _ => (None, None, None),
        };
        self.mcp = Some(AuditedMcp {
            method: message.method().to_string(),
            name,
            id: message.id().cloned(),
            arguments_sha256,
            arguments,
            protocol_version: protocol_version
                .filter(|v| v.len() <= 32)
                .map(str::to_string),
        });
    }

    /// Whether the MCP client's revision can be sent to a URL (2025-11-25
    /// and later; dated revisions compare as text).
    pub fn mcp_elicits(&self) -> bool {
        self.mcp_version().is_some_and(|v| v >= "2025-11-25")
    }

    /// The `MCP-Protocol-Version` of the MCP request this line is about.
    pub fn mcp_version(&self) -> Option<&str> {
        self.mcp.as_ref()?.protocol_version.as_deref()
    }

    /// The MCP message this line is about, if any.
    pub fn mcp_message(&self) -> Option<&AuditedMcp> {
        self.mcp.as_ref()
    }

    /// The denial's reason when report mode let this request through.
    pub fn would_deny(&self) -> Option<&'static str> {
        (self.decision == WOULD_DENY).then_some(self.reason)
    }

    pub fn decided(&mut self, decision: &Decision, took: Duration) {
        self.decision = decision.logged_as();
        self.reason = decision.reason.as_str();
        self.policy_ids = decision.policy_ids.clone();
        self.task = decision.task.as_ref().map(|t| t.id.clone());
        self.approval = decision.approval.as_ref().map(|a| AuditedApproval {
            id: a.id.clone(),
            state: a.state.as_str(),
            approver: a.approver.clone(),
            reason: a.reason.clone(),
        });
        self.decision_us = took.as_micros() as u64;
    }

    /// The approval that decided this request, if one did.
    pub fn approval_id(&self) -> Option<&str> {
        self.approval.as_ref().map(|a| a.id.as_str())
    }

    /// An error ended the request, with the status its answer carries. A
    /// refusal before any decision (no identity, malformed input) is
    /// recorded as a deny.
    pub fn refused(&mut self, err: &ProxyError) {
        self.status = err.status().as_u16();
        if let ProxyError::Identity(e) = err {
            self.identity_refused = Some(e.reason());
        }
        match err {
            ProxyError::Denied(_) => {}
            ProxyError::DestinationBlocked { .. }
            | ProxyError::DestinationMismatch(_)
            | ProxyError::CredentialInQuery(_)
            | ProxyError::CredentialNotBound(_) => {
                self.decision = Outcome::Deny.as_str();
                self.reason = err.reason();
                self.error = Some(err.to_string());
            }
            _ => {
                if self.reason.is_empty() {
                    self.reason = err.reason();
                }
                self.error = Some(err.to_string());
            }
        }
    }

    /// The status of the answer the agent got.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }

    /// Bytes moved each way: request and response bodies, or both
    /// directions of a tunnel.
    pub fn moved(&mut self, from_agent: u64, from_upstream: u64) {
        self.bytes_in = from_agent;
        self.bytes_out = from_upstream;
    }

    /// What ended the exchange early, after it was allowed.
    pub fn ended_by(&mut self, error: Option<String>) {
        self.error = error;
    }

    /// The fields a person scanning recent decisions wants.
    fn summary(&self) -> RecentDecision {
        RecentDecision {
            time: self.time.clone(),
            decision_id: self.decision_id.clone(),
            workload: self.workload.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            decision: self.decision,
            reason: self.reason,
            status: self.status,
            task: self.task.clone(),
            approval: self.approval.as_ref().map(|a| a.id.clone()),
            approver: self
                .approval
                .as_ref()
                .map(|a| a.approver.clone())
                .filter(|name| !name.is_empty()),
        }
    }
}

/// Register the request counter at zero for every action the catalog names
/// (and the built-in `connect`) with every outcome and `would_deny`, the
/// would-deny counter for every tool and reportable reason, and the tool
/// change counter for every tool with a pinned MCP server, so an alert on
/// denies of one action reads 0 before the first one. Series already there
/// keep their counts; the set is bounded by the catalog, as the counts are.
pub fn register_request_series(catalog: &Catalog) {
    let actions = catalog.actions();
    let named = actions
        .iter()
        .map(|a| (a.tool.as_ref(), a.name.as_ref()))
        .chain([("", CONNECT_ACTION)]);
    let decisions = Outcome::ALL.map(Outcome::as_str);
    for (tool, action) in named {
        for decision in decisions.iter().chain([&WOULD_DENY]) {
            metrics::counter!(
                telemetry::REQUESTS,
                "tool" => tool.to_string(),
                "action" => action.to_string(),
                "decision" => *decision,
            )
            .increment(0);
        }
    }
    let mut tools: Vec<&str> = actions.iter().map(|a| a.tool.as_ref()).collect();
    tools.push("");
    tools.sort_unstable();
    tools.dedup();
    for tool in tools {
        for reason in Reason::REPORTABLE {
            metrics::counter!(
                telemetry::WOULD_DENY,
                "tool" => tool.to_string(),
                "reason" => reason.as_str(),
            )
            .increment(0);
        }
    }
    for tool in catalog.tools() {
        if catalog.mcp_pinning(&tool) != McpPinning::Off {
            metrics::counter!(telemetry::MCP_TOOL_CHANGES, "tool" => tool.to_string()).increment(0);
        }
    }
}

/// One identification series per identity source, and the refusal of a
/// caller who presented nothing, at zero: an alert on `mtls` dropping to
/// nothing, or on refusals, reads 0 before the first request. (Refusals
/// for other reasons appear when they happen.)
pub fn register_identification_series() {
    for source in IdentitySource::ALL {
        metrics::counter!(telemetry::IDENTIFICATIONS, "source" => source.as_str(), "outcome" => "identified")
            .increment(0);
    }
    metrics::counter!(telemetry::IDENTIFICATIONS, "source" => "none", "outcome" => "unidentified")
        .increment(0);
}

/// `/p?token=abc&x=1` → `/p?token=[redacted]&x=[redacted]`.
pub fn redact_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=[redacted]"),
            None => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

const LINE_CAPACITY: usize = 768;

mod writer;

/// The audit output could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit output {path}: {error}{hint}")]
pub struct AuditOpenError {
    path: String,
    error: std::io::Error,
    hint: &'static str,
}

#[derive(Clone)]
pub struct AuditSink {
    lines: SyncSender<Vec<u8>>,
    /// `audit.mcp_arguments: full`.
    mcp_arguments: bool,
    /// Where the approval console reads recent decisions, when it is on.
    recent: Option<Arc<RecentDecisions>>,
    gate: AuditGate,
}

/// Whether requests may go on while the audit output fails: what the
/// decision core asks before deciding anything.
#[derive(Clone, Default)]
pub struct AuditGate {
    /// Set under `on_failure: refuse`.
    refuse_while: Option<Arc<writer::Health>>,
}

impl AuditGate {
    /// Refused while the output is failing and the policy says refuse.
    pub fn check(&self) -> Result<(), ProxyError> {
        match &self.refuse_while {
            Some(health) if health.failing() => Err(ProxyError::AuditUnavailable),
            _ => Ok(()),
        }
    }
}

impl AuditSink {
    /// Open the output (failing here, at start, rather than losing lines
    /// later) and start the writer thread.
    pub fn start(
        output: &AuditOutput,
        on_failure: AuditOnFailure,
    ) -> Result<AuditSink, AuditOpenError> {
        let (writer, path): (Box<dyn Write + Send>, _) = match output {
            AuditOutput::Stdout => (Box::new(std::io::stdout()), None),
            AuditOutput::File(path) => {
                let file = writer::open(path, true).map_err(|error| AuditOpenError {
                    path: path.display().to_string(),
                    hint: match error.raw_os_error() {
                        Some(libc::ENXIO) => " (a named pipe needs its reader running first)",
                        _ => "",
                    },
                    error,
                })?;
                (Box::new(file), Some(path.clone()))
            }
        };
        let health = Arc::new(writer::Health::default());
        let output = writer::Output {
            writer,
            path,
            forwarding: on_failure == AuditOnFailure::Forward,
        };
        let (lines, rx) = sync_channel(16 * 1024);
        let thread_health = health.clone();
        std::thread::Builder::new()
            .name("tollgate-audit".into())
            .spawn(move || writer::run(rx, output, thread_health))
            .map_err(|error| AuditOpenError {
                path: "(writer thread)".into(),
                error,
                hint: "",
            })?;
        Ok(AuditSink {
            lines,
            mcp_arguments: false,
            recent: None,
            gate: AuditGate {
                refuse_while: (on_failure == AuditOnFailure::Refuse).then_some(health),
            },
        })
    }

    /// What the decision core checks before deciding.
    pub fn gate(&self) -> AuditGate {
        self.gate.clone()
    }

    /// Write MCP calls' arguments whole (`audit.mcp_arguments: full`).
    pub fn with_mcp_arguments(mut self, full: bool) -> AuditSink {
        self.mcp_arguments = full;
        self
    }

    /// Whether MCP calls' arguments are written whole.
    pub fn mcp_arguments(&self) -> bool {
        self.mcp_arguments
    }

    /// Also keep each line's key fields in `recent`.
    pub fn with_recent(mut self, recent: Arc<RecentDecisions>) -> AuditSink {
        self.recent = Some(recent);
        self
    }

    /// A line of its own for an MCP tool pin's `event` (`server`: the MCP
    /// server's catalog tool): `mcp_tool_changed`, a definition differs
    /// from the pin; `mcp_tool_accepted`, an operator pinned what is
    /// served now. Fingerprints, never the definitions.
    pub fn emit_tool_pin(
        &self,
        event: &'static str,
        server: &str,
        change: &ToolChange,
        pinning: McpPinning,
    ) {
        self.pin_event(event, server, change, pinning);
    }
}

impl PinEvents for AuditSink {
    fn pin_event(
        &self,
        event: &'static str,
        server: &str,
        change: &ToolChange,
        pinning: McpPinning,
    ) {
        #[derive(Serialize)]
        struct ToolChangeLine<'a> {
            time: String,
            event: &'static str,
            tool: &'a str,
            mcp: ToolChangeName<'a>,
            pinned_sha256: &'a str,
            seen_sha256: &'a str,
            pinning: McpPinning,
        }
        #[derive(Serialize)]
        struct ToolChangeName<'a> {
            name: &'a str,
        }
        let line = ToolChangeLine {
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            event,
            tool: server,
            mcp: ToolChangeName { name: &change.name },
            pinned_sha256: &change.pinned,
            seen_sha256: &change.seen,
            pinning,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        if self.lines.send(bytes).is_err() {
            tracing::error!("audit writer has stopped; audit line lost");
        }
    }
}

impl AuditSink {
    /// Write the line; its latency is the time since it was begun.
    pub fn emit(&self, mut record: AuditRecord) {
        record.latency_us = record.started.elapsed().as_micros() as u64;
        // Shared, not copied: label values are the catalog's own strings.
        let label = |v: &Option<Arc<str>>| {
            v.clone().map_or(
                metrics::SharedString::const_str(""),
                metrics::SharedString::from,
            )
        };
        metrics::counter!(
            telemetry::REQUESTS,
            "tool" => label(&record.tool),
            "action" => label(&record.action),
            "decision" => record.decision,
        )
        .increment(1);
        if let Some(reason) = record.would_deny() {
            metrics::counter!(
                telemetry::WOULD_DENY,
                "tool" => label(&record.tool),
                "reason" => reason,
            )
            .increment(1);
        }
        // One count per request, however its connection was identified.
        let identification = match (record.identity_source, record.identity_refused) {
            (Some(source), _) => Some((source.as_str(), "identified")),
            (None, Some(reason)) => Some(("none", reason)),
            (None, None) => None,
        };
        if let Some((source, outcome)) = identification {
            metrics::counter!(telemetry::IDENTIFICATIONS, "source" => source, "outcome" => outcome)
                .increment(1);
        }
        if let Some(recent) = &self.recent {
            recent.push(record.summary());
        }
        // A typical line is about 520 bytes: sized once instead of grown
        // (and copied) from serde_json's 128 three times.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        if let Err(e) = serde_json::to_writer(&mut line, &record) {
            tracing::error!(error = %e, "audit record did not serialize");
            return;
        }
        line.push(b'\n');
        if self.lines.send(line).is_err() {
            tracing::error!("audit writer has stopped; audit line lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(
            redact_query("/a?token=s3cr3t&flag&x=1"),
            "/a?token=[redacted]&flag&x=[redacted]"
        );
    }
}
