//! `tollgate decision`: the decision plane as a gRPC service. One listener
//! (h2c) serves tollgate's own API, Envoy's ext_authz `Authorization`, gRPC
//! health and server reflection, all deciding against the same snapshot.

mod decide;
pub mod ext_authz;
mod tasks;

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};

use crate::config::SecretSource;
use crate::decision::proto::pb::decision_service_server::DecisionServiceServer;
use crate::decision::proto::FILE_DESCRIPTOR_SET;
use crate::pipeline::audit::AuditSink;
use crate::snapshot::{EmbeddedDecider, SnapshotHandle};

pub use decide::DecisionApi;
pub use ext_authz::{AuthorizationService, ExtAuthz, ExtAuthzConfig};

/// What every RPC decides against.
pub struct DecisionPlane {
    pub snapshot: Arc<SnapshotHandle>,
    /// Policy and tasks together: the same answers the embedded proxy gives.
    pub decider: Arc<EmbeddedDecider>,
    pub audit: AuditSink,
    pub ext_authz: ExtAuthzConfig,
    /// The bearer token task administration needs; `None` refuses it.
    pub admin_token: Option<SecretSource>,
}

/// Serve until the listener fails. `tls`: TLS (with client certificates
/// required when it carries a client CA); `None`: h2c.
pub async fn serve(
    listener: TcpListener,
    plane: Arc<DecisionPlane>,
    tls: Option<ServerTlsConfig>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DecisionServiceServer<DecisionApi>>()
        .await;
    health.set_serving::<AuthorizationService>().await;
    // Both reflection versions: grpcurl 1.8 and many tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(DecisionServiceServer::new(DecisionApi::new(plane.clone())))
        .add_service(AuthorizationService::new(ExtAuthz::new(plane)))
        .serve_with_incoming(
            // Without nodelay, small gRPC answers wait on Nagle: ~40 ms per
            // decision. `Server::tcp_nodelay` does not reach an incoming
            // stream built here, so it is set on the stream itself.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
