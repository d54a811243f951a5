//! Intercept: terminate the agent's TLS inside a CONNECT tunnel with a leaf
//! certificate minted for the CONNECT host, then serve HTTP/1.1 or HTTP/2
//! (by ALPN) and send every inner request through the pipeline.
//!
//! An agent that speaks plain HTTP inside the tunnel instead (WebSocket
//! clients open `ws://` URLs through a proxy with CONNECT) is served the
//! same way without the TLS: its first byte tells, since a TLS connection
//! starts with a handshake record.

use std::sync::Arc;

use http::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::core::classify::{normalize_host, RequestTarget};
use crate::error::ProxyError;
use crate::tls::LeafCache;

use super::limits::{serve_agent, Protocol};
use super::watch::Watched;
use super::{Connection, Pipeline};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

pub async fn serve(
    pipeline: Arc<Pipeline>,
    leaves: Arc<LeafCache>,
    connection: Arc<Connection>,
    target: RequestTarget,
    upgraded: Upgraded,
) {
    // A plain proxy listener: take the socket back from hyper, with
    // whatever the agent sent after the CONNECT head, and peek at the
    // first byte without taking it.
    let upgraded = match upgraded.downcast::<TokioIo<Watched<TcpStream>>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner().into_inner();
            let first = match parts.read_buf.first() {
                Some(&byte) => Some(byte),
                None => {
                    let mut byte = [0u8; 1];
                    let handshake = pipeline.limits.tls_handshake_timeout;
                    match tokio::time::timeout(handshake, tcp.peek(&mut byte)).await {
                        Ok(Ok(1)) => Some(byte[0]),
                        _ => None,
                    }
                }
            };
            let (from_agent, to_agent) = tcp.into_split();
            let agent = tokio::io::join(
                std::io::Cursor::new(parts.read_buf).chain(from_agent),
                to_agent,
            );
            return inspect(pipeline, leaves, connection, target, first, agent).await;
        }
        Err(upgraded) => upgraded,
    };
    // A TLS proxy listener: the tunnel runs inside tollgate's own TLS, so
    // the first byte is read and put back in front.
    let (mut from_agent, to_agent) = tokio::io::split(TokioIo::new(upgraded));
    let mut byte = [0u8; 1];
    let handshake = pipeline.limits.tls_handshake_timeout;
    let first = match tokio::time::timeout(handshake, from_agent.read(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    };
    let agent = tokio::io::join(std::io::Cursor::new(byte).chain(from_agent), to_agent);
    inspect(pipeline, leaves, connection, target, first, agent).await;
}

/// The tunnel's bytes, the first one known: TLS is terminated with a leaf
/// minted for the host, anything else is read as plain HTTP.
async fn inspect(
    pipeline: Arc<Pipeline>,
    leaves: Arc<LeafCache>,
    connection: Arc<Connection>,
    mut target: RequestTarget,
    first: Option<u8>,
    agent: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
) {
    let Some(first) = first else {
        tracing::debug!(host = %target.host, "agent sent nothing into the tunnel");
        return;
    };
    if first != TLS_HANDSHAKE {
        target.tls = false;
        return serve_http(pipeline, connection, target, agent, None).await;
    }

    terminate(pipeline, leaves, connection, target, agent).await;
}

/// Terminate the agent's TLS with a leaf minted for `target.host`, then
/// serve what is inside.
pub(super) async fn terminate(
    pipeline: Arc<Pipeline>,
    leaves: Arc<LeafCache>,
    connection: Arc<Connection>,
    target: RequestTarget,
    agent: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
) {
    let handshake = pipeline.limits.tls_handshake_timeout;
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), agent);
    let start = match tokio::time::timeout(handshake, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "agent TLS hello failed");
            return;
        }
        Err(_) => {
            tracing::debug!(host = %target.host, "agent TLS hello timed out");
            return;
        }
    };
    // The certificate is for the CONNECT host (or the SNI a redirected
    // connection was named by), so a different SNI would be a request to
    // somewhere we did not decide the tunnel for.
    if let Some(sni) = start.client_hello().server_name() {
        if normalize_host(sni) != target.host {
            tracing::warn!(sni, host = %target.host, peer = %connection.peer, "TLS server name does not match CONNECT host; closing");
            return;
        }
    }
    let config = match leaves.server_config(&target.host) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, host = %target.host, "cannot mint a leaf certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout(handshake, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "agent TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(host = %target.host, "agent TLS handshake timed out");
            return;
        }
    };
    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(pipeline, connection, target, tls, Some(http2)).await;
}

/// HTTP/1.1 or HTTP/2 from the agent (`http2` as ALPN said, or told by
/// the first bytes), each request through the pipeline.
async fn serve_http(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    target: RequestTarget,
    agent: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    http2: Option<bool>,
) {
    let (peer, activity) = (connection.peer, connection.activity.clone());
    let limits = pipeline.limits.clone();
    serve_agent(
        agent,
        Protocol::Auto(http2),
        &limits,
        activity,
        peer,
        move |request| {
            pipeline
                .clone()
                .handle(connection.clone(), target.clone(), request)
        },
    )
    .await;
}

/// The host a request inside the tunnel names (`:authority` or `Host`) must
/// be the tunnel's host.
pub fn check_authority<B>(target: &RequestTarget, request: &Request<B>) -> Result<(), ProxyError> {
    let named = request.uri().host().map(str::to_string).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_string())
    });
    match named {
        Some(host) if normalize_host(&host) == target.host => Ok(()),
        Some(host) => Err(ProxyError::Misdirected {
            expected: target.host.clone(),
            got: host,
        }),
        None => Err(ProxyError::MalformedRequest("request names no host".into())),
    }
}
