//! Limits: what one agent may cost. Every front serves agents through
//! [`serve_agent`] (hyper configured from `limits:`, the socket on the
//! [`Watched`] clock) and checks each head with [`check_head`] before
//! anything is decided; [`Admission`] counts connections, tunnels and
//! requests in flight, so overload is answered instead of queued.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::ProxyBody;
use crate::config::Limits;
use crate::error::ProxyError;
use crate::telemetry;

use super::watch::{Activity, Clocks, Suspect, Tracked, Watched};

/// How an agent connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Either: told by ALPN when `Some`, else by the first bytes.
    Auto(Option<bool>),
}

/// Counts of what is open, against `limits:`.
pub struct Admission {
    connections: Arc<Semaphore>,
    tunnels: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    /// The last second a refusal was logged: overload is logged once a
    /// second, not once a connection.
    logged: AtomicU64,
}

impl Admission {
    pub fn new(limits: &Limits) -> Admission {
        Admission {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            tunnels: Arc::new(Semaphore::new(limits.max_tunnels)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            logged: AtomicU64::new(0),
        }
    }

    /// A place for one more agent connection, held while it is open.
    pub fn connection(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        self.admit(&self.connections, "connections", peer)
    }

    /// A place for one more tunnel (or redirected connection relayed or
    /// intercepted), held while it is open.
    pub fn tunnel(&self, peer: SocketAddr) -> Result<OwnedSemaphorePermit, ProxyError> {
        self.admit(&self.tunnels, "tunnels", peer)
            .ok_or(ProxyError::Overloaded("tunnels"))
    }

    /// A place for one more request being decided or forwarded, held until
    /// its response head is back.
    pub fn request(&self, peer: SocketAddr) -> Result<OwnedSemaphorePermit, ProxyError> {
        self.admit(&self.in_flight, "requests in flight", peer)
            .ok_or(ProxyError::Overloaded("requests in flight"))
    }

    fn admit(
        &self,
        places: &Arc<Semaphore>,
        what: &'static str,
        peer: SocketAddr,
    ) -> Option<OwnedSemaphorePermit> {
        let permit = places.clone().try_acquire_owned().ok();
        if permit.is_none() {
            metrics::counter!(telemetry::SHED_TOTAL, "limit" => what).increment(1);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if self.logged.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(limit = what, %peer, "at the limit of {what}; refusing more (logged once a second)");
            }
        }
        permit
    }
}

/// Refuse a head tollgate will not read further: too large (`414`,
/// `431`) or framed so that two readers could disagree on where its body
/// ends (`400`, and the connection is closed).
pub fn check_head<B>(
    request: &Request<B>,
    limits: &Limits,
    suspect: Option<Suspect>,
) -> Result<(), ProxyError> {
    let uri = request.uri();
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    if target_len > limits.max_request_line_bytes {
        return Err(ProxyError::UriTooLong {
            limit: limits.max_request_line_bytes,
        });
    }
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{} header fields, over the limit of {}",
            headers.len(),
            limits.max_headers
        )));
    }
    // As on the wire: name, `: `, value, CRLF.
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{size} bytes of header fields, over the limit of {}",
            limits.max_header_bytes
        )));
    }
    if let Some(suspect) = suspect {
        return Err(ProxyError::AmbiguousFraming(suspect.describe().into()));
    }
    check_framing(headers)
}

/// RFC 9112 §6.3: a request with both `Content-Length` and
/// `Transfer-Encoding`, several lengths, or a transfer coding other than a
/// single `chunked` is an error, never a guess.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let coding = codings.next();
    let ambiguous = |why: &str| Err(ProxyError::AmbiguousFraming(why.into()));
    if coding.is_some() && lengths > 0 {
        return ambiguous("both Content-Length and Transfer-Encoding");
    }
    if lengths > 1 {
        return ambiguous("more than one Content-Length");
    }
    match coding {
        None => Ok(()),
        Some(_) if codings.next().is_some() => ambiguous("more than one Transfer-Encoding"),
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        Some(_) => ambiguous("a Transfer-Encoding other than `chunked`"),
    }
}

