//! Upgrade: HTTP/1.1 requests that ask to switch protocols (WebSocket).
//!
//! The upgrade request goes through the pipeline like any other: it is
//! classified by its method and path, decided, and gets the credential the
//! decision names. If the upstream agrees (`101 Switching Protocols`), the
//! two upgraded connections are joined as a tunnel. What then flows is not
//! read: the decision covers the whole session, which ends when either side
//! closes it or the task it was opened under ends. Its audit line is
//! written then, with the bytes moved each way.
//!
//! Only WebSocket. A switch to anything else is not passed on (the
//! `Upgrade` header is stripped like any hop-by-hop header): after `h2c`,
//! say, the agent could send requests tollgate never decides.

use std::future::Future;
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::tunnel;
use crate::core::audit::{AuditRecord, AuditSink};

/// `websocket`, if an HTTP/1.1 request asks to switch to it: `Upgrade:
/// websocket` and `upgrade` among the `Connection` options. HTTP/2 has no
/// such request (RFC 9113 §8.6).
pub fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let headers = request.headers();
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(UPGRADE).filter(|p| is_websocket(p))?;
    asks.then(|| protocol.clone())
}

/// Whether an `Upgrade` value names WebSocket and nothing else.
pub fn is_websocket(protocol: &HeaderValue) -> bool {
    protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Put back the two headers a hop-by-hop strip removed, so the next hop
/// sees the same request (or answer) to switch to `protocol`.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Once the agent has the `101`, join its connection to the upstream's
/// until both directions end, `half_close` passes without a byte after one
/// has, or `stop` says why to close (also while the two are switching);
/// then write the audit line.
pub async fn join(
    (agent, upstream): (OnUpgrade, OnUpgrade),
    mut record: AuditRecord,
    sink: AuditSink,
    half_close: Duration,
    stop: impl Future<Output = String>,
) {
    // The task may end while the two sides are still switching: that
    // closes the session before it starts.
    tokio::pin!(stop);
    let switched = tokio::select! {
        switched = async { tokio::try_join!(agent, upstream) } => Some(switched),
        why = &mut stop => {
            record.ended_by(Some(why));
            None
        }
    };
    match switched {
        Some(Ok((agent, upstream))) => {
            let relayed = tunnel::relay(
                TokioIo::new(agent),
                TokioIo::new(upstream),
                half_close,
                stop,
            )
            .await;
            record.moved(relayed.from_agent, relayed.from_upstream);
            record.ended_by(relayed.error);
        }
        Some(Err(e)) => record.ended_by(Some(format!("upgrade failed: {e}"))),
        None => {}
    }
    sink.emit(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("http://ws.example/socket").version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_an_http11_request_naming_upgrade_in_connection_asks() {
        let asks = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            requested(&request(Version::HTTP_11, &asks)),
            Some(HeaderValue::from_static("websocket"))
        );
        // An Upgrade header alone is not a request to switch (RFC 9110 §7.8).
        assert_eq!(
            requested(&request(Version::HTTP_11, &[("upgrade", "websocket")])),
            None
        );
        assert_eq!(
            requested(&request(Version::HTTP_11, &[("connection", "upgrade")])),
            None
        );
        assert_eq!(requested(&request(Version::HTTP_2, &asks)), None);
        // What `curl --http2` sends to an http:// URL: a switch tollgate
        // would not read past.
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ];
        assert_eq!(requested(&request(Version::HTTP_11, &h2c)), None);
        let both = [("connection", "upgrade"), ("upgrade", "h2c, websocket")];
        assert_eq!(requested(&request(Version::HTTP_11, &both)), None);
    }
}
