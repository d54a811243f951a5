//! `tollgate decision`'s ext_authz `Check` without sockets: what tollgate
//! does per check on top of what any gRPC server pays (h2, encoding of the
//! answer).
//!
//! * Decoding the request as Envoy encodes it, into tollgate's own message
//!   and, for comparison, into envoy-types' generated one (what the no-op
//!   server in the load benchmark decodes into).
//! * The handler on the decoded request, decoding included: classification
//!   against the bench catalog, the cached decision under the shipped
//!   guardrails, the answer with its dynamic metadata, and one audit line
//!   (to /dev/null, its writer thread outside the measurement), with the
//!   Prometheus recorder installed as in the service.
//!
//!     cargo bench -p tollgate-benches --bench ext_authz

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use prost::Message;
use tollgate::config::{AuditOnFailure, AuditOutput};
use tollgate::core::audit::AuditSink;
use tollgate::core::Core;
use tollgate::decision::snapshot::{Snapshot, SnapshotHandle};
use tollgate::decision::state::TaskStore;
use tollgate::decision::tasks::TaskLimits;
use tollgate::decision::EmbeddedDecider;
use tollgate::server::ext_authz::{CheckRequest, WORKLOAD_EXTENSION};
use tollgate::server::{DecisionPlane, ExtAuthz};
use tollgate_benches::WORKLOAD;

/// A peer as Envoy names it without mTLS: an address, no principal.
fn peer(ip: &str, port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
                ),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

/// What Envoy sends for the load benchmark's `GET /v1/items/42` with
/// `Host: bench.test`: the pseudo-headers, the two headers Envoy adds, the
/// route's context extension naming the workload.
fn check_request(path: &str) -> EnvoyCheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "bench.test"),
        (":path", path),
        (":method", "GET"),
        (":scheme", "http"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b0e2c4a-91d7-4c43-9d1e-2f3f6a0b7c11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    EnvoyCheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("127.0.0.1", 40312)),
            destination: Some(peer("127.0.0.1", 10000)),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    headers,
                    path: path.into(),
                    host: "bench.test".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: HashMap::from([(
                WORKLOAD_EXTENSION.to_string(),
                WORKLOAD.to_string(),
            )]),
            ..Default::default()
        }),
    }
}

fn check(c: &mut Criterion) {
    // The recorder spawns its upkeep task; it never needs to run here.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    tollgate::admin::install_metrics().unwrap();
    let (dir, _) = tollgate_benches::tollgate::prepare("").unwrap();
    let folder = |name: &str| -> PathBuf { dir.path().join(name) };
    let snapshot =
        Snapshot::without_credentials(&folder("catalog"), &folder("policies"), &[], 1, 10_000)
            .unwrap();
    let snapshot = SnapshotHandle::new(snapshot, 10_000);
    let tasks = Arc::new(TaskStore::in_memory(TaskLimits::default()));
    let plane = Arc::new(DecisionPlane {
        core: Core::new(Arc::new(EmbeddedDecider::new(tasks.clone()))),
        tasks,
        snapshot,
        audit: AuditSink::start(
            &AuditOutput::File("/dev/null".into()),
            AuditOnFailure::Refuse,
        )
        .unwrap(),
        admin_token: None,
        envoy: Default::default(),
        approvers: Vec::new(),
        console_url: None,
    });
    let authz = ExtAuthz::new(plane);

    let mut group = c.benchmark_group("ext_authz Check handler");
    // From shared bytes, as tonic hands a received message over: what
    // can be kept as a slice of it is not copied.
    let wire = Bytes::from(check_request("/v1/items/42").encode_to_vec());
    group.bench_function("decode only, generated message", |b| {
        b.iter(|| black_box(EnvoyCheckRequest::decode(black_box(wire.clone())).unwrap()))
    });
    group.bench_function("decode only, tollgate's fields", |b| {
        b.iter(|| black_box(CheckRequest::decode(black_box(wire.clone())).unwrap()))
    });
    for (name, path, allowed) in [
        ("allowed, cached decision", "/v1/items/42", true),
        ("denied, no route", "/v2/other", false),
    ] {
        let wire = Bytes::from(check_request(path).encode_to_vec());
        let decode = || CheckRequest::decode(wire.clone()).unwrap();
        let code = at_once(authz.check(decode())).status.map_or(-1, |s| s.code);
        assert_eq!(code == 0, allowed, "{name}: status {code}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(at_once(authz.check(decode()))))
        });
    }
    group.finish();
}

/// The embedded decider answers at once: a check completes on its first
/// poll, on the calling thread, as it does on the decision port.
fn at_once<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a check waited"),
    }
}

criterion_group!(benches, check);
criterion_main!(benches);
