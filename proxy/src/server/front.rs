//! The decision port's connections: TLS (mutual when configured), HTTP/2,
//! and one split by path. Envoy's `Check` is answered here; every other
//! stream (tollgate's own API, health, reflection) goes to tonic.
//!
//! Why `Check` skips tonic: a unary gRPC call is five bytes of framing and a
//! `grpc-status` trailer, and tonic's router, boxed services and codec cost
//! 4–5 µs per check, as much as tollgate's whole decision
//! (`docs/benchmarks.md`, "Where a lever is: tonic's server"). Envoy asks on
//! every request it forwards, so that is where the time goes.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::{Code, Status};
use tower_service::Service;

use super::ext_authz::{CheckRequest, ExtAuthz};

/// Envoy's ext_authz RPC, served without tonic.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The largest `Check` message read, as tonic limits every other message.
const MAX_MESSAGE: usize = 4 << 20;

/// A client that connects and never finishes the handshake holds a task and
/// a socket only this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections until the listener fails. `tls`: the server's TLS
/// settings (client certificates required when it verifies them); `None`:
/// HTTP/2 without TLS (h2c).
pub async fn serve(
    listener: TcpListener,
    check: ExtAuthz,
    routes: Routes,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let front = Front {
        check: Arc::new(check),
        routes: routes.prepare(),
    };
    let tls = tls.map(TlsAcceptor::from);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: the ones in use are
                // served meanwhile, and a busy loop would starve them.
                tracing::warn!(listener = "decision", error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without nodelay, small gRPC answers wait on Nagle: ~40 ms each.
        let _ = socket.set_nodelay(true);
        let front = front.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(socket, front, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await
                    {
                        Ok(Ok(stream)) => connection(stream, front, peer).await,
                        Ok(Err(e)) => {
                            // A client without an acceptable certificate ends here.
                            tracing::info!(listener = "decision", %peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => {
                            tracing::info!(listener = "decision", %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, front: Front, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), front)
        .await;
    if let Err(e) = served {
        tracing::debug!(listener = "decision", %peer, error = %e, "connection ended");
    }
}

#[derive(Clone)]
struct Front {
    check: Arc<ExtAuthz>,
    routes: Routes,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Reply>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response<Reply>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        if request.uri().path() == CHECK_PATH {
            let check = self.check.clone();
            return Box::pin(async move { Ok(answer_check(&check, request.into_body()).await) });
        }
        let mut routes = self.routes.clone();
        Box::pin(async move {
            let ready = poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut routes, cx));
            let Ok(()) = ready.await;
            let Ok(response) = routes.call(request).await;
            Ok(response.map(Reply::Tonic))
        })
    }
}

async fn answer_check(check: &ExtAuthz, body: Incoming) -> Response<Reply> {
    let request = match read_message(body).await {
        Ok(message) => CheckRequest::decode(message)
            .map_err(|_| Status::new(Code::InvalidArgument, "not a CheckRequest")),
        Err(status) => Err(status),
    };
    match request {
        Ok(request) => answer(&check.check(request)),
        Err(status) => {
            tracing::warn!(
                listener = "decision",
                code = ?status.code(),
                reason = status.message(),
                "ext_authz check refused unread"
            );
            refusal(&status)
        }
    }
}

/// The one gRPC message of a unary call: a flag byte (compressed or not),
/// the length as four big-endian bytes, the message.
async fn read_message(body: Incoming) -> Result<Bytes, Status> {
    let collected = Limited::new(body, 5 + MAX_MESSAGE)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                Status::new(Code::ResourceExhausted, "message larger than 4 MiB")
            } else {
                Status::new(Code::Cancelled, "request body not received")
            }
        })?;
    let bytes = collected.to_bytes();
    let (Some(&compressed), Some(length)) = (bytes.first(), bytes.get(1..5)) else {
        return Err(Status::new(Code::Internal, "no request message"));
    };
    if compressed != 0 {
        // Nothing here negotiates a compression; tonic answers the same.
        return Err(Status::new(
            Code::Unimplemented,
            "compressed messages are not accepted",
        ));
    }
    let length = u32::from_be_bytes(length.try_into().expect("four bytes")) as usize;
    if bytes.len() - 5 != length {
        return Err(Status::new(
            Code::Internal,
            "the body is not exactly one message",
        ));
    }
    Ok(bytes.slice(5..))
}

fn answer(response: &impl Message) -> Response<Reply> {
    let mut framed = BytesMut::with_capacity(5 + response.encoded_len());
    framed.put_u8(0);
    framed.put_u32(response.encoded_len() as u32);
    response
        .encode(&mut framed)
        .expect("the buffer was sized for the message");
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from(Code::Ok as i32));
    let reply = Reply::Unary {
        message: Some(framed.freeze()),
        trailers: Some(trailers),
    };
    let mut response = Response::new(reply);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A status alone, in the response head: gRPC's "trailers-only" answer.
/// The messages are this module's own, so they need no percent-encoding.
fn refusal(status: &Status) -> Response<Reply> {
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", status.code() as i32)
        .header("grpc-message", status.message())
        .body(Reply::Unary {
            message: None,
            trailers: None,
        })
        .expect("a status and a fixed message make a valid head")
}

/// What the port answers with: a unary answer written here, or tonic's.
pub enum Reply {
    Unary {
        message: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Tonic(tonic::body::Body),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self.get_mut() {
            Reply::Unary { message, trailers } => Poll::Ready(
                message
                    .take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            Reply::Tonic(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Unary { message, trailers } => message.is_none() && trailers.is_none(),
            Reply::Tonic(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Unary { message, .. } => {
                SizeHint::with_exact(message.as_ref().map_or(0, |m| m.len() as u64))
            }
            Reply::Tonic(body) => body.size_hint(),
        }
    }
}