/// Serve one agent connection with every limit applied: `handler`
/// answers each request; a request stays under way (for the idle clock)
/// until its response body is delivered.
pub async fn serve_agent<IO, F, Fut>(
    io: IO,
    protocol: Protocol,
    limits: &Limits,
    activity: Arc<Activity>,
    peer: SocketAddr,
    handler: F,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let clocks = Clocks {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let known_http2 = match protocol {
        Protocol::Http1 => Some(false),
        Protocol::Http2 => Some(true),
        Protocol::Auto(alpn) => alpn,
    };
    let io = TokioIo::new(Watched::new(
        io,
        activity.clone(),
        clocks,
        known_http2,
        peer,
    ));
    let handler = Arc::new(handler);
    let service = service_fn(move |request| {
        let active = activity.start();
        // hyper keeps one allocation per connection the size of this
        // service's future, idle or not, and a request's whole pipeline
        // is several KiB of state: boxed, it lives only while a request
        // is under way (an idle keep-alive connection cost 35 KiB, not 20).
        let answer = Box::pin(handler(request));
        async move { Ok::<_, Infallible>(answer.await.map(|body| Tracked::new(body, active))) }
    });
    let served = server(limits, protocol)
        .serve_connection_with_upgrades(io, service)
        .await;
    let Err(e) = served else { return };
    // What the agent sent could not be read as HTTP (hyper answered `400`,
    // `414` or `431` itself), or broke HTTP/2's rules: worth a line, as
    // every refusal is. Peers that leave mid-request are not.
    if refused_by_protocol(e.as_ref()) {
        tracing::info!(error = %e, %peer, "agent connection closed: its request could not be read");
    } else {
        tracing::debug!(error = %e, %peer, "agent connection ended with an error");
    }
}

/// hyper's parse errors, and HTTP/2 connections tollgate ended for
/// breaking the protocol or a limit (its GOAWAY), along the source chain.
fn refused_by_protocol(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_parse() || e.is_parse_too_large() {
                return true;
            }
        }
        if let Some(e) = e.downcast_ref::<h2::Error>() {
            return e.is_go_away() && e.is_library();
        }
        next = e.source();
    }
    false
}

/// hyper's server, configured from `limits:`. The read buffer bounds an
/// HTTP/1 head (hyper's floor for it is 8 KiB); the watch keeps the header
/// and idle clocks, so hyper's own header clock is off: it would close idle
/// keep-alive connections as slow heads.
fn server(limits: &Limits, protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(head_bytes(limits).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(header_list_bytes(limits))
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .max_local_error_reset_streams(limits.h2_max_error_resets);
    match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        Protocol::Auto(_) => builder,
    }
}

/// hyper refuses a head over this itself (`431`); smaller excesses are
/// told apart by [`check_head`] (`414` for the target, `431` for fields).
fn head_bytes(limits: &Limits) -> usize {
    limits.max_request_line_bytes + limits.max_header_bytes
}

/// HTTP/2 counts 32 bytes per field besides name and value (RFC 9113
/// §6.5.2), and a CONTINUATION flood is cut off by the same bound.
fn header_list_bytes(limits: &Limits) -> u32 {
    let bytes = limits.max_header_bytes + 32 * limits.max_headers;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().uri("http://example.com/a");
        for (name, value) in lines {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    fn verdict(lines: &[(&str, &str)]) -> Result<(), &'static str> {
        check_head(&head(lines), &Limits::default(), None).map_err(|e| e.reason())
    }

    #[test]
    fn framing_two_readers_could_disagree_on_is_refused() {
        assert_eq!(verdict(&[("content-length", "5")]), Ok(()));
        assert_eq!(verdict(&[("transfer-encoding", "Chunked")]), Ok(()));
        for bad in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "5"), ("content-length", "5")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "identity, chunked")],
            &[("transfer-encoding", "chunked ")],
            &[("transfer-encoding", "gzip, chunked")],
        ] {
            assert_eq!(verdict(bad), Err("ambiguous_framing"), "{bad:?}");
        }
    }

    #[test]
    fn sizes_over_the_limits_are_refused() {
        let limits = Limits {
            max_request_line_bytes: 300,
            max_header_bytes: 1024,
            max_headers: 8,
            ..Limits::default()
        };
        let long = format!("http://example.com/{}", "a".repeat(300));
        let request = Request::builder().uri(long).body(()).unwrap();
        let err = check_head(&request, &limits, None).unwrap_err();
        assert_eq!(err.reason(), "uri_too_long");
        let big = "v".repeat(1100);
        let err = check_head(&head(&[("x-big", &big)]), &limits, None).unwrap_err();
        assert_eq!(err.reason(), "headers_too_large");
        let many: Vec<(String, &str)> = (0..9).map(|i| (format!("x-{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let err = check_head(&head(&many), &limits, None).unwrap_err();
        assert_eq!(err.reason(), "headers_too_large");
        let err = check_head(&head(&[]), &limits, Some(Suspect::BareLf)).unwrap_err();
        assert_eq!(err.reason(), "ambiguous_framing");
    }
}
