//! The decision core: the one sequence every front runs a request through.
//!
//! identify → classify → task → decide → credential plan → audit record
//!
//! Fronts only adapt. The explicit proxy, intercepted tunnels, blind
//! tunnels, Envoy's `Check`, the gRPC `Decide` and `tollgate check` each turn
//! what they received into an [`Inbound`] (or a target, or an already named
//! request), load the snapshot once, and render the [`Verdict`] in their own
//! terms: the proxy applies the credential plan to the outgoing request,
//! ext_authz renders it into Envoy's answer, `check` prints it. So every
//! front gives the same answer, reason, audit line and metrics for the same
//! request, and the request is named and decided against one snapshot.

pub mod audit;
pub mod classify;
pub mod mcp;
pub mod plan;
pub mod recent;
#[cfg(test)]
mod tests;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, Uri};

use crate::catalog::{McpPinning, McpServerRef, QueryCredentialRule};
use crate::decision::approvals::{BodyDigest, HeldCall};
use crate::decision::snapshot::Snapshot;
use crate::decision::{
    ApprovalState, Decision, DecisionRequest, Outcome, RequestContext, SharedDecider, TokenHash,
};
use crate::error::ProxyError;
use crate::identity::{CallerIdentity, Identity};
use crate::telemetry;

use audit::{AuditRecord, RequestLine};
use classify::{Named, RequestTarget};
use plan::{CredentialPlan, QueryCredentials, AGENT_CREDENTIAL_QUERY};

/// How a request reached tollgate: the audit line's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// An absolute-form request to the explicit proxy.
    Http,
    /// A request read inside an intercepted `CONNECT` tunnel.
    Intercept,
    /// A `CONNECT` to a host the catalog does not cover, relayed blind.
    Tunnel,
    /// A connection iptables redirected to a transparent listener: its
    /// requests, or the connection itself when it is relayed blind.
    Transparent,
    /// Envoy's ext_authz `Check`.
    ExtAuthz,
    /// tollgate's own gRPC `Decide`, from a proxy deciding remotely.
    Decide,
    /// `tollgate check`, offline.
    Check,
}

/// Who is asking, as the front knows it before reading the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The listener (or front) name the audit line carries.
    pub listener: Arc<str>,
    pub mode: Mode,
    /// What the caller presented before the request (a certificate, the
    /// front's own knowledge) and how its requests' headers are checked.
    pub identity: CallerIdentity,
    /// A task token presented for the whole connection (a `CONNECT`'s
    /// `Proxy-Authorization`), for requests that carry none themselves.
    pub connect_task: Option<TokenHash>,
    /// Where a redirected connection was headed before iptables sent it
    /// to a transparent listener.
    pub original_destination: Option<SocketAddr>,
}

/// An HTTP request, as far as deciding it goes.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'r> {
    pub target: &'r RequestTarget,
    pub method: &'r Method,
    /// The path and query (the rest of the URI is ignored).
    pub uri: &'r Uri,
    pub headers: &'r HeaderMap,
    /// Set when the front holds the request (its body read) because an
    /// approval gate stopped it: see [`Core::held`].
    pub held: Option<&'r HeldCall>,
    /// The body, read before deciding where [`Core::reads_body`] says the
    /// decision depends on it (an MCP message).
    pub body: Option<&'r [u8]>,
}

/// What the core says about one request: its audit record (the front adds
/// what happens next and writes it) and either what to send or why not.
#[derive(Debug)]
pub struct Verdict<'s> {
    pub record: AuditRecord,
    pub outcome: Result<Allowed<'s>, ProxyError>,
}

impl Verdict<'_> {
    /// An approval gate stopped the request and no approval was asked for
    /// yet: the front must read the body and decide it again as held
    /// ([`Core::held`]), or refuse it as it stands.
    pub fn needs_holding(&self) -> bool {
        matches!(&self.outcome, Err(ProxyError::Denied(d))
            if d.decision.outcome == Outcome::ApprovalRequired && d.decision.approval.is_none())
    }

    /// What the approval of this request is bound to, its body read: the
    /// body's digest, or for an MCP message that of the message without
    /// its JSON-RPC id and `_meta` (which a client changes each time it
    /// sends the same call), so the call sent again after its approval is
    /// the call approved.
    pub fn held_call(&self, body: &[u8], query: &str) -> HeldCall {
        let digest = self
            .record
            .mcp_message()
            .and_then(|_| mcp::call_digest(body))
            .map_or_else(|| BodyDigest::of(body), BodyDigest);
        HeldCall {
            body: digest,
            query: query.to_string(),
        }
    }

    /// Whether a refusal of this request can send the client's user to
    /// `console_url` (an MCP client of a revision with URL elicitation):
    /// such a request is answered at once rather than held.
    pub fn elicits(&self, console_url: Option<&str>) -> bool {
        console_url.is_some() && self.record.mcp_elicits()
    }

    /// The approval this request waits for, while it is pending.
    fn pending_approval(&self) -> Option<&str> {
        match &self.outcome {
            Err(ProxyError::Denied(d)) if d.decision.outcome == Outcome::ApprovalRequired => d
                .decision
                .approval
                .as_ref()
                .filter(|a| a.state == ApprovalState::Pending)
                .map(|a| a.id.as_str()),
            _ => None,
        }
    }
}

