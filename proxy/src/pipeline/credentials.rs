//! Credentials: shape the request that leaves tollgate. Hop-by-hop headers
//! (RFC 9110 §7.6.1) and the proxy's own credentials never travel upstream;
//! every credential the agent sent is stripped, and the one the decision
//! names is injected, only toward a tool it is bound to.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use zeroize::Zeroizing;

use crate::decision::credentials::{CredentialError, CredentialStore, Placement};

/// Headers through which an agent could carry a credential of its own, for
/// any tool. The catalog adds each tool's own (`credential_headers`).
pub const AGENT_CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Strip every credential the agent sent (the common headers and
/// `tool_headers`), then inject `credential` if the decision names one.
/// Fails, leaving the request untouched, when the credential is not bound to
/// `tool` or cannot be read: the caller must then refuse the request.
pub fn strip_and_inject(
    store: &CredentialStore,
    tool: Option<&str>,
    tool_headers: &[HeaderName],
    credential: Option<&str>,
    headers: &mut HeaderMap,
    uri: &mut Uri,
) -> Result<(), CredentialError> {
    // Everything fallible first, so a refusal changes nothing.
    let injected = match credential {
        Some(name) => Some((name, store.injection_for(name, tool)?)),
        None => None,
    };
    for name in AGENT_CREDENTIAL_HEADERS.iter().chain(tool_headers) {
        headers.remove(name);
    }
    let Some((name, injected)) = injected else {
        return Ok(());
    };
    let unusable = |problem| CredentialError::Unusable {
        name: name.to_string(),
        source_name: "its source".into(),
        problem,
    };
    match injected.placement {
        Placement::Header(header_name) => {
            let mut value = HeaderValue::from_str(injected.value.expose())
                .map_err(|_| unusable("not valid in an HTTP header"))?;
            // Keeps it out of HPACK tables and any Debug of the header map.
            value.set_sensitive(true);
            headers.insert(header_name.clone(), value);
        }
        Placement::Query(param) => {
            *uri = with_query_param(uri, param, injected.value.expose())
                .ok_or_else(|| unusable("not usable in a URL"))?;
        }
    }
    Ok(())
}

/// `uri` with every `param` the agent sent removed (also when it spelled the
/// name percent-encoded, which upstreams decode to the same parameter) and
/// `param=value` added, the value percent-encoded.
pub fn with_query_param(uri: &Uri, param: &str, value: &str) -> Option<Uri> {
    let mut path_and_query = Zeroizing::new(String::with_capacity(
        uri.path().len() + uri.query().map_or(0, str::len) + param.len() + value.len() * 3 + 2,
    ));
    path_and_query.push_str(uri.path());
    path_and_query.push('?');
    for pair in uri.query().unwrap_or("").split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
        if pair.is_empty() || names_param(raw_name, param) {
            continue;
        }
        path_and_query.push_str(pair);
        path_and_query.push('&');
    }
    path_and_query.push_str(param);
    path_and_query.push('=');
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            path_and_query.push(b as char);
        } else {
            path_and_query.push_str(&format!("%{b:02X}"));
        }
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query.as_str()).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether a raw query parameter name means `param` once percent-decoded.
pub fn names_param(raw: &str, param: &str) -> bool {
    if !raw.contains('%') {
        return raw == param;
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded == param.as_bytes()
}

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let proto = match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{proto} tollgate")) {
        headers.append(header::VIA, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_injection_replaces_the_agents_parameter_however_spelled() {
        let uri: Uri = "http://h/p/a?x=1&api_key=agent&api%5Fkey=sneaky&y=&"
            .parse()
            .unwrap();
        let out = with_query_param(&uri, "api_key", "r e/al+").unwrap();
        assert_eq!(out.to_string(), "http://h/p/a?x=1&y=&api_key=r%20e%2Fal%2B");
        let bare: Uri = "http://h/".parse().unwrap();
        assert_eq!(
            with_query_param(&bare, "k", "v").unwrap().to_string(),
            "http://h/?k=v"
        );
        assert!(names_param("api%5fkey", "api_key"));
        assert!(!names_param("api%5", "api_key"));
        assert!(!names_param("api_keys", "api_key"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }
}
