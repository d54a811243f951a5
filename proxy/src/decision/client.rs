//! The remote decider: asks `tollgate decision` over gRPC, with a deadline
//! per request and a bounded cache keyed by the complete decision input.
//!
//! The cache is only trusted while the revocation stream is up: it is
//! dropped when the decision plane announces a new policy epoch, and when
//! the stream is lost (a proxy that cannot hear about changes must not keep
//! answering from what it saw before). Without an answer, a request is
//! denied with `decision_unavailable`: fail closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use quick_cache::sync::Cache;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::outcome::{ApprovalState, ApprovalStatus, Decision, Reason, TaskRef};
use super::pins::{ObservedTool, ToolChange};
use super::proto::pb;
use super::proto::pb::decision_service_client::DecisionServiceClient;
use super::request::DecisionRequest;
use super::snapshot::Snapshot;
use super::tasks::{TaskRefusal, TaskRevoked, TokenHash};
use super::{ApprovalFuture, Decider, DecisionFuture, ObserveFuture, ProbeFuture};
use crate::catalog::McpPinning;

/// Epoch value meaning "not connected to the revocation stream".
const UNKNOWN_EPOCH: u64 = u64::MAX;
const BACKOFF_START: Duration = Duration::from_millis(100);
/// A restarted service gets its decision cache back (and this proxy hears
/// its revocations again) within about this long.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `http://127.0.0.1:9191`
    pub endpoint: String,
    /// Deadline for one `Decide` call.
    pub timeout: Duration,
    pub cache_size: usize,
    pub cache_ttl: Duration,
    /// For an `https://` endpoint: the CA to trust, and a client identity
    /// when the service requires mTLS.
    pub tls: Option<ClientTlsConfig>,
}

/// How many ended tasks' tokens a proxy remembers, to refuse them without
/// asking (the decision plane would refuse them too).
const REVOKED_TOKENS: usize = 100_000;

struct Shared {
    cache: Option<Cache<DecisionRequest, (Decision, Instant)>>,
    epoch: AtomicU64,
    ttl: Duration,
    /// Tokens of tasks the revocation stream announced as ended, with the
    /// task as a refusal names it (ended when the announcement came).
    revoked: Cache<TokenHash, TaskRef>,
    /// Those announcements, for the connections that carry a task.
    revocations: tokio::sync::broadcast::Sender<TaskRevoked>,
}

