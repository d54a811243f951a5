//! tollgate's own `DecisionService`: `Decide` and `WatchRevocations`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::core::audit::RequestLine;
use crate::core::{self, Caller, Mode};
use crate::decision::proto::pb;
use crate::decision::proto::pb::decision_service_server::DecisionService;
use crate::decision::{DecisionRequest, TokenHash};
use crate::error::ProxyError;
use crate::identity::CallerIdentity;

use super::{approvals, pins, tasks, DecisionPlane};

pub struct DecisionApi {
    plane: Arc<DecisionPlane>,
    /// The `listener` and `mode` of its audit lines.
    caller: Caller,
}

impl DecisionApi {
    pub fn new(plane: Arc<DecisionPlane>) -> DecisionApi {
        DecisionApi {
            plane,
            caller: Caller {
                listener: "grpc".into(),
                mode: Mode::Decide,
                identity: CallerIdentity::default(),
                connect_task: None,
                original_destination: None,
            },
        }
    }
}

const STORE_LOST: &str = "the task state store cannot be reached; resubscribe";
/// Events queued for one subscriber; a subscriber that falls this far
/// behind holds up only its own stream.
const SUBSCRIBER_BUFFER: usize = 64;

type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::Revocation, Status>> + Send>>;

#[tonic::async_trait]
impl DecisionService for DecisionApi {
    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        let request = request.into_inner();
        let probe = request.probe;
        let request = match DecisionRequest::try_from(request) {
            Ok(request) => request,
            Err(message) => {
                let err = ProxyError::MalformedRequest(message);
                let record = core::refused(&self.caller, RequestLine::default(), &err);
                tracing::info!(decision_id = record.decision_id(), error = %err, "Decide refused unread");
                self.plane.audit.emit(record);
                return Err(Status::invalid_argument(err.to_string()));
            }
        };
        let snapshot = self.plane.snapshot.load();
        if probe {
            let Some(may) = self
                .plane
                .core
                .decider()
                .may_allow(&snapshot, &request)
                .await
            else {
                return Err(Status::unavailable("the probe cannot be answered now"));
            };
            return Ok(Response::new(pb::DecideResponse {
                outcome: if may {
                    pb::Outcome::Allow
                } else {
                    pb::Outcome::Deny
                } as i32,
                policy_epoch: snapshot.epoch,
                ..Default::default()
            }));
        }
        let (record, decision) = self
            .plane
            .core
            .named(&snapshot, &self.caller, &request)
            .await;
        let response = decision.to_pb(record.decision_id(), snapshot.epoch);
        self.plane.audit.emit(record);
        Ok(Response::new(response))
    }

    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<RevocationStream>, Status> {
        let subscriber = request.into_inner().subscriber;
        tracing::info!(subscriber, "revocation subscriber connected");
        let (events, stream) = tokio::sync::mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(follow(self.plane.clone(), events));
        let stream = ReceiverStream::new(stream);
        Ok(Response::new(Box::pin(Subscription {
            subscriber,
            events: Box::pin(stream),
        })))
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        tasks::start(&self.plane, request).await.map(Response::new)
    }

    async fn end_task(
        &self,
        request: Request<pb::EndTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        tasks::end(&self.plane, request).await.map(Response::new)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        tasks::get(&self.plane, request).await.map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        tasks::list(&self.plane, request).await.map(Response::new)
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        approvals::list(&self.plane, request)
            .await
            .map(Response::new)
    }

    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        approvals::get(&self.plane, request)
            .await
            .map(Response::new)
    }

    async fn approve(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        approvals::decide(&self.plane, request, true)
            .await
            .map(Response::new)
    }

    async fn deny(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        approvals::decide(&self.plane, request, false)
            .await
            .map(Response::new)
    }

    type WatchApprovalsStream = approvals::ApprovalEvents;

    async fn watch_approvals(
        &self,
        request: Request<pb::WatchApprovalsRequest>,
    ) -> Result<Response<approvals::ApprovalEvents>, Status> {
        approvals::watch(&self.plane, request)
            .await
            .map(Response::new)
    }

    async fn await_approval(
        &self,
        request: Request<pb::AwaitApprovalRequest>,
    ) -> Result<Response<pb::ApprovalStatus>, Status> {
        approvals::await_verdict(&self.plane, request)
            .await
            .map(Response::new)
    }

    async fn observe_tools(
        &self,
        request: Request<pb::ObserveToolsRequest>,
    ) -> Result<Response<pb::ObserveToolsResponse>, Status> {
        pins::observe(&self.plane, request).await.map(Response::new)
    }

    async fn list_tool_pins(
        &self,
        request: Request<pb::ListToolPinsRequest>,
    ) -> Result<Response<pb::ListToolPinsResponse>, Status> {
        pins::list(&self.plane, request).await.map(Response::new)
    }

    async fn accept_tool_pin(
        &self,
        request: Request<pb::AcceptToolPinRequest>,
    ) -> Result<Response<pb::ToolPin>, Status> {
        pins::accept(&self.plane, request).await.map(Response::new)
    }
}

