//! The decision port's connections: TLS (mutual when configured), HTTP/2,
//! and one split by path. Envoy's `Check` is answered here; every other
//! stream (tollgate's own API, health, reflection) goes to tonic.
//!
//! Why `Check` skips tonic and hyper: a unary gRPC call is five bytes of
//! framing and a `grpc-status` trailer, and tonic's router, boxed services
//! and codec with hyper's glue cost 4–5 µs per check, as much as tollgate's
//! whole decision (`docs/benchmarks/history.md`). Envoy asks on every request it
//! forwards, so that is where the time goes.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tonic::{Code, Status};
use tower_service::Service;

use super::ext_authz::{CheckRequest, ExtAuthz, CHECK_PATH};

/// The largest `Check` message read, as tonic limits every other message.
const MAX_MESSAGE: usize = 4 << 20;

/// A client that connects and never finishes the handshake holds a task and
/// a socket only this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one connection may have open at once, as hyper (and so tonic)
/// allows; Envoy opens another connection beyond that. Each may hold a
/// message of up to `MAX_MESSAGE` while it is read.
const MAX_STREAMS: u32 = 200;

/// A gRPC request head is a few hundred bytes.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// Flow-control windows, per stream and per connection: hyper's (and so
/// tonic's) defaults. With h2's own 64 KiB, a connection carrying Envoy's
/// checks needs a window update every few dozen checks.
const WINDOW: u32 = 1 << 20;

/// Accept connections for as long as the process runs; a failed accept
/// is logged and retried. `tls`: the server's TLS settings (client
/// certificates required when it verifies them); `None`: HTTP/2 without
/// TLS (h2c).
pub async fn serve(
    listener: TcpListener,
    check: ExtAuthz,
    routes: Routes,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let front = Front {
        check: Arc::new(check),
        routes: routes.prepare(),
    };
    let tls = tls.map(TlsAcceptor::from);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: the connections
                // open are served meanwhile; a busy loop would starve them.
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
            let Some(acceptor) = tls else {
                return front.connection(socket, peer).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => front.connection(stream, peer).await,
                // A client without an acceptable certificate ends here.
                Ok(Err(e)) => {
                    tracing::info!(listener = "decision", %peer, error = %e, "TLS handshake refused");
                }
                Err(_) => tracing::info!(listener = "decision", %peer, "TLS handshake timed out"),
            }
        });
    }
}

#[derive(Clone)]
struct Front {
    check: Arc<ExtAuthz>,
    routes: Routes,
}

impl Front {
    async fn connection<I>(self, io: I, peer: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(MAX_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .handshake::<_, Bytes>(io)
            .await;
        let mut connection = match handshake {
            Ok(connection) => connection,
            // An HTTP/1.1 client ends here: gRPC is HTTP/2 only.
            Err(e) => {
                return tracing::debug!(listener = "decision", %peer, error = %e, "no HTTP/2");
            }
        };
        // Accepting also drives the connection: the answers of the streams
        // are written while this waits for the next stream.
        while let Some(accepted) = connection.accept().await {
            match accepted {
                // A check needs only the decider; the rest, tonic's router.
                Ok((request, respond)) if request.uri().path() == CHECK_PATH => {
                    tokio::spawn(check(self.check.clone(), request.into_body(), respond));
                }
                Ok((request, respond)) => {
                    tokio::spawn(to_tonic(self.routes.clone(), request, respond));
                }
                Err(e) => {
                    return tracing::debug!(listener = "decision", %peer, error = %e, "connection ended");
                }
            }
        }
    }
}

async fn check(authz: Arc<ExtAuthz>, body: RecvStream, respond: SendResponse<Bytes>) {
    let decoded = match read_message(body).await {
        Ok(message) => CheckRequest::decode(message)
            .map_err(|_| Status::new(Code::InvalidArgument, "not a CheckRequest")),
        Err(status) => Err(status),
    };
    let answer = match decoded {
        Ok(request) => Ok(authz.check(request).await),
        Err(status) => Err(status),
    };
    match answer {
        Ok(response) => send_message(respond, &response),
        Err(status) => {
            tracing::warn!(
                listener = "decision",
                code = ?status.code(),
                reason = status.message(),
                "ext_authz check refused unread"
            );
            send_status(respond, &status);
        }
    }
}

async fn to_tonic(
    mut routes: Routes,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let Ok(()) = poll_fn(|cx| Service::<Request<RequestBody>>::poll_ready(&mut routes, cx)).await;
    let Ok(response) = routes.call(request.map(RequestBody)).await;
    let (head, body) = response.into_parts();
    let end = body.is_end_stream();
    if let Ok(send) = respond.send_response(Response::from_parts(head, ()), end) {
        if !end {
            send_body(body, send).await;
        }
    }
}

/// The one gRPC message of a unary call: a flag byte (compressed or not),
/// the length as four big-endian bytes, the message.
async fn read_message(mut body: RecvStream) -> Result<Bytes, Status> {
    // Envoy sends a check in one DATA frame: kept as it came, not copied.
    // Only a message in several frames is joined.
    let mut whole = Bytes::new();
    let mut joined = BytesMut::new();
    let mut received = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Status::new(Code::Cancelled, "request not received"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        received += chunk.len();
        if received > 5 + MAX_MESSAGE {
            return Err(Status::new(
                Code::ResourceExhausted,
                "message larger than 4 MiB",
            ));
        }
        if whole.is_empty() && joined.is_empty() {
            whole = chunk;
        } else {
            joined.extend_from_slice(&std::mem::take(&mut whole));
            joined.extend_from_slice(&chunk);
        }
    }
    let bytes = if joined.is_empty() {
        whole
    } else {
        joined.freeze()
    };
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

/// A response head saying gRPC; the rest is added per answer.
fn grpc_head() -> Response<()> {
    let mut head = Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    head
}

/// `message` in gRPC's framing: not compressed, its length, its bytes.
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.encoded_len());
    framed.put_u8(0);
    framed.put_u32(message.encoded_len() as u32);
    message
        .encode(&mut framed)
        .expect("the buffer was sized for the message");
    framed.freeze()
}