/// A held request after waiting for its approval.
#[derive(Debug)]
pub enum Held<'s> {
    /// The answer: allowed at once (approved before), denied, or still
    /// pending when the hold ran out.
    Answered(Box<Verdict<'s>>),
    /// A person decided while it was held: decide it once more, with the
    /// snapshot of now, so a forbid added meanwhile still wins.
    Decided,
}

/// An allowed request: the decision, the task token it ran under and the
/// credential plan, from the snapshot it was named with.
#[derive(Debug)]
pub struct Allowed<'s> {
    pub decision: Decision,
    /// The catalog tool it was named as (`None`: a host the catalog does
    /// not cover).
    pub tool: Option<Arc<str>>,
    /// The task token the request presented, when it names a real task.
    pub task: Option<TokenHash>,
    pub credentials: CredentialPlan<'s>,
    /// For an MCP `tools/list`: the tools to leave out of the server's
    /// answer, which the front filters.
    pub tool_list: Option<ToolList>,
}

/// Which tools an MCP server's `tools/list` answer may show the workload:
/// not a tool every call of which policy would deny. The default shows
/// every tool. And where the definitions listed are recorded against their
/// pins, unless the server's pinning is off.
#[derive(Debug, Default)]
pub struct ToolList {
    pub pins: Option<ToolPins>,
    /// Listed in the catalog and never allowed.
    hidden: std::collections::HashSet<Box<str>>,
    /// Whether the tools the catalog does not list are never allowed.
    unlisted_hidden: bool,
    /// Those the catalog lists.
    listed: std::collections::HashSet<Box<str>>,
}

impl ToolList {
    /// The tools named `hidden` left out, and the others shown unless
    /// `unlisted_hidden`.
    #[cfg(test)]
    pub fn hiding<'a>(hidden: impl Iterator<Item = &'a str>, unlisted_hidden: bool) -> ToolList {
        let hidden: std::collections::HashSet<Box<str>> = hidden.map(Box::from).collect();
        ToolList {
            listed: hidden.clone(),
            hidden,
            unlisted_hidden,
            pins: None,
        }
    }

    pub fn shows(&self, name: &str) -> bool {
        if self.listed.contains(name) {
            !self.hidden.contains(name)
        } else {
            !self.unlisted_hidden
        }
    }
}

/// Where an MCP server's listed tool definitions go: the decider that
/// keeps the pins, under the server's catalog tool.
#[derive(Clone)]
pub struct ToolPins {
    pub decider: SharedDecider,
    pub server: Arc<str>,
    pub pinning: McpPinning,
}

impl std::fmt::Debug for ToolPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolPins")
            .field("server", &self.server)
            .field("pinning", &self.pinning)
            .finish_non_exhaustive()
    }
}

impl ToolPins {
    /// Record the definitions a listing showed ([`mcp::tool_definitions`]).
    /// A store that cannot record them is logged and the listing goes on:
    /// it is what an agent plans with, and each call is still decided.
    pub async fn record(&self, tools: &[crate::decision::ObservedTool]) {
        if tools.is_empty() {
            return;
        }
        if let Err(error) = self
            .decider
            .observe_tools(&self.server, self.pinning, tools)
            .await
        {
            tracing::warn!(tool = %self.server, %error, "MCP tool definitions not recorded");
        }
    }
}

/// The request's workload, from what the caller presented and the
/// request's headers: refused (`407`) without one, or when what it
/// presented fails verification.
pub async fn identify(
    caller: &Caller,
    headers: Option<&HeaderMap>,
) -> Result<Arc<Identity>, ProxyError> {
    caller.identity.resolve(headers).await.map_err(|err| {
        tracing::info!(listener = %caller.listener, reason = err.reason(), "caller not identified");
        ProxyError::Identity(err)
    })
}

