//! Accept: the explicit proxy listener. Speaks HTTP/1.1 to agents:
//! absolute-form requests (`GET http://host/path`) go straight into the
//! pipeline; `CONNECT host:port` is intercepted when the catalog covers the
//! host, and otherwise decided as a blind tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::body::{empty, ProxyBody};
use crate::config::ListenerConfig;
use crate::core::audit::RequestLine;
use crate::core::classify::{authority_host_port, RequestTarget};
use crate::core::{self, token, Caller, Mode};
use crate::error::ProxyError;
use crate::identity::{CallerIdentity, ListenerSources};

use super::limits::{check_head, serve_agent, Protocol};
use super::{closed_at_task_end, intercept, task_ended, tunnel, Connection, Pipeline};

/// A proxy listener: plain, or TLS when `tls` is given (client
/// certificates, when offered, are checked by `sources` once the handshake
/// is done).
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    sources: Arc<ListenerSources>,
    tls: Option<TlsAcceptor>,
    pipeline: Arc<Pipeline>,
) {
    loop {
        let (stream, peer) = next_connection(&listener, &config.name).await;
        let Some(place) = pipeline.admission.connection(peer) else {
            if tls.is_none() {
                // Best effort, without waiting: the agent learns why.
                let _ = stream.try_write(OVERLOADED);
            }
            continue;
        };
        let (pipeline, sources, name) = (pipeline.clone(), sources.clone(), config.name.clone());
        // Two tasks of their own types: a plain connection's task is not
        // sized for the TLS state it never holds (idle keep-alive
        // connections are counted in KiB each).
        match &tls {
            None => tokio::spawn(async move {
                let _open = crate::memory::OpenConnection::new();
                let identity = sources.connection(peer.ip(), None);
                let connection = Arc::new(Connection::new(name, peer, identity));
                connection.hold_place(place);
                serve_http(stream, connection, pipeline).await;
            }),
            Some(tls) => tokio::spawn(serve_tls(
                tls.clone(),
                stream,
                peer,
                name,
                sources,
                pipeline,
                place,
            )),
        };
    }
}

/// The answer to a connection over `limits.max_connections`; the close
/// ends its body.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: application/json\r\n\r\n{\"error\":\"overloaded\",\"message\":\"tollgate is at its limit of connections; retry shortly\"}";

/// The next agent connection, with Nagle off.
pub(super) async fn next_connection(listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_tls(
    tls: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    name: Arc<str>,
    sources: Arc<ListenerSources>,
    pipeline: Arc<Pipeline>,
    place: OwnedSemaphorePermit,
) {
    let _open = crate::memory::OpenConnection::new();
    let handshake = pipeline.limits.tls_handshake_timeout;
    let stream = match tokio::time::timeout(handshake, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(error = %e, %peer, listener = %name, "TLS handshake with an agent failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, listener = %name, "TLS handshake with an agent timed out");
            return;
        }
    };
    let identity = sources.connection(peer.ip(), stream.get_ref().1.peer_certificates());
    let connection = Arc::new(Connection::new(name, peer, identity));
    connection.hold_place(place);
    serve_http(stream, connection, pipeline).await;
}

async fn serve_http<S>(io: S, connection: Arc<Connection>, pipeline: Arc<Pipeline>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (peer, activity) = (connection.peer, connection.activity.clone());
    let limits = pipeline.limits.clone();
    serve_agent(
        io,
        Protocol::Http1,
        &limits,
        activity,
        peer,
        move |request| route(pipeline.clone(), connection.clone(), request),
    )
    .await;
}

async fn route(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return connect(pipeline, connection, request).await;
    }
    match absolute_target(request.uri()) {
        Ok(target) => pipeline.handle(connection, target, request).await,
        Err(err) => pipeline.refuse_unread(&connection.caller, &request, err),
    }
}

pub fn absolute_target(uri: &http::Uri) -> Result<RequestTarget, ProxyError> {
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(ProxyError::MalformedRequest(format!(
                "unsupported scheme `{other}`"
            )))
        }
        None => {
            return Err(ProxyError::MalformedRequest(
                "tollgate is a forward proxy: send absolute-form requests \
                 (point HTTP_PROXY / HTTPS_PROXY at it)"
                    .into(),
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::MalformedRequest("request URI has no host".into()))?;
    RequestTarget::from_authority(authority, tls)
}

pub(crate) fn connect_target<B>(request: &Request<B>) -> Result<RequestTarget, ProxyError> {
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| ProxyError::MalformedRequest("CONNECT needs a host:port target".into()))?;
    if authority.as_str().contains('@') {
        return Err(ProxyError::MalformedRequest(
            "credentials in the request's host are not accepted".into(),
        ));
    }
    // RFC 9110 §9.3.6: host:port, nothing else.
    if request.uri().scheme().is_some() || request.uri().path_and_query().is_some() {
        return Err(ProxyError::MalformedRequest(
            "CONNECT needs a host:port target, not a URL".into(),
        ));
    }
    let (host, port) = authority_host_port(authority)?;
    let port = port
        .ok_or_else(|| ProxyError::MalformedRequest("CONNECT needs a host:port target".into()))?;
    if host.is_empty() || port == 0 {
        return Err(ProxyError::MalformedRequest(
            "CONNECT needs a host:port target".into(),
        ));
    }
    Ok(RequestTarget {
        tls: true,
        host,
        port,
    })
}

