//! The upstream every row of a benchmark talks to: HTTP/1.1 keep-alive, a
//! fixed 20-byte body, on its own single-threaded runtime so its cost is
//! the same whoever calls it. The HTTPS variant is the same server behind
//! rustls, for the interception row. Each binds loopback on a free port,
//! or a fixed address for the transparent rows, whose upstreams must sit
//! at the addresses the agent dials. The recording variant also says when
//! each request arrived, for latencies measured at the upstream. The JSON
//! variant reads every request's body whole and answers a JSON body of
//! the caller's, for the rows that send bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub const BODY: &[u8; 20] = b"hello from upstream\n";

/// Loopback, a free port.
const ANY_LOOPBACK: &str = "127.0.0.1:0";

/// Start the plain HTTP upstream on a thread of its own; returns its address.
pub fn start() -> anyhow::Result<SocketAddr> {
    start_at(ANY_LOOPBACK.parse()?, None)
}

/// The same upstream, speaking TLS with `tls`.
pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> anyhow::Result<SocketAddr> {
    start_at(ANY_LOOPBACK.parse()?, Some(tls))
}

/// One request as the recording upstream received it.
#[derive(Debug)]
pub struct Arrival {
    /// When its head had been read: before its body, so a body's size does
    /// not count as lateness.
    pub at: Instant,
    pub body: Bytes,
}

/// The plain upstream, telling of every request it answers on the
/// returned channel.
pub fn start_recording() -> anyhow::Result<(SocketAddr, mpsc::UnboundedReceiver<Arrival>)> {
    let (arrivals, received) = mpsc::unbounded_channel();
    let addr = spawn(ANY_LOOPBACK.parse()?, None, Some(arrivals), None)?;
    Ok((addr, received))
}

/// The plain upstream, reading every request's body to its end before
/// answering `answer` as `application/json`: a server that looks at what
/// it is sent, and a keep-alive connection that never depends on whether
/// a body had all come when the answer went.
pub fn start_json(answer: &'static [u8]) -> anyhow::Result<SocketAddr> {
    spawn(ANY_LOOPBACK.parse()?, None, None, Some(answer))
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    record: Option<mpsc::UnboundedSender<Arrival>>,
    json: Option<&'static [u8]>,
) {
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        // Taken before anything else, and only when someone listens: the
        // rows that do not record pay nothing for it.
        let at = record.as_ref().map(|r| (Instant::now(), r.clone()));
        async move {
            if at.is_some() || json.is_some() {
                let body = match req.into_body().collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                if let Some((at, record)) = at {
                    let _ = record.send(Arrival { at, body });
                }
            }
            let mut r = Response::new(Full::new(Bytes::from_static(json.unwrap_or(BODY))));
            *r.status_mut() = StatusCode::OK;
            if json.is_some() {
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
            }
            Ok::<_, Infallible>(r)
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The upstream on `addr`, speaking TLS when `tls` is given. The socket is
/// bound by the calling thread, so it belongs to that thread's network
/// namespace.
pub fn start_at(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<SocketAddr> {
    spawn(addr, tls, None, None)
}

fn spawn(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    record: Option<mpsc::UnboundedSender<Arrival>>,
    json: Option<&'static [u8]>,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    std::thread::Builder::new()
        .name("bench-upstream".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let record = record.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            None => serve(stream, record, json).await,
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    serve(tls, record, json).await;
                                }
                            }
                        }
                    });
                }
            })
        })?;
    Ok(addr)
}
