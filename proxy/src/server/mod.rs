//! `tollgate decision`: the decision plane as a gRPC service. One listener
//! (h2c, TLS or mutual TLS) serves tollgate's own API, Envoy's ext_authz
//! `Authorization`, gRPC health and server reflection, all deciding against
//! the same snapshot.

mod approvals;
mod decide;
pub mod ext_authz;
pub mod front;
mod pins;
mod tasks;

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::config::{ApproverConfig, SecretSource};
use crate::core::audit::AuditSink;
use crate::core::Core;
use crate::decision::proto::pb::decision_service_server::DecisionServiceServer;
use crate::decision::proto::FILE_DESCRIPTOR_SET;
use crate::decision::snapshot::SnapshotHandle;
use crate::decision::state::{ApprovalStore, TaskStore};
use crate::identity::EnvoySources;

pub use approvals::approver_of;
pub use decide::DecisionApi;
pub use ext_authz::ExtAuthz;

/// What every RPC decides against.
pub struct DecisionPlane {
    pub snapshot: Arc<SnapshotHandle>,
    /// Deciding in this process, policy and tasks together: the same
    /// answers the embedded proxy gives.
    pub core: Core,
    /// The tasks `core` decides under, for their administration and the
    /// revocation stream.
    pub tasks: Arc<TaskStore>,
    pub audit: AuditSink,
    /// The bearer token task administration needs; `None` refuses it.
    pub admin_token: Option<SecretSource>,
    /// How Envoy's `Check` requests are identified.
    pub envoy: EnvoySources,
    /// Who may approve and deny.
    pub approvers: Vec<ApproverConfig>,
    /// `approvals.console_url`, for MCP clients sent to it.
    pub console_url: Option<Arc<str>>,
}

impl DecisionPlane {
    pub fn approvals(&self) -> &ApprovalStore {
        self.tasks.approvals()
    }
}

/// Serve for as long as the process runs; an error is a service that could
/// not be set up. `tls`: TLS (with client certificates required when it
/// verifies them); `None`: h2c.
pub async fn serve(
    listener: TcpListener,
    plane: Arc<DecisionPlane>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DecisionServiceServer<DecisionApi>>()
        .await;
    health
        .set_service_status(ext_authz::SERVICE_NAME, ServingStatus::Serving)
        .await;
    // Both reflection versions: grpcurl 1.8 and many tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Envoy's `Check` is answered by the front itself; these are the rest.
    let routes = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(DecisionServiceServer::new(DecisionApi::new(plane.clone())));
    front::serve(listener, ExtAuthz::new(plane), routes, tls).await;
    Ok(())
}
