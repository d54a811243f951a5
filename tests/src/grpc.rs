//! tollgate's own gRPC API as an outside client speaks it: a client
//! generated from `proto/` (see build.rs), for what no command line or
//! proxy does yet (holding a request for approval, approving it).

pub mod pb {
    tonic::include_proto!("tollgate.authz.v1");
}

pub use pb::decision_service_client::DecisionServiceClient;

pub type DecisionClient = DecisionServiceClient<tonic::transport::Channel>;

/// A client of the decision service at `url` (`http://…`).
pub async fn client(url: &str) -> DecisionClient {
    DecisionServiceClient::connect(url.to_string())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// `message` with `authorization: Bearer <token>`, as approvers and the
/// admin send it.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a token is ASCII");
    request.metadata_mut().insert("authorization", value);
    request
}

/// SHA-256 of `bytes`, as a holding proxy sends a body's digest.
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}