/// The audit record of a request refused before it could be decided (its
/// target unreadable, its caller unidentified on `CONNECT`).
pub fn refused(caller: &Caller, line: RequestLine<'_>, err: &ProxyError) -> AuditRecord {
    let mut record = AuditRecord::of(caller, line);
    record.refused(err);
    record
}

/// What a request is decided as: read from an HTTP request, or the
/// built-in `connect` on a tunnel's host:port.
enum Subject<'r> {
    /// With the message of a JSON-RPC batch it is decided as.
    Http(Inbound<'r>, Option<usize>),
    Tunnel(&'r RequestTarget),
}

/// Decides through whichever decider the process uses.
pub struct Core {
    decider: SharedDecider,
    /// Asked before deciding: requests wait out a failing audit output.
    audit: audit::AuditGate,
    /// Where the lines of a batch's messages go, but the first's.
    sink: Option<audit::AuditSink>,
}

impl Core {
    pub fn new(decider: SharedDecider) -> Core {
        Core {
            decider,
            audit: audit::AuditGate::default(),
            sink: None,
        }
    }

    /// Refuse requests while `sink`'s output fails, and write the audit
    /// lines of a batch's messages there.
    pub fn audited_by(self, sink: audit::AuditSink) -> Core {
        Core {
            audit: sink.gate(),
            sink: Some(sink),
            ..self
        }
    }

    pub fn decider(&self) -> &SharedDecider {
        &self.decider
    }

    /// An HTTP request: the explicit proxy, an intercepted tunnel, Envoy's
    /// `Check`, `tollgate check`.
    pub async fn http<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        request: Inbound<'_>,
    ) -> Verdict<'s> {
        let line = RequestLine {
            method: request.method.as_str(),
            host: &request.target.host,
            port: request.target.port,
            path_and_query: request.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        };
        if let Some(messages) = self.batch_size(snapshot, &request) {
            return self.batch(snapshot, caller, line, request, messages).await;
        }
        self.run(snapshot, caller, line, Subject::Http(request, None))
            .await
    }

    /// How many messages the request's body has, when it is a JSON-RPC
    /// batch to an MCP server. A body that cannot be read is left to the
    /// one-message path, which refuses it saying why.
    fn batch_size(&self, snapshot: &Snapshot, request: &Inbound<'_>) -> Option<usize> {
        let body = request.body.filter(|b| mcp::is_batch(b))?;
        snapshot
            .catalog
            .mcp_server(&request.target.host, request.uri.path())?;
        Some(
            mcp::read(body, &mcp::McpLimits::default())
                .ok()?
                .messages
                .len(),
        )
    }

    /// A JSON-RPC batch: each message named, decided and recorded on its
    /// own (its own audit line). All allowed, it goes as one request under
    /// the first's verdict. One refused, none is sent: the answer is a
    /// batch with each refusal, and a "not sent" error for each allowed
    /// message that has an id.
    async fn batch<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        line: RequestLine<'_>,
        request: Inbound<'_>,
        messages: usize,
    ) -> Verdict<'s> {
        let mut verdicts = Vec::with_capacity(messages);
        for element in 0..messages {
            let subject = Subject::Http(request, Some(element));
            verdicts.push(self.run(snapshot, caller, line, subject).await);
        }
        let credentials: Vec<Option<&str>> = verdicts
            .iter()
            .filter_map(|v| v.outcome.as_ref().ok())
            .map(|a| a.decision.credential.as_deref())
            .collect();
        let refused = verdicts.iter().position(|v| v.outcome.is_err());
        let mixed = credentials.windows(2).any(|w| w[0] != w[1]);
        let mut verdicts = verdicts.into_iter();
        let mut first = verdicts.next().expect("a batch has a message");
        let mut rest: Vec<Verdict<'s>> = verdicts.collect();
        if refused.is_none() && !mixed {
            let listing = rest
                .iter_mut()
                .find_map(|v| v.outcome.as_mut().ok()?.tool_list.take());
            if let Ok(allowed) = &mut first.outcome {
                allowed.tool_list = allowed.tool_list.take().or(listing);
            }
            self.emit(rest.into_iter().map(|v| v.record));
            return first;
        }
        let why = match refused {
            Some(i) => format!(
                "message {} of the JSON-RPC batch was refused ({}), so none was sent",
                i + 1,
                verdicts_reason(&first, &rest, i)
            ),
            None => "the messages of the JSON-RPC batch need different credentials, \
                     so none was sent: send them one by one"
                .to_string(),
        };
        let mut answers = Vec::new();
        let mut records = Vec::with_capacity(messages);
        for verdict in std::iter::once(first).chain(rest) {
            let Verdict { record, outcome } = verdict;
            let id = record.mcp_message().and_then(|m| m.id.clone());
            let answer = match &outcome {
                Err(err) => {
                    serde_json::from_str(&err.json_rpc_error(record.decision_id(), json_null(&id)))
                        .unwrap_or_default()
                }
                Ok(_) => serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": json_null(&id),
                    "error": {"code": crate::error::JSON_RPC_REFUSED, "message": why,
                              "data": {"reason": "mcp_batch_refused", "decision_id": record.decision_id()}},
                }),
            };
            if id.is_some() {
                answers.push(answer);
            }
            records.push((record, outcome.err()));
        }
        let no_answer = answers.is_empty();
        let batch = ProxyError::McpBatch {
            answer: serde_json::Value::Array(answers).to_string(),
            message: why,
        };
        for (record, own) in &mut records {
            match own {
                // Refused on its own: its line says so already, and its
                // refusal is answered in the batch's.
                Some(_) if !no_answer => record.answered(batch.status().as_u16()),
                Some(_) => {}
                None => record.refused(&batch),
            }
        }
        let mut records = records.into_iter();
        let (first, own) = records.next().expect("a batch has a message");
        self.emit(records.map(|(record, _)| record));
        // Only notifications: no answer is due, and the first refusal is
        // answered as a request's would be.
        let outcome = match (no_answer, own) {
            (true, Some(err)) => Err(err),
            _ => Err(batch),
        };
        Verdict {
            record: first,
            outcome,
        }
    }

    /// Write the audit lines of a batch's other messages; the front writes
    /// the first's with what becomes of the exchange.
    fn emit(&self, records: impl Iterator<Item = AuditRecord>) {
        for record in records {
            match &self.sink {
                Some(sink) => sink.emit(record),
                None => tracing::debug!(
                    decision_id = record.decision_id(),
                    "no audit sink for a batch message"
                ),
            }
        }
    }

    /// A request an approval gate stopped, its body read (`request.held`
    /// set): decided again, which asks for the approval of this exact call
    /// or finds it; while it is pending, wait up to `hold` on the decision
    /// plane's stream of verdicts.
    pub async fn held<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        request: Inbound<'_>,
        hold: std::time::Duration,
    ) -> Held<'s> {
        let verdict = self.http(snapshot, caller, request).await;
        let Some(id) = verdict.pending_approval().filter(|_| !hold.is_zero()) else {
            return Held::Answered(Box::new(verdict));
        };
        tracing::debug!(approval = id, hold = ?hold, "holding a request for its approval");
        let held = metrics::gauge!(telemetry::HELD_REQUESTS);
        held.increment(1.0);
        // Decremented however the wait ends, the agent leaving included.
        let _release = scopeguard(move || held.decrement(1.0));
        match self.decider.await_approval(id, hold).await {
            Some(status) if status.state != ApprovalState::Pending => Held::Decided,
            _ => Held::Answered(Box::new(verdict)),
        }
    }

    /// Whether a request is decided on its body, which the front must then
    /// read (within [`mcp::McpLimits`]) and pass as [`Inbound::body`]: a
    /// POST to an MCP server the catalog declares.
    pub fn reads_body(
        &self,
        snapshot: &Snapshot,
        target: &RequestTarget,
        method: &Method,
        uri: &Uri,
    ) -> bool {
        method == Method::POST
            && snapshot
                .catalog
                .mcp_server(&target.host, uri.path())
                .is_some()
    }

    /// A `CONNECT` decided on host:port alone, as the built-in `connect`.
    pub async fn tunnel<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        target: &RequestTarget,
    ) -> Verdict<'s> {
        let line = RequestLine {
            method: Method::CONNECT.as_str(),
            host: &target.host,
            port: target.port,
            path_and_query: "",
        };
        self.run(snapshot, caller, line, Subject::Tunnel(target))
            .await
    }

    /// A request a proxy deciding remotely has identified and named already
    /// (the gRPC `Decide`): decided and recorded like any other. The
    /// credential is only named; the proxy holding the secrets plans it.
    pub async fn named(
        &self,
        snapshot: &Snapshot,
        caller: &Caller,
        request: &DecisionRequest,
    ) -> (AuditRecord, Decision) {
        let context = &request.context;
        let line = RequestLine {
            method: &context.method,
            host: &context.host,
            port: context.port,
            path_and_query: &context.path,
        };
        let mut record = AuditRecord::of(caller, line);
        record.identified(
            Arc::from(request.principal.as_str()),
            request.attributes.source,
        );
        record.named(&Named::of_request(request));
        let decision = self.decide(snapshot, request, &mut record).await;
        if decision.is_allow() {
            record.answered(http::StatusCode::OK.as_u16());
        } else {
            record.refused(&ProxyError::denied(&request.action, decision.clone()));
        }
        (record, decision)
    }

    async fn run<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        line: RequestLine<'_>,
        subject: Subject<'_>,
    ) -> Verdict<'s> {
        let mut record = AuditRecord::of(caller, line);
        let outcome = self.sequence(snapshot, caller, &mut record, subject).await;
        // Allowed means 200 until a front that forwards records the
        // upstream's answer (or a later refusal) instead.
        match &outcome {
            Ok(_) => record.answered(http::StatusCode::OK.as_u16()),
            Err(err) => record.refused(err),
        }
        Verdict { record, outcome }
    }

    async fn sequence<'s>(
        &self,
        snapshot: &'s Snapshot,
        caller: &Caller,
        record: &mut AuditRecord,
        subject: Subject<'_>,
    ) -> Result<Allowed<'s>, ProxyError> {
        let headers = match &subject {
            Subject::Http(r, _) => Some(r.headers),
            Subject::Tunnel(_) => None,
        };
        let workload = identify(caller, headers).await?;
        record.identified(workload.name.clone(), workload.source());
        let mut listing = None;

        let (named, target, method, path, headers) = match subject {
            Subject::Http(r, element) => {
                let catalog = &snapshot.catalog;
                let call = classify::read_mcp(catalog, r.target, r.method, r.uri, r.body, element)?;
                let named = match call {
                    Some(call) => {
                        // Recorded first: a refusal of the call answers its id.
                        if let Some(message) = call.message() {
                            let version = r
                                .headers
                                .get("mcp-protocol-version")
                                .and_then(|v| v.to_str().ok());
                            let full = self.sink.as_ref().is_some_and(|s| s.mcp_arguments());
                            record.mcp(message, version, full);
                        }
                        listing = call.lists_tools();
                        call.named()?
                    }
                    None => classify::classify(catalog, r.target, r.method, r.uri, r.headers)?,
                };
                (named, r.target, r.method, r.uri.path(), Some(r.headers))
            }
            Subject::Tunnel(target) => (Named::connect(target), target, &Method::CONNECT, "", None),
        };
        record.named(&named);
        // Named, so the refusal's line says what was refused, but not
        // decided: a decision may use up an approval or a task's budget.
        self.audit.check()?;

        let query = match &subject {
            Subject::Http(r, _) => query_credentials(snapshot, &named, r.uri)?,
            Subject::Tunnel(_) => QueryCredentials::default(),
        };
        // The task whose token the request (or, inside a tunnel, its
        // CONNECT) carried.
        let tool_headers = named.credential_headers(&snapshot.catalog);
        let task = headers
            .and_then(|h| token::from_headers(h, tool_headers))
            .or(query.task)
            .or(caller.connect_task);

        let request = DecisionRequest {
            principal: workload.name.to_string(),
            attributes: workload.attributes.clone(),
            action: named.action.to_string(),
            resource: named.resource.clone(),
            context: RequestContext {
                method: method.as_str().to_string(),
                host: target.host.clone(),
                port: target.port,
                path: path.to_string(),
                tool: named.tool.as_deref().unwrap_or("").to_string(),
                risk: named.risk,
                sensitivity: named.sensitivity.to_string(),
                arguments: named.arguments.clone(),
                mcp_tool: named.mcp_tool.clone(),
            },
            task,
            held: match &subject {
                Subject::Http(r, _) => r.held.cloned(),
                Subject::Tunnel(_) => None,
            },
        };
        let decision = self.decide(snapshot, &request, record).await;
        if !decision.is_allow() {
            return Err(ProxyError::denied(&*named.action, decision));
        }
        // The binding is checked before anything is sent: a policy naming a
        // credential for another tool refuses the request.
        let credentials = CredentialPlan::new(
            &snapshot.credentials,
            named.tool.as_deref(),
            tool_headers,
            query.strip,
            decision.credential.as_deref(),
        )?;
        record.removed_query(credentials.strip_query());
        let tool_list = match listing {
            Some(server) => Some(self.tool_list(snapshot, &request, server).await),
            None => None,
        };
        Ok(Allowed {
            tool_list,
            tool: named.tool.clone(),
            // Only tokens of real tasks: a made-up one must not be tracked.
            task: task.filter(|_| decision.task.is_some()),
            decision,
            credentials,
        })
    }

    /// Which of `server`'s tools `listing`'s workload may see: the action
    /// of each tool the catalog lists, and that of the tools it does not.
    async fn tool_list(
        &self,
        snapshot: &Snapshot,
        listing: &DecisionRequest,
        server: McpServerRef<'_>,
    ) -> ToolList {
        let probe = |c: crate::catalog::Classification| DecisionRequest {
            action: c.action.to_string(),
            resource: c.resource,
            context: RequestContext {
                tool: c.tool.to_string(),
                risk: c.risk,
                sensitivity: c.sensitivity.to_string(),
                arguments: None,
                mcp_tool: None,
                ..listing.context.clone()
            },
            held: None,
            ..listing.clone()
        };
        let pins = (server.pinning() != McpPinning::Off).then(|| ToolPins {
            decider: self.decider.clone(),
            server: Arc::from(server.tool()),
            pinning: server.pinning(),
        });
        let mut listed = Vec::new();
        // One at a time: a listing is rare, and a remote decider's answers
        // come over one channel anyway. One it cannot ask shows the whole
        // list at once rather than waiting out every question.
        for (name, c) in server.listed() {
            match self.decider.may_allow(snapshot, &probe(c)).await {
                Some(shown) => listed.push((name, shown)),
                None => {
                    return ToolList {
                        pins,
                        ..ToolList::default()
                    }
                }
            }
        }
        let unlisted_shown = self
            .decider
            .may_allow(snapshot, &probe(server.unlisted()))
            .await
            .unwrap_or(true);
        ToolList {
            pins,
            hidden: listed
                .iter()
                .filter(|(_, shown)| !shown)
                .map(|(name, _)| Box::from(*name))
                .collect(),
            unlisted_hidden: !unlisted_shown,
            listed: listed.iter().map(|(name, _)| Box::from(*name)).collect(),
        }
    }

    /// Decide, timed: the figure goes to the record and to the one
    /// histogram every front shares.
    async fn decide(
        &self,
        snapshot: &Snapshot,
        request: &DecisionRequest,
        record: &mut AuditRecord,
    ) -> Decision {
        let started = Instant::now();
        let decision = self.decider.decide(snapshot, request).await;
        let took = started.elapsed();
        metrics::histogram!(telemetry::DECISION_DURATION).record(took.as_secs_f64());
        record.decided(&decision, took);
        decision
    }
}

