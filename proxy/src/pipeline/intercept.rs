//! Intercept: terminate the agent's TLS inside a CONNECT tunnel with a leaf
//! certificate minted for the CONNECT host, then serve HTTP/1.1 or HTTP/2
//! (by ALPN) and send every inner request through the pipeline.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_rustls::LazyConfigAcceptor;

use crate::error::ProxyError;
use crate::tls::LeafCache;

use super::classify::normalize_host;
use super::{Caller, Mode, Pipeline, RequestTarget};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    pipeline: Arc<Pipeline>,
    leaves: Arc<LeafCache>,
    caller: Arc<Caller>,
    target: RequestTarget,
    upgraded: Upgraded,
) {
    let acceptor =
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
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
    // The certificate is for the CONNECT host, so a different SNI would be a
    // request to somewhere we did not decide the tunnel for.
    if let Some(sni) = start.client_hello().server_name() {
        if normalize_host(sni) != target.host {
            tracing::warn!(sni, host = %target.host, peer = %caller.peer, "TLS server name does not match CONNECT host; closing");
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
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, host = %target.host, "agent TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = service_fn(move |request: Request<Incoming>| {
        let pipeline = pipeline.clone();
        let caller = caller.clone();
        let target = target.clone();
        async move {
            Ok::<_, Infallible>(
                pipeline
                    .handle(caller, target, Mode::Intercepted, request)
                    .await,
            )
        }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
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
