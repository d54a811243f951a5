//! The credential plan: what leaves with an allowed request in place of the
//! agent's own credentials. Every header through which the agent could
//! carry a credential is removed, and the credential the decision names is
//! set, only toward a tool it is bound to. The plan is made once, by the
//! core; the proxy applies it to the outgoing request, ext_authz renders it
//! into Envoy's answer, `check` prints it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use serde_json::json;
use zeroize::Zeroizing;

use crate::decision::credentials::{Bound, CredentialError, CredentialStore, Placement};

/// Headers through which an agent could carry a credential of its own, for
/// any tool. The catalog adds each tool's own (`credential_headers`).
pub static AGENT_CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// What to strip and what to inject, for one allowed request.
#[derive(Debug, Clone, Copy)]
pub struct CredentialPlan<'s> {
    /// The tool's own credential headers (the catalog's), stripped besides
    /// [`AGENT_CREDENTIAL_HEADERS`].
    tool_headers: &'s [HeaderName],
    /// The credential the decision named, bound to the request's tool.
    inject: Option<Bound<'s>>,
}

impl<'s> CredentialPlan<'s> {
    /// The plan for a request to `tool` whose decision named `credential`:
    /// refused when the credential is not bound to `tool`. Reads no secret.
    pub fn new(
        store: &'s CredentialStore,
        tool: Option<&str>,
        tool_headers: &'s [HeaderName],
        credential: Option<&str>,
    ) -> Result<CredentialPlan<'s>, CredentialError> {
        let inject = credential.map(|name| store.bound(name, tool)).transpose()?;
        Ok(CredentialPlan {
            tool_headers,
            inject,
        })
    }

    /// Every header name an agent's credential could travel in.
    pub fn strip(&self) -> impl Iterator<Item = &HeaderName> {
        AGENT_CREDENTIAL_HEADERS.iter().chain(self.tool_headers)
    }

    pub fn inject(&self) -> Option<Bound<'s>> {
        self.inject
    }

    /// Strip the agent's credentials from `headers` and set the planned one
    /// in `headers` or `uri`. The secret is read first: when it cannot be
    /// had, nothing is changed and the request must be refused.
    pub fn apply(&self, headers: &mut HeaderMap, uri: &mut Uri) -> Result<(), CredentialError> {
        let injected = match &self.inject {
            Some(bound) => Some((bound, bound.value()?)),
            None => None,
        };
        for name in self.strip() {
            headers.remove(name);
        }
        let Some((bound, value)) = injected else {
            return Ok(());
        };
        let unusable = |problem| CredentialError::Unusable {
            name: bound.name().to_string(),
            source_name: "its source".into(),
            problem,
        };
        match bound.placement() {
            Placement::Header(name) => {
                let mut value = HeaderValue::from_str(value.expose())
                    .map_err(|_| unusable("not valid in an HTTP header"))?;
                // Keeps it out of HPACK tables and any Debug of the header map.
                value.set_sensitive(true);
                headers.insert(name.clone(), value);
            }
            Placement::Query(param) => {
                *uri = with_query_param(uri, param, value.expose())
                    .ok_or_else(|| unusable("not usable in a URL"))?;
            }
        }
        Ok(())
    }

    /// The plan as `check` prints it: names only, never a value.
    pub fn describe(&self) -> serde_json::Value {
        let strip: Vec<&str> = self.strip().map(HeaderName::as_str).collect();
        let inject = self.inject.map(|bound| match bound.placement() {
            Placement::Header(name) => json!({"credential": bound.name(), "header": name.as_str()}),
            Placement::Query(param) => json!({"credential": bound.name(), "query": param}),
        });
        json!({"strip": strip, "inject": inject})
    }
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
}