/// A unary answer: the head, the framed message, `grpc-status: 0`. h2
/// buffers what the flow-control window does not yet allow.
fn send_message(mut respond: SendResponse<Bytes>, response: &impl Message) {
    let Ok(mut send) = respond.send_response(grpc_head(), false) else {
        return;
    };
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let _ = send
        .send_data(grpc_frame(response), false)
        .and_then(|()| send.send_trailers(trailers));
}

/// A status alone, in the response head: gRPC's "trailers-only" answer.
/// The messages are this module's own, so they need no percent-encoding.
fn send_status(mut respond: SendResponse<Bytes>, status: &Status) {
    let mut head = grpc_head();
    let headers = head.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(message) = HeaderValue::from_str(status.message()) {
        headers.insert("grpc-message", message);
    }
    let _ = respond.send_response(head, true);
}

/// tonic's answer onto the stream: data as the peer's window allows, then
/// the trailers. A stream the peer resets (a client leaving a
/// `WatchRevocations`) stops at once rather than at its next message.
async fn send_body(mut body: tonic::body::Body, mut send: SendStream<Bytes>) {
    let mut body = Pin::new(&mut body);
    loop {
        let frame = poll_fn(|cx| {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            body.as_mut().poll_frame(cx)
        })
        .await;
        let (sent, last) = match frame {
            None => (send.send_data(Bytes::new(), true), true),
            Some(Err(status)) => {
                // The service failed mid-stream: end with its status.
                let mut trailers = HeaderMap::with_capacity(2);
                if status.add_header(&mut trailers).is_err() {
                    trailers.insert("grpc-status", HeaderValue::from(Code::Internal as i32));
                }
                (send.send_trailers(trailers), true)
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => (send_within_window(&mut send, data).await, false),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => (send.send_trailers(trailers), true),
                    Err(_) => (Ok(()), false),
                },
            },
        };
        if sent.is_err() || last {
            return;
        }
    }
}

/// Send `data` in pieces the peer's flow-control window has room for, so
/// a large answer (reflection's descriptors) is not buffered whole.
async fn send_within_window(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| send.poll_capacity(cx))
            .await
            .ok_or_else(|| h2::Error::from(h2::Reason::CANCEL))??;
        send.send_data(data.split_to(granted.min(data.len())), false)?;
    }
    Ok(())
}

/// A request body as tonic reads it: h2's data, its window handed back as
/// it is read, then the trailers.
struct RequestBody(RecvStream);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let stream = &mut self.0;
        if let Some(data) = ready!(stream.poll_data(cx)) {
            return Poll::Ready(Some(data.map(|data| {
                let _ = stream.flow_control().release_capacity(data.len());
                Frame::data(data)
            })));
        }
        Poll::Ready(
            ready!(stream.poll_trailers(cx))
                .transpose()
                .map(|t| t.map(Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}