/// The credentials in the request's query string: the tool's own
/// parameters (the catalog's `credential_query`), the ones every tool has,
/// and the ones tollgate injects into for this tool. One the agent holds
/// refuses the request before anything is decided, unless the tool's
/// catalog forwards them (`agent_query_credentials: forward`).
fn query_credentials(
    snapshot: &Snapshot,
    named: &Named,
    uri: &Uri,
) -> Result<QueryCredentials, ProxyError> {
    let Some(query) = uri.query() else {
        return Ok(QueryCredentials::default());
    };
    let tool = named.tool.as_deref().unwrap_or("");
    let (own, rule) = snapshot
        .catalog
        .credential_query(tool)
        .unwrap_or((&[], QueryCredentialRule::Refuse));
    let mut names: Vec<&str> = AGENT_CREDENTIAL_QUERY.to_vec();
    names.extend(own.iter().map(String::as_str));
    let found = QueryCredentials::scan(query, &names, &snapshot.credentials.query_params(tool));
    if !found.held.is_empty() && rule == QueryCredentialRule::Refuse {
        return Err(ProxyError::CredentialInQuery(found.held));
    }
    Ok(found)
}

/// The reason message `i` of a batch was refused for.
fn verdicts_reason(first: &Verdict<'_>, rest: &[Verdict<'_>], i: usize) -> &'static str {
    let verdict = if i == 0 { first } else { &rest[i - 1] };
    verdict
        .outcome
        .as_ref()
        .err()
        .map_or("", ProxyError::reason)
}

/// A JSON-RPC id, `null` where there is none.
fn json_null(id: &Option<serde_json::Value>) -> serde_json::Value {
    id.clone().unwrap_or(serde_json::Value::Null)
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
