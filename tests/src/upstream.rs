//! A real upstream that records what reaches it. Request headers steer it,
//! so any catalog route can be used: `x-test-body-bytes: N` streams N bytes
//! back; `x-test-delay-ms: N` answers late. A request to switch to
//! `Upgrade: websocket` is answered `101`, and the switched connection
//! echoes every byte until the client closes it; `x-test-switch-to: P`
//! makes that `101` name protocol P instead. Request bodies are read as
//! a stream and only their length is kept. It counts the TCP connections
//! it accepts, so a test can tell that nothing at all reached it. A test
//! posing as a real API gives it canned answers by path
//! ([`Upstream::answer`]), which a real client can parse.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The host the request named (`:authority` or `Host`), without a port.
    pub host: String,
    pub path_and_query: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The body's first 64 KiB, as text.
    pub body_head: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Path → (status, content type, body).
type Canned = Arc<Mutex<HashMap<String, (u16, &'static str, String)>>>;

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    canned: Canned,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn http() -> Upstream {
        Upstream::start(loopback(), None)
    }

    pub async fn https(config: Arc<rustls::ServerConfig>) -> Upstream {
        Upstream::start(loopback(), Some(config))
    }

    /// Plain HTTP on a listener made elsewhere: one bound inside a network
    /// namespace ([`crate::Netns::bind_tcp`]), or on a fixed port.
    pub async fn http_on(listener: std::net::TcpListener) -> Upstream {
        Upstream::start(listener, None)
    }

    /// HTTPS on a listener made elsewhere.
    pub async fn https_on(
        listener: std::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> Upstream {
        Upstream::start(listener, Some(config))
    }

    /// Must run inside the runtime, which adopts the listener.
    fn start(listener: std::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let canned = Canned::default();
        let answers = canned.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let record = record.clone();
                let answers = answers.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| answer(req, record.clone(), answers.clone()));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            canned,
            connections,
            task,
        }
    }

    /// From now on, answer a request for `path` (any method, any query)
    /// with `status` and `body` of `content_type`.
    pub fn answer(&self, path: &str, status: u16, content_type: &'static str, body: &str) {
        self.canned
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, content_type, body.to_string()));
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// TCP connections accepted so far, requests or not.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

fn loopback() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

type Out = BoxBody<Bytes, Infallible>;

async fn answer(
    mut req: Request<Incoming>,
    record: Arc<Mutex<Vec<Seen>>>,
    canned: Canned,
) -> Result<Response<Out>, Infallible> {
    let websocket = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let switched = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    let mut head = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            body_len += data.len() as u64;
            let room = (64 * 1024usize).saturating_sub(head.len());
            head.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let host = parts
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            let host = parts.headers.get("host")?.to_str().ok()?;
            Some(host.rsplit_once(':').map_or(host, |(h, _)| h).to_string())
        })
        .unwrap_or_default();
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        host,
        path_and_query: path_and_query.clone(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
        body_head: String::from_utf8_lossy(&head).into_owned(),
    });
    let number = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(switched) = switched {
        tokio::spawn(async move {
            if let Ok(upgraded) = switched.await {
                let (mut from, mut to) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
            }
        });
        let mut switching = Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header(
                "upgrade",
                parts
                    .headers
                    .get("x-test-switch-to")
                    .cloned()
                    .unwrap_or_else(|| http::HeaderValue::from_static("websocket")),
            );
        if let Some(key) = parts.headers.get("sec-websocket-key") {
            switching = switching.header("sec-websocket-accept", websocket_accept(key.as_bytes()));
        }
        return Ok(switching.body(Full::new(Bytes::new()).boxed()).unwrap());
    }
    if let Some(ms) = number("x-test-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = number("x-test-body-bytes") {
        return Ok(Response::new(Zeros { left: n }.boxed()));
    }
    let path = parts.uri.path();
    if let Some((status, content_type, body)) = canned.lock().unwrap().get(path).cloned() {
        return Ok(Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("x-upstream", "test")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap());
    }
    let json = format!(
        "{{\"upstream\":\"ok\",\"method\":\"{}\",\"path\":\"{}\",\"received\":{}}}",
        parts.method, path, body_len
    );
    let mut response = Response::new(Full::new(Bytes::from(json)).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("x-upstream", "test".parse().unwrap());
    Ok(response)
}

/// What a WebSocket client checks the server's `101` for (RFC 6455 §4.2.2).
/// The echo sends the client's frames back as they came, still masked,
/// which Python's websocket-client reads all the same.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine;
    let mut keyed = key.to_vec();
    keyed.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &keyed);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A body of `left` zero bytes, produced in 64 KiB frames as it is read.
struct Zeros {
    left: u64,
}

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A TCP server that echoes every byte back: what a blind tunnel carries
/// when a test needs to see it open, then closed.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// How a [`resetting`] upstream breaks off its answer.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// HTTP/1.1: these bytes (a response head and part of its body, or
    /// nothing at all), then a TCP reset.
    Reset(&'static [u8]),
    /// HTTP/2 (TLS only, by ALPN): a `200` head declaring `length` bytes,
    /// `sent` of them, then `RST_STREAM`; the connection stays up.
    StreamReset { length: u64, sent: usize },
}

/// An upstream that breaks off every answer as `cut` says, plain or (with
/// `tls`) over TLS. A TCP reset comes only once the proxy's kernel has
/// taken every byte sent before it (`SO_LINGER` 0 would otherwise throw
/// away what is still queued), so what the proxy reads is exactly the
/// bytes, then the reset.
pub async fn resetting(cut: Cut, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = match cut {
            Cut::Reset(_) => vec![b"http/1.1".to_vec()],
            Cut::StreamReset { .. } => vec![b"h2".to_vec()],
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match (cut, acceptor) {
                    (Cut::Reset(bytes), None) => {
                        let mut stream = stream;
                        if read_request_head(&mut stream).await {
                            reset_after(&mut stream, bytes).await;
                            reset(stream).await;
                        }
                    }
                    (Cut::Reset(bytes), Some(acceptor)) => {
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        if read_request_head(&mut tls).await {
                            reset_after(&mut tls, bytes).await;
                            reset(tls.into_inner().0).await;
                        }
                    }
                    (Cut::StreamReset { length, sent }, Some(acceptor)) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = service_fn(move |_req: Request<Incoming>| async move {
                            let body = CutShort {
                                sent: Some(sent),
                                pause: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
                            };
                            let mut response = Response::new(body);
                            response
                                .headers_mut()
                                .insert("content-length", http::HeaderValue::from(length));
                            Ok::<_, Infallible>(response)
                        });
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                    (Cut::StreamReset { .. }, None) => panic!("HTTP/2 resets need TLS"),
                }
            });
        }
    });
    addr
}

/// Read up to the end of a request head; false if the peer went first.
async fn read_request_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

async fn reset_after(stream: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// Wait (bounded) until the peer has acknowledged every byte sent, then
/// close with a reset.
async fn reset(stream: tokio::net::TcpStream) {
    use std::os::unix::io::AsRawFd;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int: the bytes not yet acknowledged.
        let ok = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) } == 0;
        if !ok || queued == 0 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A body that sends `sent` zero bytes, waits a moment (so they leave
/// before anything else), then fails: hyper answers the failure with
/// `RST_STREAM` on HTTP/2.
struct CutShort {
    sent: Option<usize>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for CutShort {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(n) = self.sent.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; n])))));
        }
        std::task::ready!(std::future::Future::poll(self.pause.as_mut(), cx));
        Poll::Ready(Some(Err(std::io::Error::other("cut short on purpose"))))
    }
}
