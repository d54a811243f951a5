//! Where a request goes: the `CONNECT` target, the absolute-form URI and
//! the `Host` header, read by the functions the fronts call.

use http::uri::Authority;
use http::{header, Method, Request, Uri};

use crate::core::classify::{normalize_host, RequestTarget};
use crate::pipeline::accept::{absolute_target, connect_target};
use crate::pipeline::intercept::check_authority;
use crate::pipeline::transparent::request_target;

/// The bytes as a request target: after `CONNECT` (authority form), as an
/// absolute-form URI, and as the `Host` of a redirected plain request.
/// Whatever each accepts must be a target every later stage reads alike.
pub fn authority(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        // Brackets only ever reach it as an IPv6 literal's pair.
        if !text.contains(['[', ']']) {
            let once = normalize_host(text);
            assert_eq!(normalize_host(&once), once, "normalize_host({text:?})");
        }
    }
    if let Ok(uri) = Uri::try_from(data) {
        let connect = request(Method::CONNECT, uri.clone(), None);
        if let Ok(target) = connect_target(&connect) {
            check_target(&target);
            assert!(target.tls);
            assert_ne!(target.port, 0, "CONNECT to port 0: {uri}");
        }
        if let Ok(target) = absolute_target(&uri) {
            check_target(&target);
            let default = if target.tls { 443 } else { 80 };
            assert_eq!(target.port, uri.port_u16().unwrap_or(default));
            // A request names the host it was routed by: the tunnel check
            // must never refuse a request for being itself.
            let get = request(Method::GET, uri.clone(), None);
            assert!(check_authority(&target, &get).is_ok(), "{uri}");
        }
    }
    if let Ok(host) = header::HeaderValue::from_bytes(data) {
        let origin: Uri = "/".parse().expect("`/` is a URI");
        let get = request(Method::GET, origin, Some(host));
        if let Ok(target) = request_target(&get) {
            check_target(&target);
            assert!(check_authority(&target, &get).is_ok(), "{data:?}");
        }
    }
}

fn request(method: Method, uri: Uri, host: Option<header::HeaderValue>) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    if let Some(host) = host {
        request.headers_mut().insert(header::HOST, host);
    }
    request
}

/// A target is used as a catalog key, a policy resource (`host:port`), a
/// certificate name and a dial address: it must already be in the one
/// form all of them read, and survive being written out and read back.
fn check_target(target: &RequestTarget) {
    assert!(!target.host.is_empty());
    assert_eq!(normalize_host(&target.host), target.host, "{target:?}");
    let written = target.host_port();
    let read: Authority = written
        .parse()
        .unwrap_or_else(|e| panic!("`{written}` does not read back: {e}"));
    assert_eq!(normalize_host(read.host()), target.host, "{written}");
    assert_eq!(read.port_u16(), Some(target.port), "{written}");
}
