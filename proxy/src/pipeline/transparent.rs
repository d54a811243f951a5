//! Transparent: connections iptables redirected to tollgate (`REDIRECT`
//! in the pod's `nat OUTPUT` chain, as `tollgate iptables` installs it).
//! Nothing on them was meant for a proxy, so each is named from what it
//! carries:
//!
//! - TLS whose ClientHello names a catalog host: intercepted as a
//!   `CONNECT` to that host would be, every request inside decided;
//! - TLS naming any other host: the built-in `connect` on that name and the
//!   original port, then relayed blind;
//! - plain HTTP: every request decided, its `Host` naming the service;
//! - anything else (no SNI, an IP literal as SNI, neither TLS nor HTTP, a
//!   client that sends nothing): `connect` on the original destination's
//!   address.
//!
//! The ClientHello is only peeked at: its bytes stay in the socket for the
//! TLS termination or the blind relay. Whatever a connection names, it
//! reaches only an address that name resolves to, and unless the listener
//! says otherwise, only the address it was headed for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::core::classify::{normalize_host, RequestTarget};
use crate::core::Verdict;
use crate::error::ProxyError;
use crate::identity::ListenerSources;

use super::accept::next_connection;
use super::limits::{serve_agent, Protocol};
use super::{closed_at_task_end, intercept, task_ended, tunnel, Connection, Pipeline};

/// A client that says nothing this long after connecting is taken to wait
/// for the server to speak first: its connection is decided on the address
/// alone.
const SILENCE: Duration = Duration::from_secs(1);

/// Once a client has begun, the rest of its ClientHello or request line
/// must follow within this.
const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// A ClientHello larger than this is not waited for (real ones, post-quantum
/// key shares included, are a few KiB).
const MAX_OPENING: usize = 32 * 1024;

/// The longest method token taken as the start of an HTTP request.
const MAX_METHOD: usize = 20;

const TLS_HANDSHAKE: u8 = 0x16;

/// Accept redirected connections until the process ends.
pub async fn serve(
    listener: TcpListener,
    name: Arc<str>,
    sources: Arc<ListenerSources>,
    require_original_destination: bool,
    pipeline: Arc<Pipeline>,
) {
    loop {
        let (stream, peer) = next_connection(&listener, &name).await;
        // Nothing can be said to a client expecting its origin: over the
        // limit, the connection is closed.
        let Some(place) = pipeline.admission.connection(peer) else {
            continue;
        };
        let original = match original_destination(&stream) {
            // A connection made to the listener's own address was not
            // redirected: there is nowhere to take it.
            Ok(original) if Some(original) != stream.local_addr().ok() => original,
            Ok(_) | Err(_) => {
                tracing::warn!(%peer, listener = %name, "connection was not redirected to this transparent listener (no original destination); closed");
                continue;
            }
        };
        let identity = sources.connection(peer.ip(), None);
        let connection = Arc::new(Connection::redirected(
            name.clone(),
            peer,
            identity,
            original,
            require_original_destination,
        ));
        connection.hold_place(place);
        tokio::spawn(redirected(pipeline.clone(), connection, stream, original));
    }
}

async fn redirected(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    stream: TcpStream,
    original: SocketAddr,
) {
    let _open = crate::memory::OpenConnection::new();
    let address_only = || RequestTarget {
        tls: false,
        host: original.ip().to_string(),
        port: original.port(),
    };
    match opening(&stream).await {
        Opening::Closed => {}
        Opening::Tls(Some(host)) => {
            let target = RequestTarget {
                tls: true,
                host,
                port: original.port(),
            };
            tls(pipeline, connection, stream, target, original).await;
        }
        Opening::Http { h2 } => http(pipeline, connection, stream, h2).await,
        Opening::Tls(None) | Opening::Opaque => {
            relay_blind(pipeline, connection, stream, address_only(), original).await;
        }
    }
}

/// TLS naming `target.host`: intercepted when the catalog covers it and a
/// CA is loaded, else decided as `connect` and relayed blind.
async fn tls(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    stream: TcpStream,
    target: RequestTarget,
    original: SocketAddr,
) {
    let covered = pipeline.snapshot.load().catalog.covers(&target.host);
    let (true, Some(leaves)) = (covered, pipeline.leaves.clone()) else {
        return relay_blind(pipeline, connection, stream, target, original).await;
    };
    let revocations = pipeline.core.decider().revocations();
    let watched = connection.clone();
    tokio::select! {
        () = intercept::terminate(pipeline, leaves, connection, target, stream) => {}
        task = task_ended(revocations, |t| watched.carries(t)) => {
            tracing::info!(%task, peer = %watched.peer, "task ended; redirected connection closed");
        }
    }
}

