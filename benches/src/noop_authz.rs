//! An ext_authz server that allows everything at once: the floor any real
//! authorization service is compared against. Run as
//! `loadbench --noop-authz` so it can be pinned like the other participants.
//!
//! For calibration it can also do some of what a real server does, one
//! thing at a time (`loadbench --calibrate`): answer with the same dynamic
//! metadata tollgate sends, burn CPU, or read memory. Then the ext_authz
//! pairs show which of those costs Envoy anything on a shared core.
//!
//! `h2` in that list serves the same answers without tonic: the `h2` crate
//! directly, one task per stream, gRPC's five-byte framing by hand. Set
//! against the plain no-op, it shows what tonic's server (router, boxed
//! services, body adapters) costs per check, and so how much a leaner
//! transport could take off any authorization server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

/// What the server does per `Check` besides answering OK.
#[derive(Debug, Default, Clone)]
pub struct Work {
    /// Dynamic metadata shaped like tollgate's (decision id, tool, action).
    pub metadata: bool,
    /// Busy-wait this long: CPU time without memory traffic.
    pub spin: Duration,
    /// Read this many bytes of a 64 MiB buffer, a new stretch each time:
    /// memory traffic that evicts what else shares the core's caches.
    pub touch_bytes: usize,
    /// Serve over the `h2` crate directly instead of tonic.
    pub bare_h2: bool,
}

const TOUCH_BUFFER: usize = 64 << 20;

impl Work {
    /// A comma-separated list: `metadata`, `spin-us=N`, `touch-kib=N`
    /// (empty: no work).
    pub fn parse(spec: &str) -> anyhow::Result<Work> {
        let mut work = Work::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let number = || -> anyhow::Result<u64> {
                value
                    .parse()
                    .with_context(|| format!("{key} takes a number: {item}"))
            };
            match key {
                "metadata" => work.metadata = true,
                "h2" => work.bare_h2 = true,
                "spin-us" => work.spin = Duration::from_micros(number()?),
                "touch-kib" => work.touch_bytes = number()? as usize * 1024,
                _ => anyhow::bail!(
                    "unknown calibration work {item} (metadata, spin-us=N, touch-kib=N, h2)"
                ),
            }
        }
        anyhow::ensure!(
            work.touch_bytes < TOUCH_BUFFER,
            "touch-kib must stay below 65536"
        );
        Ok(work)
    }

    fn run(&self, buffer: &[u8], next: &AtomicUsize) {
        let started = Instant::now();
        while started.elapsed() < self.spin {
            std::hint::spin_loop();
        }
        if self.touch_bytes > 0 {
            let span = TOUCH_BUFFER - self.touch_bytes;
            let start = next.fetch_add(self.touch_bytes, Ordering::Relaxed) % span;
            // One byte per cache line is enough to bring the line in.
            let sum: u64 = buffer[start..start + self.touch_bytes]
                .iter()
                .step_by(64)
                .map(|b| u64::from(*b))
                .sum();
            std::hint::black_box(sum);
        }
    }
}

struct Noop {
    work: Work,
    buffer: Vec<u8>,
    next: AtomicUsize,
}

fn text(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

impl Noop {
    fn answer(&self) -> CheckResponse {
        self.work.run(&self.buffer, &self.next);
        let metadata = self.work.metadata.then(|| Struct {
            fields: [
                // A UUID's length, like tollgate's decision ids.
                ("decision_id", "00000000-0000-7000-8000-000000000000"),
                ("tool", "bench"),
                ("action", "items.get"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        });
        CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: metadata,
        }
    }
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer()))
    }
}

/// Serve on an ephemeral port with one thread; logs `address=…` on stderr.
pub fn serve(work: Work) -> anyhow::Result<()> {
    let buffer = if work.touch_bytes > 0 {
        vec![1u8; TOUCH_BUFFER]
    } else {
        Vec::new()
    };
    let noop = Noop {
        work,
        buffer,
        next: AtomicUsize::new(0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("noop-authz listening address={}", listener.local_addr()?);
        if noop.work.bare_h2 {
            return bare_h2::serve(listener, Arc::new(noop)).await;
        }
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(noop))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        Ok(())
    })
}

/// A gRPC unary server on the `h2` crate, just enough for Envoy's `Check`:
/// read the request's one message, answer with headers, one message and
/// `grpc-status: 0` trailers.
mod bare_h2 {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use prost::Message;
    use tollgate::server::front::grpc_frame;

    use super::Noop;

    pub async fn serve(listener: tokio::net::TcpListener, noop: Arc<Noop>) -> anyhow::Result<()> {
        loop {
            let (socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let noop = noop.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(stream(request, respond, noop.clone()));
                }
            });
        }
    }

    async fn stream(
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        noop: Arc<Noop>,
    ) {
        let mut body = request.into_body();
        let mut message = BytesMut::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        // Five bytes of gRPC framing: compressed flag, big-endian length.
        // Decoded like the tonic no-op decodes it, then dropped.
        let decoded = message.get(5..).and_then(|m| CheckRequest::decode(m).ok());
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("a static response head");
        let Ok(mut send) = respond.send_response(head, false) else {
            return;
        };
        let mut trailers = http::HeaderMap::new();
        if decoded.is_some() {
            let _ = send.send_data(grpc_frame(&noop.answer()), false);
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        } else {
            // INVALID_ARGUMENT: Envoy then refuses the request.
            trailers.insert("grpc-status", http::HeaderValue::from_static("3"));
        }
        let _ = send.send_trailers(trailers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_work_is_read_from_its_list() {
        let work = Work::parse("metadata, spin-us=7,touch-kib=64,h2").unwrap();
        assert!(work.metadata && work.bare_h2);
        assert_eq!(work.spin, Duration::from_micros(7));
        assert_eq!(work.touch_bytes, 64 * 1024);
        let none = Work::parse("").unwrap();
        assert!(!none.metadata && !none.bare_h2 && none.spin.is_zero() && none.touch_bytes == 0);
        for bad in ["spin-us=x", "spin-us", "cache", "touch-kib=65536"] {
            assert!(Work::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
