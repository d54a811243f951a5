//! The data plane's fronts: the explicit proxy listener, intercepted
//! `CONNECT` tunnels, blind tunnels. A request flows
//!
//! accept → (intercept) → core: identify · classify · decide · plan →
//! credentials applied → forward → audit
//!
//! `accept` owns the sockets and hands each request (plain, or read from
//! inside an intercepted TLS tunnel) to [`Pipeline::handle`]. The decision
//! itself is the core's (`crate::core`), the same for every front; this
//! module applies what it planned and carries the bytes. Errors from any
//! stage become an answer in one place (`crate::error`).

pub mod accept;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod intercept;
pub mod limits;
pub mod tool_list;
pub mod transparent;
pub mod tunnel;
pub mod upgrade;
pub mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{Counted, Finish, OnFinish, ProxyBody};
use crate::config::Limits;
use crate::core::audit::{AuditRecord, AuditSink, RequestLine};
use crate::core::classify::RequestTarget;
use crate::core::mcp::{McpError, McpLimits};
use crate::core::{self, Caller, Core, Inbound, Mode};
use crate::decision::snapshot::SnapshotHandle;
use crate::decision::{TaskRevoked, TokenHash};
use crate::error::ProxyError;
use crate::identity::CallerIdentity;
use crate::telemetry;
use crate::tls::LeafCache;

use forward::Forwarder;
use limits::Admission;
use watch::Activity;

/// One agent connection: who is on the other end, and the tasks its
/// requests have run under.
#[derive(Debug)]
pub struct Connection {
    /// Its requests' caller facts; `mode` is how they arrive on it.
    pub caller: Caller,
    pub peer: SocketAddr,
    /// Task tokens requests on this connection have carried: when one of
    /// those tasks ends, the connection is closed.
    tasks_seen: std::sync::Mutex<Vec<TokenHash>>,
    /// Set on a connection iptables redirected to a transparent listener.
    redirected: Option<Redirected>,
    /// What its requests are doing, for the connection's clocks.
    pub activity: Arc<Activity>,
    /// Its place under `limits.max_connections`, handed to whatever
    /// carries the connection on once it is upgraded (a tunnel, a
    /// WebSocket), so it counts until the socket closes.
    place: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

/// What a redirected connection's requests are held to: the host each
/// names must resolve to the address the agent dialled
/// (`caller.original_destination`).
#[derive(Debug)]
struct Redirected {
    /// Off: a host that resolves elsewhere is still reached, at an address
    /// of its own, never at the one dialled.
    require_original_destination: bool,
    /// The last host:port found to resolve there, so a keep-alive
    /// connection resolves once rather than per request.
    verified: std::sync::Mutex<Option<(String, u16)>>,
}

impl Connection {
    pub fn new(listener: Arc<str>, peer: SocketAddr, identity: CallerIdentity) -> Connection {
        Connection {
            caller: Caller {
                listener,
                mode: Mode::Http,
                identity,
                connect_task: None,
                original_destination: None,
            },
            peer,
            tasks_seen: std::sync::Mutex::default(),
            redirected: None,
            activity: Arc::default(),
            place: std::sync::Mutex::default(),
        }
    }

    /// A connection iptables redirected to a transparent listener: it was
    /// headed for `original`.
    pub fn redirected(
        listener: Arc<str>,
        peer: SocketAddr,
        identity: CallerIdentity,
        original: SocketAddr,
        require_original_destination: bool,
    ) -> Connection {
        let mut connection = Connection::new(listener, peer, identity);
        connection.caller.mode = Mode::Transparent;
        connection.caller.original_destination = Some(original);
        connection.redirected = Some(Redirected {
            require_original_destination,
            verified: std::sync::Mutex::default(),
        });
        connection
    }

    /// The caller of `tunnel` (its `CONNECT`, identified), on the
    /// intercepted tunnel it opened with `connect_task`.
    pub fn in_tunnel(&self, tunnel: &Caller, connect_task: Option<TokenHash>) -> Connection {
        Connection {
            caller: Caller {
                mode: Mode::Intercept,
                connect_task,
                ..tunnel.clone()
            },
            peer: self.peer,
            tasks_seen: std::sync::Mutex::new(connect_task.into_iter().collect()),
            redirected: None,
            activity: Arc::default(),
            place: std::sync::Mutex::default(),
        }
    }

    pub fn hold_place(&self, place: OwnedSemaphorePermit) {
        *self.place.lock().unwrap_or_else(|e| e.into_inner()) = Some(place);
    }