/// Plain HTTP: each request decided on the host its `Host` names.
/// HTTP/1 is served as the explicit proxy serves it; `h2`, HTTP/2 with
/// prior knowledge (it began with the preface).
async fn http(pipeline: Arc<Pipeline>, connection: Arc<Connection>, stream: TcpStream, h2: bool) {
    let (peer, activity) = (connection.peer, connection.activity.clone());
    let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
    let limits = pipeline.limits.clone();
    serve_agent(stream, protocol, &limits, activity, peer, move |request| {
        let (pipeline, connection) = (pipeline.clone(), connection.clone());
        async move {
            match request_target(&request) {
                Ok(target) => pipeline.handle(connection, target, request).await,
                Err(err) => pipeline.refuse_unread(&connection.caller, &request, err),
            }
        }
    })
    .await;
}

/// The service a plain request on a redirected connection is for: its
/// `Host` (or HTTP/2 `:authority`), port 80 unless it names one.
pub(crate) fn request_target<B>(request: &Request<B>) -> Result<RequestTarget, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MalformedRequest(
            "CONNECT on a connection that was not sent to a proxy".into(),
        ));
    }
    let from_header = || {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
    };
    let authority = request
        .uri()
        .authority()
        .cloned()
        .or_else(from_header)
        .ok_or_else(|| ProxyError::MalformedRequest("request names no host".into()))?;
    RequestTarget::from_authority(&authority, false)
}

/// Decide `connect` on `target`, then relay the connection's bytes (none
/// taken yet) to an address `target.host` resolves to. A refusal has no
/// answer to give but closing: its audit line says why.
async fn relay_blind(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    stream: TcpStream,
    target: RequestTarget,
    original: SocketAddr,
) {
    // Subscribed before deciding, so a task ending in between still closes
    // the relay.
    let revocations = pipeline.core.decider().revocations();
    let snapshot = pipeline.snapshot.load();
    let caller = &connection.caller;
    let Verdict {
        mut record,
        outcome,
    } = pipeline.core.tunnel(&snapshot, caller, &target).await;
    let outcome =
        outcome.and_then(|allowed| Ok((allowed, pipeline.admission.tunnel(connection.peer)?)));
    let (task, _place) = match outcome {
        Ok((allowed, place)) => (allowed.task, place),
        Err(err) => {
            record.refused(&err);
            tracing::info!(peer = %connection.peer, %original, host = %target.host, reason = err.reason(), "redirected connection refused");
            return pipeline.audit.emit(record);
        }
    };
    let require = connection
        .redirected
        .as_ref()
        .is_none_or(|r| r.require_original_destination);
    let upstream = pipeline
        .forwarder
        .connector()
        .connect_redirected(&target.host, target.port, original, require)
        .await;
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(err) => {
            let err = ProxyError::from(err);
            tracing::info!(peer = %connection.peer, %original, host = %target.host, error = %err, "redirected connection refused");
            record.refused(&err);
            return pipeline.audit.emit(record);
        }
    };
    let ended = closed_at_task_end(revocations, task, connection.peer, "tunnel");
    let relayed = tunnel::relay_tcp(
        stream,
        bytes::Bytes::new(),
        upstream,
        pipeline.tunnel_half_close,
        ended,
    )
    .await;
    record.moved(relayed.from_agent, relayed.from_upstream);
    record.ended_by(relayed.error);
    pipeline.audit.emit(record);
}

/// What a redirected connection begins with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A ClientHello, with the DNS name it asks for (none, or an IP literal:
    /// `None`).
    Tls(Option<String>),
    /// An HTTP request line, or (`h2`) HTTP/2's preface.
    Http { h2: bool },
    /// Neither, or nothing before [`SILENCE`].
    Opaque,
    /// The client left before anything could be read.
    Closed,
}

/// Peek at the connection until its opening is known. Nothing is taken from
/// the socket.
async fn opening(stream: &TcpStream) -> Opening {
    let mut buf = vec![0u8; 2048];
    let mut seen = 0;
    let mut deadline = Instant::now() + SILENCE;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Opening::Opaque,
            Ok(Ok(0)) | Ok(Err(_)) => return Opening::Closed,
            Ok(Ok(n)) => n,
        };
        if seen == 0 {
            deadline = Instant::now() + OPENING_TIMEOUT;
        }
        if let Some(opening) = read_opening(&buf[..n]) {
            return opening;
        }
        if n == buf.len() {
            if n >= MAX_OPENING {
                return Opening::Opaque;
            }
            buf.resize((n * 4).min(MAX_OPENING), 0);
        } else if n == seen {
            // Peeking finds the same bytes until more arrive; the socket
            // stays readable meanwhile, so wait rather than spin.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen = n;
    }
}