impl Shared {
    /// Drop every cached decision and remember `epoch` as current.
    fn reset(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    fn lookup(&self, request: &DecisionRequest) -> Option<Decision> {
        if self.epoch.load(Ordering::SeqCst) == UNKNOWN_EPOCH {
            return None;
        }
        let (decision, at) = self.cache.as_ref()?.get(request)?;
        if at.elapsed() >= self.ttl {
            return None;
        }
        // A decision never outlives its task, whether or not the expiry
        // has been announced yet.
        match &decision.task {
            Some(task) if SystemTime::now() >= task.expires => {
                Some(TaskRefusal::Ended.decision(Some(task.clone())))
            }
            _ => Some(decision),
        }
    }

    /// A task ended: refuse its token from now on, drop what was decided
    /// under it, and tell the connections carrying it.
    fn revoke(&self, revoked: TaskRevoked) {
        let ended = TaskRef {
            id: revoked.task_id.clone(),
            expires: SystemTime::now(),
            no_cache: true,
        };
        self.revoked.insert(revoked.token, ended);
        if let Some(cache) = &self.cache {
            cache.retain(|request, _| request.task != Some(revoked.token));
        }
        tracing::info!(task = %revoked.task_id, "task ended; its token is refused");
        let _ = self.revocations.send(revoked);
    }

    fn remember(&self, request: &DecisionRequest, decision: &Decision, epoch: u64) {
        let known = self.epoch.load(Ordering::SeqCst);
        if known == UNKNOWN_EPOCH {
            return;
        }
        if epoch > known {
            // The service moved on before its stream told us: what we hold
            // is stale already.
            self.reset(epoch);
        } else if epoch < known {
            return;
        }
        // A store that was down for a moment says nothing about later; an
        // MCP tool's pin may change between two identical calls.
        if decision.task.as_ref().is_some_and(|t| t.no_cache)
            || decision.never_cached()
            || decision.reason == Reason::StateUnavailable
            || request.context.mcp_tool.is_some()
        {
            return;
        }
        if let Some(cache) = &self.cache {
            cache.insert(request.clone(), (decision.clone(), Instant::now()));
        }
    }
}

/// A call's answer, or why there was none within `timeout`.
fn answered<T>(
    answer: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, String> {
    match answer {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!(
            "decision service error: {} ({:?})",
            status.message(),
            status.code()
        )),
        Err(_) => Err(format!(
            "decision service did not answer within {timeout:?}"
        )),
    }
}

pub struct RemoteDecider {
    client: DecisionServiceClient<Channel>,
    timeout: Duration,
    shared: Arc<Shared>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteDecider {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl RemoteDecider {
    /// Connects lazily: a decision service that is down at start only means
    /// denies until it is up. Must be called inside a tokio runtime.
    pub fn new(config: &RemoteConfig, subscriber: &str) -> Result<RemoteDecider, String> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("decision endpoint `{}`: {e}", config.endpoint))?
            .connect_timeout(config.timeout.max(Duration::from_millis(100)))
            .tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("decision endpoint TLS: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        let client = DecisionServiceClient::new(channel);
        let shared = Arc::new(Shared {
            cache: (config.cache_size > 0).then(|| Cache::new(config.cache_size)),
            epoch: AtomicU64::new(UNKNOWN_EPOCH),
            ttl: config.cache_ttl,
            revoked: Cache::new(REVOKED_TOKENS),
            revocations: tokio::sync::broadcast::channel(1024).0,
        });
        let watcher = tokio::spawn(watch(
            client.clone(),
            shared.clone(),
            subscriber.to_string(),
        ));
        Ok(RemoteDecider {
            client,
            timeout: config.timeout,
            shared,
            watcher,
        })
    }

    async fn ask(&self, request: &DecisionRequest) -> Decision {
        if let Some(token) = &request.task {
            if let Some(ended) = self.shared.revoked.get(token) {
                return TaskRefusal::Ended.decision(Some(ended));
            }
        }
        if let Some(hit) = self.shared.lookup(request) {
            metrics::counter!(crate::telemetry::REMOTE_DECISIONS, "result" => "cache_hit")
                .increment(1);
            return hit;
        }
        let mut call = tonic::Request::new(pb::DecideRequest::from(request));
        call.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(self.timeout, client.decide(call)).await;
        let result = answered(answer, self.timeout).map(|response| {
            let epoch = response.policy_epoch;
            let decision = Decision::from(response);
            self.shared.remember(request, &decision, epoch);
            decision
        });
        match result {
            Ok(decision) => {
                metrics::counter!(crate::telemetry::REMOTE_DECISIONS, "result" => "answered")
                    .increment(1);
                decision
            }
            Err(message) => {
                metrics::counter!(crate::telemetry::REMOTE_DECISIONS, "result" => "unavailable")
                    .increment(1);
                tracing::warn!(%message, "no decision; denying");
                Decision::unavailable(message)
            }
        }
    }
}

impl Decider for RemoteDecider {
    /// The decision service decides with its own snapshot; this proxy's
    /// named the request and will plan its credentials.
    fn decide<'a>(&'a self, _: &'a Snapshot, request: &'a DecisionRequest) -> DecisionFuture<'a> {
        Box::pin(self.ask(request))
    }

