//! The data plane, in request order:
//!
//! accept → identify → intercept → classify → authorize → credentials →
//! forward → audit
//!
//! `accept` owns the sockets and hands each request (plain, or read from
//! inside an intercepted TLS tunnel) to [`Pipeline::handle`], which runs the
//! remaining stages top to bottom. Errors from any stage become an answer in
//! one place (`crate::error`).

pub mod accept;
pub mod audit;
pub mod authorize;
pub mod classify;
pub mod credentials;
pub mod forward;
pub mod identify;
pub mod intercept;
pub mod tunnel;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{Counted, Finish, OnFinish, ProxyBody};
use crate::decision::tasks::token_from_headers;
use crate::decision::{SharedDecider, TaskRevoked, TokenHash};
use crate::error::ProxyError;
use crate::snapshot::SnapshotHandle;
use crate::tls::LeafCache;

use audit::{AuditRecord, AuditSink};
use classify::Named;
use forward::Forwarder;

/// Who is on the other end of an agent connection.
#[derive(Debug)]
pub struct Caller {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    pub identity: Option<Arc<str>>,
    /// Inside an intercepted tunnel: the task token the CONNECT carried in
    /// `Proxy-Authorization`, for requests that carry none themselves.
    pub connect_task: Option<TokenHash>,
    /// Task tokens requests on this connection have carried: when one of
    /// those tasks ends, the connection is closed.
    pub tasks_seen: std::sync::Mutex<Vec<TokenHash>>,
}

impl Caller {
    pub fn new(listener: Arc<str>, peer: SocketAddr, identity: Option<Arc<str>>) -> Caller {
        Caller {
            listener,
            peer,
            identity,
            connect_task: None,
            tasks_seen: std::sync::Mutex::default(),
        }
    }

    /// The same caller, on a tunnel opened with `connect_task`.
    pub fn in_tunnel(&self, connect_task: Option<TokenHash>) -> Caller {
        Caller {
            listener: self.listener.clone(),
            peer: self.peer,
            identity: self.identity.clone(),
            connect_task,
            tasks_seen: std::sync::Mutex::new(connect_task.into_iter().collect()),
        }
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

/// Where a request goes: from the absolute-form URI, or from the CONNECT
/// authority for requests read inside a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub tls: bool,
    /// Normalized: lower-case, no brackets, no trailing dot.
    pub host: String,
    pub port: u16,
}

impl RequestTarget {
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn upstream_uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path_and_query}", self.host_port())
            .parse()
            .map_err(|_| ProxyError::MalformedRequest("request target is not a valid URI".into()))
    }
}

/// How a request reached the pipeline (for the audit line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Intercepted,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "http",
            Mode::Intercepted => "intercept",
        }
    }
}