/// `None`: the bytes so far do not tell yet.
pub(crate) fn read_opening(bytes: &[u8]) -> Option<Opening> {
    if bytes.first() == Some(&TLS_HANDSHAKE) {
        return client_hello(bytes);
    }
    // A request line starts with a method token and a space; HTTP/2's
    // preface with `PRI `.
    for (i, &b) in bytes.iter().enumerate().take(MAX_METHOD + 1) {
        if b == b' ' {
            return Some(match &bytes[..i] {
                [] => Opening::Opaque,
                b"PRI" => Opening::Http { h2: true },
                _ => Opening::Http { h2: false },
            });
        }
        if !(b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            return Some(Opening::Opaque);
        }
    }
    (bytes.len() > MAX_METHOD).then_some(Opening::Opaque)
}

/// rustls reads the ClientHello from a copy of the peeked bytes.
fn client_hello(mut bytes: &[u8]) -> Option<Opening> {
    let mut acceptor = rustls::server::Acceptor::default();
    while !bytes.is_empty() {
        match acceptor.read_tls(&mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Opening::Opaque),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let name = accepted
                .client_hello()
                .server_name()
                .map(normalize_host)
                .filter(|name| !name.is_empty() && name.parse::<IpAddr>().is_err());
            Some(Opening::Tls(name))
        }
        Ok(None) => None,
        // Starts like TLS, is not a ClientHello rustls can read.
        Err(_) => Some(Opening::Opaque),
    }
}

/// Where the connection was headed before iptables `REDIRECT` sent it here
/// (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6).
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let fd = stream.as_raw_fd();
    Ok(match stream.local_addr()? {
        SocketAddr::V4(_) => {
            // SAFETY: sockaddr_in is plain old data.
            let addr: libc::sockaddr_in =
                unsafe { original_address(fd, libc::SOL_IP, libc::SO_ORIGINAL_DST)? };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                u16::from_be(addr.sin_port),
            ))
        }
        SocketAddr::V6(_) => {
            // SAFETY: sockaddr_in6 is plain old data.
            let addr: libc::sockaddr_in6 =
                unsafe { original_address(fd, libc::SOL_IPV6, libc::IP6T_SO_ORIGINAL_DST)? };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(addr.sin6_addr.s6_addr),
                u16::from_be(addr.sin6_port),
                0,
                0,
            ))
        }
    })
}

/// The socket address `getsockopt(fd, level, name)` writes.
///
/// # Safety
///
/// `A` is the sockaddr of the socket's family: plain old data, of which
/// all zeroes (and whatever the kernel writes) is a valid value.
unsafe fn original_address<A: Copy>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> std::io::Result<A> {
    // SAFETY: the caller's promise.
    let mut addr: A = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<A>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `addr`, which
    // lives for the call.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut addr).cast(), &mut len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_client_hello_is_read_for_its_name_and_waited_for_when_cut_short() {
        let bytes = hello("API.GitHub.com");
        assert_eq!(
            read_opening(&bytes),
            Some(Opening::Tls(Some("api.github.com".into())))
        );
        assert_eq!(read_opening(&bytes[..bytes.len() / 2]), None);
        assert_eq!(read_opening(&bytes[..1]), None);
        // rustls sends no SNI for an IP address.
        assert_eq!(read_opening(&hello("10.0.0.1")), Some(Opening::Tls(None)));
    }

    #[test]
    fn an_ip_literal_written_into_the_server_name_is_not_a_name() {
        // The same length as the literal, so the hello stays well formed.
        let mut bytes = hello("abcdefghij");
        let at = bytes.windows(10).position(|w| w == b"abcdefghij").unwrap();
        bytes[at..at + 10].copy_from_slice(b"10.0.0.123");
        assert!(matches!(
            read_opening(&bytes),
            Some(Opening::Tls(None) | Opening::Opaque)
        ));
    }

    #[test]
    fn request_lines_and_other_bytes() {
        assert_eq!(
            read_opening(b"GET / HTTP/1.1\r\n"),
            Some(Opening::Http { h2: false })
        );
        assert_eq!(
            read_opening(b"PRI * HTTP/2.0\r\n"),
            Some(Opening::Http { h2: true })
        );
        assert_eq!(read_opening(b"GE"), None);
        assert_eq!(
            read_opening(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Some(Opening::Opaque)
        );
        assert_eq!(read_opening(b"get / HTTP/1.1"), Some(Opening::Opaque));
        assert_eq!(read_opening(b" GET"), Some(Opening::Opaque));
        assert_eq!(
            read_opening(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]),
            Some(Opening::Opaque)
        );
        assert_eq!(read_opening(&[b'A'; 30]), Some(Opening::Opaque));
    }
}
