//! tollgate's own `DecisionService`: `Decide` and `WatchRevocations`.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::core::audit::RequestLine;
use crate::core::{self, Caller, Mode};
use crate::decision::proto::pb;
use crate::decision::proto::pb::decision_service_server::DecisionService;
use crate::decision::{DecisionRequest, TokenHash};
use crate::error::ProxyError;
use crate::identity::CallerIdentity;

use super::{tasks, DecisionPlane};

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

type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::Revocation, Status>> + Send>>;

#[tonic::async_trait]
impl DecisionService for DecisionApi {
    async fn decide(
        &self,
        request: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        let request = match DecisionRequest::try_from(request.into_inner()) {
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
        let tasks = &self.plane.tasks;
        // A replica that cannot reach the state store cannot hear task
        // ends: its subscribers must not trust what they hold, so they are
        // turned away (and cut off when it is lost) until it is back.
        let health = tasks.health();
        if !*health.borrow() {
            return Err(Status::unavailable(STORE_LOST));
        }
        let lost = WatchStream::new(health)
            .filter(|up| !up)
            .take(1)
            .map(|_| Err(Status::unavailable(STORE_LOST)));
        // Subscribe before listing, so a task ending in between is sent
        // twice rather than never.
        let live = BroadcastStream::new(tasks.subscribe());
        let epochs = WatchStream::new(self.plane.snapshot.subscribe()).map(|epoch| {
            Ok(pb::Revocation {
                event: Some(pb::revocation::Event::PolicyEpoch(pb::PolicyEpoch {
                    epoch,
                })),
            })
        });
        // A proxy (re)connecting may hold tunnels of tasks that ended while
        // it was away: it hears about every ended task still remembered.
        let ended: Vec<_> = tasks
            .ended_tokens()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .map(|(id, token)| Ok(task_ended(id, token)))
            .collect();
        let live = live.map(|event| match event {
            Ok(revoked) => Ok(task_ended(revoked.task_id, revoked.token)),
            // Missed revocations cannot be replayed: end the stream, and
            // the proxy drops its whole cache and subscribes again.
            Err(_) => Err(Status::data_loss("revocations were missed; resubscribe")),
        });
        let stream = epochs
            .merge(tokio_stream::iter(ended).chain(live))
            .merge(lost);
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

fn task_ended(task_id: String, token: TokenHash) -> pb::Revocation {
    pb::Revocation {
        event: Some(pb::revocation::Event::TaskEnded(pb::TaskEnded {
            task_id,
            task_token_sha256: token.0.to_vec(),
        })),
    }
}
