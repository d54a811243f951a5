//! Accept: the explicit proxy listener. Speaks HTTP/1.1 to agents:
//! absolute-form requests (`GET http://host/path`) go straight into the
//! pipeline; `CONNECT host:port` is intercepted when the catalog covers the
//! host, and otherwise decided as a blind tunnel.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{empty, ProxyBody};
use crate::config::ListenerConfig;
use crate::error::ProxyError;

use super::classify::normalize_host;
use super::{
    closed_at_task_end, intercept, new_decision_id, task_ended, tunnel, Caller, Mode, Pipeline,
    RequestTarget,
};
use crate::decision::tasks::proxy_authorization_token;

/// Slow or silent clients are cut off rather than holding a connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(listener: TcpListener, config: ListenerConfig, pipeline: Arc<Pipeline>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, listener = %config.name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let caller = Arc::new(Caller::new(
            config.name.clone(),
            peer,
            config.static_identity.clone(),
        ));
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let _open = crate::memory::OpenConnection::new();
            let service = service_fn(move |request| {
                let pipeline = pipeline.clone();
                let caller = caller.clone();
                async move { Ok::<_, Infallible>(route(pipeline, caller, request).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "agent connection ended with an error");
            }
        });
    }
}

async fn route(
    pipeline: Arc<Pipeline>,
    caller: Arc<Caller>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return connect(pipeline, caller, request).await;
    }
    match absolute_target(request.uri()) {
        Ok(target) => pipeline.handle(caller, target, Mode::Plain, request).await,
        Err(err) => refuse(&caller, err),
    }
}

/// A refusal before there is anything to decide: still logged, still JSON.
fn refuse(caller: &Caller, err: ProxyError) -> Response<ProxyBody> {
    let decision_id = new_decision_id();
    tracing::warn!(peer = %caller.peer, listener = %caller.listener, %decision_id, error = %err, "request refused");
    err.to_response(&decision_id)
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
    if authority.as_str().contains('@') {
        return Err(ProxyError::MalformedRequest(
            "credentials in the request URI are not accepted".into(),
        ));
    }
    let host = normalize_host(authority.host());
    if host.is_empty() {
        return Err(ProxyError::MalformedRequest(
            "request URI has no host".into(),
        ));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(RequestTarget { tls, host, port })
}

fn connect_target(request: &Request<Incoming>) -> Result<RequestTarget, ProxyError> {
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| ProxyError::MalformedRequest("CONNECT needs a host:port target".into()))?;
    let host = normalize_host(authority.host());
    let port = authority
        .port_u16()
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
    caller: Arc<Caller>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let target = match connect_target(&request) {
        Ok(target) => target,
        Err(err) => return refuse(&caller, err),
    };
    if caller.identity.is_none() {
        return refuse(&caller, ProxyError::Unidentified);
    }

    // `HTTPS_PROXY=http://agent:<task token>@proxy` puts the task token
    // here; it covers the tunnel and, when intercepted, the requests inside.
    let task = request
        .headers()
        .get_all(http::header::PROXY_AUTHORIZATION)
        .iter()
        .find_map(|v| proxy_authorization_token(v.to_str().ok()?));
    // Subscribed before deciding, so a task ending in between still closes
    // the tunnel.
    let revocations = pipeline.decider.revocations();
    let covered = pipeline.snapshot.load().catalog.covers(&target.host);
    if let (true, Some(leaves)) = (covered, pipeline.leaves.clone()) {
        // Every request inside is decided on its own; nothing to decide yet.
        let caller = Arc::new(caller.in_tunnel(task));
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let watched = caller.clone();
                    tokio::select! {
                        () = intercept::serve(pipeline, leaves, caller, target, upgraded) => {}
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

    match pipeline.open_tunnel(&caller, &target, task).await {
        Err((err, decision_id)) => err.to_response(&decision_id),
        Ok((upstream, mut record)) => {
            let sink = pipeline.audit.clone();
            let half_close = pipeline.tunnel_half_close;
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        // Bytes moved until the task ended still go in the
                        // audit line, so the relay is told to stop rather
                        // than dropped.
                        let ended = closed_at_task_end(revocations, task, caller.peer, "tunnel");
                        let relayed =
                            tunnel::relay_upgraded(upgraded, upstream, half_close, ended).await;
                        record.bytes_in = relayed.from_agent;
                        record.bytes_out = relayed.from_upstream;
                        record.error = relayed.error;
                    }
                    Err(e) => record.error = Some(format!("CONNECT upgrade failed: {e}")),
                }
                record.latency_us += started.elapsed().as_micros() as u64;
                sink.emit(&record);
            });
            ok_empty()
        }
    }
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