async fn connect(
    pipeline: Arc<Pipeline>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let tunnel_caller = Caller {
        mode: Mode::Tunnel,
        ..connection.caller.clone()
    };
    let suspect = connection.activity.take_suspect();
    let checked = check_head(&request, &pipeline.limits, suspect)
        .and_then(|()| connect_target(&request))
        .and_then(|target| Ok((target, pipeline.admission.tunnel(connection.peer)?)));
    let (target, place) = match checked {
        Ok(checked) => checked,
        Err(err) => return pipeline.refuse_unread(&tunnel_caller, &request, err),
    };
    // Nobody unidentified gets a tunnel, intercepted or not: the agent
    // learns it must authenticate to the proxy. What the CONNECT proved
    // (its JWT, the certificate) is settled for everything inside.
    let identity = match core::identify(&tunnel_caller, Some(request.headers())).await {
        Ok(identity) => identity,
        Err(err) => {
            let line = RequestLine {
                method: "CONNECT",
                host: &target.host,
                port: target.port,
                path_and_query: "",
            };
            return pipeline.refuse(core::refused(&tunnel_caller, line, &err), &err);
        }
    };
    let tunnel_caller = Caller {
        identity: CallerIdentity::known(identity),
        ..tunnel_caller
    };

    // `HTTPS_PROXY=http://agent:<task token>@proxy` puts the task token
    // here; it covers the tunnel and, when intercepted, the requests inside.
    let task = request
        .headers()
        .get_all(http::header::PROXY_AUTHORIZATION)
        .iter()
        .find_map(|v| token::from_proxy_authorization(v.to_str().ok()?));
    // Subscribed before deciding, so a task ending in between still closes
    // the tunnel.
    let revocations = pipeline.core.decider().revocations();
    let snapshot = pipeline.snapshot.load();
    if let (true, Some(leaves)) = (
        snapshot.catalog.covers(&target.host),
        pipeline.leaves.clone(),
    ) {
        // Every request inside is decided on its own; nothing to decide yet.
        let tunnel = Arc::new(connection.in_tunnel(&tunnel_caller, task));
        connection.activity.hand_over();
        let held = (place, connection.take_place());
        let connection = tunnel;
        tokio::spawn(async move {
            let _places = held;
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let watched = connection.clone();
                    tokio::select! {
                        () = intercept::serve(pipeline, leaves, connection, target, upgraded) => {}
                        task = task_ended(revocations, |t| watched.carries(t)) => {
                            tracing::info!(%task, peer = %watched.peer, "task ended; intercepted connection closed");
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return ok_empty();
    }

    let caller = Caller {
        connect_task: task,
        ..tunnel_caller
    };
    let core::Verdict {
        mut record,
        outcome,
    } = pipeline.core.tunnel(&snapshot, &caller, &target).await;
    let task = match outcome {
        Ok(allowed) => allowed.task,
        Err(err) => return pipeline.refuse(record, &err),
    };
    let upstream = match pipeline.forwarder.connect(&target.host, target.port).await {
        Ok(upstream) => upstream,
        Err(err) => {
            record.refused(&err);
            return pipeline.refuse(record, &err);
        }
    };
    let sink = pipeline.audit.clone();
    let half_close = pipeline.tunnel_half_close;
    connection.activity.hand_over();
    let held = (place, connection.take_place());
    tokio::spawn(async move {
        let _places = held;
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                // Bytes moved until the task ended still go in the audit
                // line, so the relay is told to stop rather than dropped.
                let ended = closed_at_task_end(revocations, task, connection.peer, "tunnel");
                let relayed = tunnel::relay_upgraded(upgraded, upstream, half_close, ended).await;
                record.moved(relayed.from_agent, relayed.from_upstream);
                record.ended_by(relayed.error);
            }
            Err(e) => record.ended_by(Some(format!("CONNECT upgrade failed: {e}"))),
        }
        sink.emit(record);
    });
    ok_empty()
}

fn ok_empty() -> Response<ProxyBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::OK;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_targets() {
        let t = absolute_target(&"http://API.example.com/x".parse().unwrap()).unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (false, "api.example.com", 80)
        );
        let t = absolute_target(&"https://[::1]:8443/x".parse().unwrap()).unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "::1", 8443));
        assert!(absolute_target(&"/origin-form".parse().unwrap()).is_err());
        assert!(absolute_target(&"http://user:pw@example.com/".parse().unwrap()).is_err());
        assert!(absolute_target(&"ftp://example.com/".parse().unwrap()).is_err());
    }
}