    fn may_allow<'a>(&'a self, _: &'a Snapshot, request: &'a DecisionRequest) -> ProbeFuture<'a> {
        Box::pin(async move {
            let mut probe = pb::DecideRequest::from(request);
            probe.probe = true;
            let mut call = tonic::Request::new(probe);
            call.set_timeout(self.timeout);
            let mut client = self.client.clone();
            match tokio::time::timeout(self.timeout, client.decide(call)).await {
                Ok(Ok(answer)) => Some(answer.into_inner().outcome != pb::Outcome::Deny as i32),
                _ => None,
            }
        })
    }

    fn observe_tools<'a>(
        &'a self,
        server: &'a str,
        _: McpPinning,
        tools: &'a [ObservedTool],
    ) -> ObserveFuture<'a> {
        Box::pin(async move {
            let request = pb::ObserveToolsRequest {
                server: server.to_string(),
                tools: tools
                    .iter()
                    .map(|t| pb::ObservedTool {
                        name: t.name.clone(),
                        fingerprint: t.fingerprint.clone(),
                    })
                    .collect(),
            };
            let mut call = tonic::Request::new(request);
            call.set_timeout(self.timeout);
            let mut client = self.client.clone();
            let answer = tokio::time::timeout(self.timeout, client.observe_tools(call)).await;
            Ok(answered(answer, self.timeout)?
                .changed
                .into_iter()
                .map(|p| ToolChange {
                    name: p.name,
                    pinned: p.pinned,
                    seen: p.seen,
                })
                .collect())
        })
    }

    fn revocations(&self) -> tokio::sync::broadcast::Receiver<TaskRevoked> {
        self.shared.revocations.subscribe()
    }

    /// The decision service waits on its store's stream; this call lasts
    /// as long, plus the usual deadline for its answer.
    fn await_approval<'a>(&'a self, id: &'a str, timeout: Duration) -> ApprovalFuture<'a> {
        Box::pin(async move {
            let request = pb::AwaitApprovalRequest {
                approval_id: id.to_string(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let deadline = timeout + self.timeout;
            let mut call = tonic::Request::new(request);
            call.set_timeout(deadline);
            let mut client = self.client.clone();
            match tokio::time::timeout(deadline, client.await_approval(call)).await {
                Ok(Ok(status)) => {
                    let status = status.into_inner();
                    Some(ApprovalStatus {
                        state: ApprovalState::from_name(&status.state)?,
                        id: status.approval_id,
                        approver: status.approver,
                        reason: status.reason,
                    })
                }
                Ok(Err(status)) => {
                    tracing::warn!(approval = id, error = %status, "cannot wait for an approval");
                    None
                }
                Err(_) => None,
            }
        })
    }
}

/// Follow the revocation stream for ever, reconnecting with backoff.
async fn watch(
    mut client: DecisionServiceClient<Channel>,
    shared: Arc<Shared>,
    subscriber: String,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let request = pb::WatchRevocationsRequest {
            subscriber: subscriber.clone(),
        };
        match client.watch_revocations(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(revocation)) => {
                            backoff = BACKOFF_START;
                            match revocation.event {
                                Some(pb::revocation::Event::PolicyEpoch(e))
                                    if shared.epoch.load(Ordering::SeqCst) != e.epoch =>
                                {
                                    if shared.epoch.load(Ordering::SeqCst) == UNKNOWN_EPOCH {
                                        tracing::info!(
                                            epoch = e.epoch,
                                            "following revocations; decision cache in use"
                                        );
                                    } else {
                                        tracing::info!(
                                            epoch = e.epoch,
                                            "policy epoch changed; decision cache dropped"
                                        );
                                    }
                                    shared.reset(e.epoch);
                                }
                                Some(pb::revocation::Event::TaskEnded(t)) => {
                                    match TokenHash::from_slice(&t.task_token_sha256) {
                                        Some(token) => shared.revoke(TaskRevoked {
                                            task_id: t.task_id,
                                            token,
                                        }),
                                        None => tracing::warn!(
                                            task = %t.task_id,
                                            "revocation without a valid token hash ignored"
                                        ),
                                    }
                                }
                                Some(pb::revocation::Event::PolicyEpoch(_)) | None => {}
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(error = %status, "revocation stream ended");
                            break;
                        }
                    }
                }
                tracing::warn!("lost the revocation stream; cached decisions dropped");
            }
            Err(status) => {
                tracing::debug!(error = %status, "cannot subscribe to revocations");
            }
        }
        shared.reset(UNKNOWN_EPOCH);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