    /// The connection's place, for the task that carries it on.
    pub fn take_place(&self) -> Option<OwnedSemaphorePermit> {
        self.place.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn saw_task(&self, token: TokenHash) {
        let mut seen = self.tasks_seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&token) {
            seen.push(token);
        }
    }

    pub fn carries(&self, token: &TokenHash) -> bool {
        self.tasks_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(token)
    }
}

/// The URI the request leaves with: the checked target, the agent's path.
fn upstream_uri(target: &RequestTarget, path_and_query: &str) -> Result<Uri, ProxyError> {
    let scheme = if target.tls { "https" } else { "http" };
    format!("{scheme}://{}{path_and_query}", target.host_port())
        .parse()
        .map_err(|_| ProxyError::MalformedRequest("request target is not a valid URI".into()))
}

pub struct Pipeline {
    pub snapshot: Arc<SnapshotHandle>,
    pub core: Core,
    pub forwarder: Forwarder,
    /// `None` when no CA is loaded: covered hosts cannot be intercepted and
    /// CONNECT to them is decided as an uncovered tunnel instead.
    pub leaves: Option<Arc<LeafCache>>,
    pub audit: AuditSink,
    pub via: bool,
    /// How long the second direction of a blind tunnel or a WebSocket may
    /// stay open without a byte after the first has closed.
    pub tunnel_half_close: std::time::Duration,
    /// How requests an approval gate stops are held.
    pub hold: Hold,
    /// What one agent may cost (`limits:`).
    pub limits: Arc<Limits>,
    pub admission: Admission,
}

/// How long a request an approval gate stopped is held for a verdict, and
/// the largest body it may have (the body is kept in memory meanwhile).
#[derive(Debug, Clone)]
pub struct Hold {
    pub time: std::time::Duration,
    pub max_body: usize,
    /// `approvals.console_url`: where an MCP client that can send its
    /// user to a URL is sent for a pending approval, at once.
    pub console_url: Option<Arc<str>>,
}

/// Resolves with the task's id when a task `carried` holds ends: the
/// connection carrying it must close. Missed announcements (the channel
/// lagged) close it too: it cannot be known they were not about this task.
pub async fn task_ended(
    mut revocations: tokio::sync::broadcast::Receiver<TaskRevoked>,
    carried: impl Fn(&TokenHash) -> bool,
) -> String {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match revocations.recv().await {
            Ok(revoked) if carried(&revoked.token) => return revoked.task_id,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return "(unknown: revocations were missed)".into(),
            // No tasks where decisions come from: nothing can end.
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// For a connection that outlives its decision (a tunnel, a WebSocket):
/// resolves when the task it was opened under ends, with the reason for its
/// audit line; never, if it was opened under none.
pub async fn closed_at_task_end(
    revocations: tokio::sync::broadcast::Receiver<TaskRevoked>,
    task: Option<TokenHash>,
    peer: SocketAddr,
    what: &'static str,
) -> String {
    let task = match task {
        Some(token) => task_ended(revocations, |t| *t == token).await,
        None => std::future::pending().await,
    };
    tracing::info!(%task, %peer, "task ended; {what} closed");
    format!("{what} closed: task {task} ended")
}

/// Leave a request-handling function when a step after the decision
/// fails: the error goes in the record, and both go to the answer.
macro_rules! or_refuse {
    ($result:expr, $record:ident) => {
        match $result {
            Ok(value) => value,
            Err(err) => {
                let err = ProxyError::from(err);
                $record.refused(&err);
                return Err(($record, err));
            }
        }
    };
}

impl Pipeline {
    /// Run one request through the core, then forward it. Always answers.
    pub async fn handle(
        self: Arc<Self>,
        connection: Arc<Connection>,
        target: RequestTarget,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let suspect = connection.activity.take_suspect();
        if let Err(err) = limits::check_head(&request, &self.limits, suspect) {
            return self.refuse_unread(&connection.caller, &request, err);
        }
        // Held until the response head is back: deciding and waiting on
        // the upstream are what a flood of requests would pile up.
        let _in_flight = match self.admission.request(connection.peer) {
            Ok(permit) => permit,
            Err(err) => return self.refuse_unread(&connection.caller, &request, err),
        };
        match self.run(&connection, &target, request).await {
            Ok(response) => response,
            Err((record, err)) => self.refuse(record, &err),
        }
    }

    /// A request refused before there is anything to decide (its target
    /// unreadable, its head over a limit, tollgate overloaded), audited
    /// like every refusal.
    pub fn refuse_unread<B>(
        &self,
        caller: &Caller,
        request: &Request<B>,
        err: ProxyError,
    ) -> Response<ProxyBody> {
        let uri = request.uri();
        let line = RequestLine {
            method: request.method().as_str(),
            host: uri.host().unwrap_or(""),
            port: uri.port_u16().unwrap_or(0),
            path_and_query: uri.path_and_query().map_or("", |pq| pq.as_str()),
        };
        tracing::info!(listener = %caller.listener, error = %err, "request refused unread");
        self.refuse(core::refused(caller, line, &err), &err)
    }

    /// Answer a refusal and write its audit line.
    pub fn refuse(&self, mut record: AuditRecord, err: &ProxyError) -> Response<ProxyBody> {
        tracing::debug!(decision_id = record.decision_id(), error = %err, "request refused");
        // An MCP request that awaits an answer gets it as a JSON-RPC error,
        // which its client shows as the call's error.
        let rpc_id = record.mcp_message().and_then(|m| m.id.clone());
        let response = match rpc_id {
            Some(id) => {
                let elicit = self.hold.console_url.as_deref().zip(record.mcp_version());
                let response = err.to_json_rpc(record.decision_id(), id, elicit);
                record.answered(response.status().as_u16());
                response
            }
            None => {
                let format = self
                    .snapshot
                    .load()
                    .catalog
                    .error_format(record.tool().unwrap_or(""));
                err.to_response(record.decision_id(), format)
            }
        };
        self.audit.emit(record);
        response
    }

    async fn run(
        &self,
        connection: &Connection,
        target: &RequestTarget,
        mut request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, (AuditRecord, ProxyError)> {
        let caller = &connection.caller;
        // A request inside a tunnel (or a redirected TLS connection) must
        // be for the host the TLS was terminated for. A plain redirected
        // request's target was read from its own `Host`.
        let terminated =
            caller.mode == Mode::Intercept || (caller.mode == Mode::Transparent && target.tls);
        if terminated {
            if let Err(err) = intercept::check_authority(target, &request) {
                let line = RequestLine {
                    method: request.method().as_str(),
                    host: &target.host,
                    port: target.port,
                    path_and_query: request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
                };
                return Err((core::refused(caller, line, &err), err));
            }
        }

        // A request to switch protocols: the agent's side of the switch is
        // taken before the request is, and task ends are listened for
        // before deciding, so one ending in between still closes it.
        let upgrade = upgrade::requested(&request).map(|protocol| {
            let agent = hyper::upgrade::on(&mut request);
            (protocol, agent, self.core.decider().revocations())
        });

        let snapshot = self.snapshot.load();
        let (parts, incoming) = request.into_parts();
        // An MCP message is named by its body: read it first (bounded),
        // and send on what was read.
        let (first, body) = if self
            .core
            .reads_body(&snapshot, target, &parts.method, &parts.uri)
        {
            let declared = http_body::Body::size_hint(&incoming).exact();
            let limit = McpLimits::default().max_body_bytes;
            match read_held(incoming, declared, limit).await {
                Ok(bytes) => (Some(bytes.clone()), Either::Right(Full::new(bytes))),
                Err(err) => {
                    let err = match err {
                        ProxyError::HeldBodyTooLarge { .. } => McpError::TooLarge { limit }.into(),
                        other => other,
                    };
                    let line = RequestLine {
                        method: parts.method.as_str(),
                        host: &target.host,
                        port: target.port,
                        path_and_query: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                    };
                    return Err((core::refused(caller, line, &err), err));
                }
            }
        } else {
            (None, Either::Left(incoming))
        };
        let inbound = Inbound {
            target,
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            held: None,
            body: first.as_deref(),
        };
        let verdict = self.core.http(&snapshot, caller, inbound).await;
        // An approval gate stopped it: read the body (the approval is bound
        // to its digest, and it is sent from here if approved), decide it
        // again as held, and wait for a verdict. A verdict while it is held
        // means deciding once more, with the policies of that moment.
        let (held, later);
        let (verdict, body) = if verdict.needs_holding() {
            let declared = http_body::Body::size_hint(&body).exact();
            let bytes = match read_held(body, declared, self.hold.max_body).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    let mut record = verdict.record;
                    record.refused(&err);
                    return Err((record, err));
                }
            };
            held = verdict.held_call(&bytes, parts.uri.query().unwrap_or(""));
            let inbound = Inbound {
                held: Some(&held),
                ..inbound
            };
            // A client that can be sent to the console is sent there now.
            let hold = match verdict.elicits(self.hold.console_url.as_deref()) {
                true => std::time::Duration::ZERO,
                false => self.hold.time,
            };
            let verdict = match self.core.held(&snapshot, caller, inbound, hold).await {
                core::Held::Answered(verdict) => *verdict,
                core::Held::Decided => {
                    later = self.snapshot.load();
                    self.core.http(&later, caller, inbound).await
                }
            };
            (verdict, Either::Right(Full::new(bytes)))
        } else {
            // Streamed as it comes (or as read), boxed once below like any
            // request.
            (verdict, body)
        };
        let core::Verdict {
            mut record,
            outcome,
        } = verdict;
        // A refusal of the core's is in its record already.
        let mut allowed = match outcome {
            Ok(allowed) => allowed,
            Err(err) => return Err((record, err)),
        };
        let listing = allowed.tool_list.take();
        if let Some(token) = allowed.task {
            connection.saw_task(token);
        }
        let body_limit = self.limits.body_limit(allowed.tool.as_deref());
        if let Some(limit) = body_limit {
            if http_body::Body::size_hint(&body).lower() > limit {
                let err = ProxyError::BodyTooLarge { limit };
                record.refused(&err);
                return Err((record, err));
            }
        }
        or_refuse!(self.check_redirected(connection, target).await, record);

        // credentials, on a request shaped for the next hop
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let mut outbound = Request::from_parts(parts, body);
        let mut uri = or_refuse!(upstream_uri(target, &path_and_query), record);
        let inbound_version = outbound.version();
        *outbound.version_mut() = http::Version::HTTP_11;
        let headers = outbound.headers_mut();
        headers::strip_hop_by_hop(headers);
        if let Some((protocol, ..)) = &upgrade {
            upgrade::restore(headers, protocol.clone());
        }
        // The client writes Host from the URI, which is the checked target.
        headers.remove(http::header::HOST);
        if self.via {
            headers::add_via(headers, inbound_version);
        }
        if listing.is_some() {
            tool_list::prepare_request(headers);
        }
        // Also in remote mode: the decision service only names the
        // credential; the secrets are this process's own.
        or_refuse!(
            allowed.credentials.apply(outbound.headers_mut(), &mut uri),
            record
        );
        *outbound.uri_mut() = uri;
        let bytes_in = Arc::new(AtomicU64::new(0));
        let over_limit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outbound = outbound.map(|b| {
            let counted = Counted::new(b, bytes_in.clone());
            match body_limit {
                Some(limit) => counted.capped(limit, over_limit.clone()).boxed(),
                None => counted.boxed(),
            }
        });

        // forward
        let upstream_started = Instant::now();
        let sent = self.forwarder.send(outbound, upgrade.is_some()).await;
        let response = match (sent, body_limit) {
            (Ok(response), _) => response,
            // A streamed body went over its limit: the upstream saw it cut
            // off, and the agent learns why.
            (Err(_), Some(limit)) if over_limit.load(Ordering::Relaxed) => {
                let err = ProxyError::BodyTooLarge { limit };
                record.refused(&err);
                return Err((record, err));
            }
            (Err(err), _) => {
                record.refused(&err);
                return Err((record, err));
            }
        };
        metrics::histogram!(telemetry::UPSTREAM_DURATION)
            .record(upstream_started.elapsed().as_secs_f64());
        if let Some((_, agent, revocations)) = upgrade {
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                let switched_to = response.headers().get(http::header::UPGRADE);
                if !switched_to.is_some_and(upgrade::is_websocket) {
                    let err = ProxyError::UpstreamFailed(
                        "the upstream switched to a protocol other than websocket".into(),
                    );
                    record.refused(&err);
                    return Err((record, err));
                }
                let ended = closed_at_task_end(
                    revocations,
                    allowed.task,
                    connection.peer,
                    "upgraded connection",
                );
                // Its bytes are no longer requests: the clocks stop.
                connection.activity.hand_over();
                let place = connection.take_place();
                return Ok(self.switch(agent, response, record, ended, place));
            }
        }

        // An MCP server's tools, less those the workload may never call.
        let response = match listing {
            Some(list) => {
                or_refuse!(tool_list::filter(response, list).await, record).map(Either::Right)
            }
            None => response.map(Either::Left),
        };

        // audit, when the response body has been delivered
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if self.via {
            headers::add_via(&mut parts.headers, parts.version);
        }
        record.answered(parts.status.as_u16());
        let bytes_out = Arc::new(AtomicU64::new(0));
        let sink = self.audit.clone();
        let counted_out = bytes_out.clone();
        // The record moves into the body: nothing else writes it after this.
        let body = OnFinish::new(Counted::new(body, bytes_out), move |how| {
            record.moved(
                bytes_in.load(Ordering::Relaxed),
                counted_out.load(Ordering::Relaxed),
            );
            match how {
                Finish::Complete => {}
                // The agent saw the body cut short (its connection or
                // stream closed before the end): the line says why.
                Finish::Failed(error) => {
                    record.ended_by(Some(format!("upstream response body failed: {error}")))
                }
                Finish::Abandoned => {
                    record.ended_by(Some("client went away before the response ended".into()))
                }
            }
            sink.emit(record);
        });
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// On a redirected connection, the request's host must resolve to the
    /// address the agent dialled, unless the listener says otherwise.
    async fn check_redirected(
        &self,
        connection: &Connection,
        target: &RequestTarget,
    ) -> Result<(), ProxyError> {
        let (Some(redirected), Some(original)) = (
            &connection.redirected,
            connection.caller.original_destination,
        ) else {
            return Ok(());
        };
        if !redirected.require_original_destination {
            return Ok(());
        }
        let verified = || {
            redirected
                .verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        // Compared in place: this runs for every request on the connection.
        if verified()
            .as_ref()
            .is_some_and(|(host, port)| *host == target.host && *port == target.port)
        {
            return Ok(());
        }
        self.forwarder
            .connector()
            .verify_destination(&target.host, target.port, original)
            .await?;
        *verified() = Some((target.host.clone(), target.port));
        Ok(())
    }

    /// The upstream agreed to switch protocols: answer the agent with its
    /// `101` and join the two connections once both have switched.
    fn switch(
        &self,
        agent: hyper::upgrade::OnUpgrade,
        mut response: Response<Incoming>,
        mut record: AuditRecord,
        ended: impl std::future::Future<Output = String> + Send + 'static,
        place: Option<OwnedSemaphorePermit>,
    ) -> Response<ProxyBody> {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(http::header::UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            upgrade::restore(&mut parts.headers, protocol);
        }
        if self.via {
            headers::add_via(&mut parts.headers, parts.version);
        }
        record.answered(parts.status.as_u16());
        let joined = upgrade::join(
            (agent, upstream),
            record,
            self.audit.clone(),
            self.tunnel_half_close,
            ended,
        );
        tokio::spawn(async move {
            let _place = place;
            joined.await;
        });
        Response::from_parts(parts, crate::body::empty())
    }
}

/// The whole body of a request held for approval (or named by it, as an
/// MCP message is): refused when it is (or says it will be) over `limit`
/// bytes, never cut short. A body that came in one piece, as most do, is
/// kept as that piece, not copied.
async fn read_held<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
) -> Result<bytes::Bytes, ProxyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::HeldBodyTooLarge { limit });
    }
    let mut body = std::pin::pin!(http_body_util::Limited::new(body, limit));
    let (mut first, mut joined) = (None, bytes::BytesMut::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.is::<http_body_util::LengthLimitError>() {
            true => ProxyError::HeldBodyTooLarge { limit },
            false => ProxyError::HeldBodyUnreadable(e.to_string()),
        })?;
        // Trailers are not the body.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                joined.extend_from_slice(&earlier.unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn body(
        chunks: &[&'static str],
    ) -> StreamBody<impl tokio_stream::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .chain([Ok(Frame::trailers(http::HeaderMap::new()))])
            .collect();
        StreamBody::new(tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn a_held_body_is_read_whole_in_one_piece_or_many_and_never_cut() {
        for chunks in [
            &[][..],
            &["{\"a\":1}"],
            &["{\"a\"", ":", "1}"],
            &["", "{\"a\":1}"],
        ] {
            let read = read_held(body(chunks), None, 64).await.unwrap();
            assert_eq!(read, chunks.concat(), "{chunks:?}");
        }
        let over = read_held(body(&["0123456789", "0123456789"]), None, 15).await;
        assert!(
            matches!(over, Err(ProxyError::HeldBodyTooLarge { limit: 15 })),
            "{over:?}"
        );
        let said = read_held(body(&[]), Some(16), 15).await;
        assert!(
            matches!(said, Err(ProxyError::HeldBodyTooLarge { limit: 15 })),
            "{said:?}"
        );
    }
}