/// A subscriber's stream, which says when it is gone: dropped when its
/// client leaves, so an operator sees every proxy come and go.
struct Subscription {
    subscriber: String,
    events: RevocationStream,
}

impl Stream for Subscription {
    type Item = Result<pb::Revocation, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        tracing::info!(subscriber = %self.subscriber, "revocation subscriber gone");
    }
}

type Events = tokio::sync::mpsc::Sender<Result<pb::Revocation, Status>>;

/// What one subscriber hears. Nothing while the state store cannot be
/// reached: a replica that cannot hear task ends must not let a proxy trust
/// its cache, and a proxy trusts it only once it has an epoch. Then every
/// ended task still remembered (it may hold tunnels of tasks that ended
/// while it was away), the policy epoch, and every task end and epoch from
/// then on, until the store is lost: then the stream ends, and the proxy
/// drops its cache and subscribes again — to wait here until the store is
/// back, and hear what ended meanwhile at once.
async fn follow(plane: Arc<DecisionPlane>, out: Events) {
    let tasks = &plane.tasks;
    let mut health = tasks.health();
    tokio::select! {
        up = health.wait_for(|up| *up) => if up.is_err() { return },
        () = out.closed() => return,
    }
    // Subscribe before listing, so a task ending in between is sent twice
    // rather than never.
    let mut live = tasks.subscribe();
    let ended = match tasks.ended_tokens().await {
        Ok(ended) => ended,
        Err(e) => {
            let _ = out.send(Err(Status::unavailable(e.to_string()))).await;
            return;
        }
    };
    for (id, token) in ended {
        if out.send(Ok(task_ended(id, token))).await.is_err() {
            return;
        }
    }
    let mut epochs = plane.snapshot.subscribe();
    loop {
        let epoch = *epochs.borrow_and_update();
        if out.send(Ok(policy_epoch(epoch))).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                changed = epochs.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
                revoked = live.recv() => match revoked {
                    Ok(revoked) => Ok(task_ended(revoked.task_id, revoked.token)),
                    // Missed revocations cannot be replayed: end the
                    // stream, and the proxy drops its whole cache and
                    // subscribes again.
                    Err(_) => Err(Status::data_loss("revocations were missed; resubscribe")),
                },
                lost = health.wait_for(|up| !*up) => match lost {
                    Ok(_) => Err(Status::unavailable(STORE_LOST)),
                    Err(_) => return,
                },
                () = out.closed() => return,
            };
            let last = event.is_err();
            if out.send(event).await.is_err() || last {
                return;
            }
        }
    }
}

fn policy_epoch(epoch: u64) -> pb::Revocation {
    pb::Revocation {
        event: Some(pb::revocation::Event::PolicyEpoch(pb::PolicyEpoch {
            epoch,
        })),
    }
}

fn task_ended(task_id: String, token: TokenHash) -> pb::Revocation {
    pb::Revocation {
        event: Some(pb::revocation::Event::TaskEnded(pb::TaskEnded {
            task_id,
            task_token_sha256: token.0.to_vec(),
        })),
    }
}