pub struct Pipeline {
    pub snapshot: Arc<SnapshotHandle>,
    pub decider: SharedDecider,
    pub forwarder: Forwarder,
    /// `None` when no CA is loaded: covered hosts cannot be intercepted and
    /// CONNECT to them is decided as an uncovered tunnel instead.
    pub leaves: Option<Arc<LeafCache>>,
    pub audit: AuditSink,
    pub via: bool,
    /// How long the second direction of a blind tunnel or a WebSocket may
    /// stay open without a byte after the first has closed.
    pub tunnel_half_close: std::time::Duration,
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

pub fn new_decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Pipeline {
    /// Run one request through identify → … → audit. Always answers.
    pub async fn handle(
        self: Arc<Self>,
        caller: Arc<Caller>,
        target: RequestTarget,
        mode: Mode,
        request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let decision_id = new_decision_id();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let mut record = AuditRecord::new(
            &decision_id,
            caller.listener.clone(),
            mode.as_str(),
            request.method().as_str(),
            &target.host,
            target.port,
            path_and_query,
        );
        match self
            .run(&caller, &target, mode, request, &mut record, started)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                record.failed(&err);
                record.latency_us = started.elapsed().as_micros() as u64;
                tracing::debug!(decision_id, error = %err, "request refused");
                self.audit.emit(&record);
                err.to_response(&decision_id)
            }
        }
    }

    async fn run(
        &self,
        caller: &Caller,
        target: &RequestTarget,
        mode: Mode,
        request: Request<Incoming>,
        record: &mut AuditRecord,
        started: Instant,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // identify
        let workload = identify::identify(caller)?;
        record.workload = Some(workload.clone());

        // intercept: a request inside a tunnel must be for the tunnel's host.
        if mode == Mode::Intercepted {
            intercept::check_authority(target, &request)?;
        }

        // A request to switch protocols: the agent's side of the switch is
        // taken before the request is, and task ends are listened for
        // before deciding, so one ending in between still closes it.
        let mut request = request;
        let upgrade = upgrade::requested(&request).map(|protocol| {
            let agent = hyper::upgrade::on(&mut request);
            (protocol, agent, self.decider.revocations())
        });

        // classify
        let snapshot = self.snapshot.load();
        let (parts, body) = request.into_parts();
        let named = classify::classify(
            &snapshot.catalog,
            target,
            &parts.method,
            &parts.uri,
            &parts.headers,
        )?;
        record.named(&named);

        // authorize, under the task whose token the request (or, inside a
        // tunnel, its CONNECT) carried
        let service_headers = named.credential_headers(&snapshot.catalog);
        let task = token_from_headers(&parts.headers, service_headers).or(caller.connect_task);
        let decision_request = authorize::decision_request(
            &workload,
            &named,
            target,
            &parts.method,
            parts.uri.path(),
            task,
        );
        let (decision, decision_us) =
            authorize::authorize(self.decider.as_ref(), &decision_request).await;
        // Only tokens of real tasks: made-up ones must not grow the list.
        if let (Some(token), Some(_)) = (task, &decision.task) {
            caller.saw_task(token);
        }
        record.decision_us = decision_us;
        record.decided(&decision);
        if !decision.is_allow() {
            return Err(ProxyError::denied(named.action.to_string(), decision));
        }

        // credentials
        let bytes_in = Arc::new(AtomicU64::new(0));
        let mut outbound = Request::from_parts(parts, body);
        let path_and_query = outbound
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut uri = target.upstream_uri(&path_and_query)?;
        let inbound_version = outbound.version();
        *outbound.version_mut() = http::Version::HTTP_11;
        let headers = outbound.headers_mut();
        credentials::strip_hop_by_hop(headers);
        if let Some((protocol, ..)) = &upgrade {
            upgrade::restore(headers, protocol.clone());
        }
        // The client writes Host from the URI, which is the checked target.
        headers.remove(http::header::HOST);
        if self.via {
            credentials::add_via(headers, inbound_version);
        }
        // Also in remote mode: the decision service only names the
        // credential; the secrets are this process's own.
        credentials::strip_and_inject(
            &snapshot.credentials,
            named.tool.as_deref(),
            service_headers,
            decision.credential.as_deref(),
            outbound.headers_mut(),
            &mut uri,
        )?;
        *outbound.uri_mut() = uri;
        let outbound = outbound.map(|b| Counted::new(b, bytes_in.clone()).boxed());

        // forward
        let upstream_started = Instant::now();
        let response = self.forwarder.send(outbound, upgrade.is_some()).await?;
        metrics::histogram!("tollgate_upstream_duration_seconds")
            .record(upstream_started.elapsed().as_secs_f64());
        if let Some((_, agent, revocations)) = upgrade {
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                let switched_to = response.headers().get(http::header::UPGRADE);
                if !switched_to.is_some_and(upgrade::is_websocket) {
                    return Err(ProxyError::UpstreamFailed(
                        "the upstream switched to a protocol other than websocket".into(),
                    ));
                }
                let ended =
                    closed_at_task_end(revocations, task, caller.peer, "upgraded connection");
                return Ok(self.switch(agent, response, record, ended, started));
            }
        }

        // audit, when the response body has been delivered
        let (mut parts, body) = response.into_parts();
        credentials::strip_hop_by_hop(&mut parts.headers);
        if self.via {
            credentials::add_via(&mut parts.headers, parts.version);
        }
        record.status = parts.status.as_u16();
        let bytes_out = Arc::new(AtomicU64::new(0));
        let sink = self.audit.clone();
        // The record moves into the body: nothing else writes it after this.
        let mut finished = std::mem::take(record);
        let (bytes_in_c, bytes_out_c) = (bytes_in, bytes_out.clone());
        let body = OnFinish::new(Counted::new(body, bytes_out), move |how| {
            finished.bytes_in = bytes_in_c.load(Ordering::Relaxed);
            finished.bytes_out = bytes_out_c.load(Ordering::Relaxed);
            finished.latency_us = started.elapsed().as_micros() as u64;
            if how != Finish::Complete {
                finished.error = Some(match how {
                    Finish::Failed => "upstream response body failed".into(),
                    _ => "client went away before the response ended".into(),
                });
            }
            sink.emit(&finished);
        });
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// The upstream agreed to switch protocols: answer the agent with its
    /// `101` and join the two connections once both have switched.
    fn switch(
        &self,
        agent: hyper::upgrade::OnUpgrade,
        mut response: Response<Incoming>,
        record: &mut AuditRecord,
        ended: impl std::future::Future<Output = String> + Send + 'static,
        started: Instant,
    ) -> Response<ProxyBody> {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(http::header::UPGRADE).cloned();
        credentials::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            upgrade::restore(&mut parts.headers, protocol);
        }
        if self.via {
            credentials::add_via(&mut parts.headers, parts.version);
        }
        record.status = parts.status.as_u16();
        tokio::spawn(upgrade::join(
            (agent, upstream),
            std::mem::take(record),
            self.audit.clone(),
            self.tunnel_half_close,
            ended,
            started,
        ));
        Response::from_parts(parts, crate::body::empty())
    }

    /// Decide a CONNECT to a host the catalog does not cover (or that cannot
    /// be intercepted) on host:port alone. On allow, returns the connected
    /// upstream stream and the audit record to finish when the tunnel closes.
    pub async fn open_tunnel(
        &self,
        caller: &Caller,
        target: &RequestTarget,
        task: Option<TokenHash>,
    ) -> Result<(tokio::net::TcpStream, AuditRecord), (ProxyError, String)> {
        let started = Instant::now();
        let decision_id = new_decision_id();
        let mut record = AuditRecord::new(
            &decision_id,
            caller.listener.clone(),
            "tunnel",
            "CONNECT",
            &target.host,
            target.port,
            "",
        );
        let result = async {
            let workload = identify::identify(caller)?;
            record.workload = Some(workload.clone());
            let named = Named::connect(target);
            record.named(&named);
            let request = authorize::decision_request(
                &workload,
                &named,
                target,
                &http::Method::CONNECT,
                "",
                task,
            );
            let (decision, decision_us) =
                authorize::authorize(self.decider.as_ref(), &request).await;
            record.decision_us = decision_us;
            record.decided(&decision);
            if !decision.is_allow() {
                return Err(ProxyError::denied(named.action.to_string(), decision));
            }
            self.forwarder.connect(&target.host, target.port).await
        }
        .await;
        record.latency_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(stream) => {
                record.status = 200;
                Ok((stream, record))
            }
            Err(err) => {
                record.failed(&err);
                self.audit.emit(&record);
                Err((err, decision_id))
            }
        }
    }
}
