//! The credential plan: what leaves with an allowed request in place of the
//! agent's own credentials. Every header through which the agent could
//! carry a credential is removed, and the credential the decision names is
//! set, only toward a tool it is bound to. The plan is made once, by the
//! core; the proxy applies it to the outgoing request, ext_authz renders it
//! into Envoy's answer, `check` prints it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use percent_encoding::percent_decode_str;
use serde_json::json;
use zeroize::Zeroizing;

use crate::decision::credentials::{Bound, CredentialError, CredentialStore, Placement};
use crate::decision::TokenHash;

use super::token;

/// Headers through which an agent could carry a credential of its own, for
/// any tool. The catalog adds each tool's own (`credential_headers`).
pub static AGENT_CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Query parameters through which an agent could carry a credential to
/// any tool, or to a host the catalog does not cover: OAuth's
/// `access_token` (RFC 6750 §2.3) and the common `api_key`. The catalog
/// adds each tool's own (`credential_query`).
pub static AGENT_CREDENTIAL_QUERY: [&str; 2] = ["access_token", "api_key"];

/// The credentials in a request's query string, found before anything is
/// decided. Names are compared percent-decoded and regardless of case: an
/// upstream may read any of those spellings as the parameter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryCredentials {
    /// Raw names (as the agent spelled them) of parameters that go before
    /// the request leaves: ones carrying a task token, and ones tollgate
    /// itself injects a credential of this tool into.
    pub strip: Vec<String>,
    /// Decoded names of parameters carrying a credential of the agent's
    /// own: the request is refused unless its tool forwards them.
    pub held: Vec<String>,
    /// The task token one of them carried.
    pub task: Option<TokenHash>,
}

impl QueryCredentials {
    /// Reads `query` for the parameters `names` (credential parameters)
    /// and `swapped` (those a credential of the request's tool is injected
    /// into). A parameter without a value carries nothing and stays.
    pub fn scan(query: &str, names: &[&str], swapped: &[&str]) -> QueryCredentials {
        let mut found = QueryCredentials::default();
        for pair in query.split('&') {
            let (raw, value) = pair.split_once('=').unwrap_or((pair, ""));
            if raw.is_empty() || value.is_empty() {
                continue;
            }
            let name = percent_decode_str(raw).decode_utf8_lossy();
            let is = |known: &&str| known.eq_ignore_ascii_case(&name);
            let swap = swapped.iter().any(is);
            if !swap && !names.iter().any(is) {
                continue;
            }
            let value = Zeroizing::new(percent_decode_str(value).decode_utf8_lossy().into_owned());
            if let Some(task) = token::from_value(&value) {
                found.task.get_or_insert(task);
                found.strip.push(raw.to_string());
            } else if swap {
                found.strip.push(raw.to_string());
            } else {
                found.held.push(name.into_owned());
            }
        }
        for names in [&mut found.strip, &mut found.held] {
            names.sort_unstable();
            names.dedup();
        }
        found
    }
}

/// What to strip and what to inject, for one allowed request.
#[derive(Debug, Clone)]
pub struct CredentialPlan<'s> {
    /// The tool's own credential headers (the catalog's), stripped besides
    /// [`AGENT_CREDENTIAL_HEADERS`].
    tool_headers: &'s [HeaderName],
    /// Query parameters to remove, as the agent spelled them
    /// ([`QueryCredentials::strip`]).
    strip_query: Vec<String>,
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
        strip_query: Vec<String>,
        credential: Option<&str>,
    ) -> Result<CredentialPlan<'s>, CredentialError> {
        let inject = credential.map(|name| store.bound(name, tool)).transpose()?;
        Ok(CredentialPlan {
            tool_headers,
            strip_query,
            inject,
        })
    }

    /// Every header name an agent's credential could travel in.
    pub fn strip(&self) -> impl Iterator<Item = &HeaderName> {
        AGENT_CREDENTIAL_HEADERS.iter().chain(self.tool_headers)
    }

    /// Query parameters to remove, as the agent spelled them.
    pub fn strip_query(&self) -> &[String] {
        &self.strip_query
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
        if !self.strip_query.is_empty() {
            *uri = without_query_params(uri, &self.strip_query);
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
        json!({"strip": strip, "strip_query": self.strip_query, "inject": inject})
    }
}

/// `uri` without the parameters whose raw names are in `raw_names`.
fn without_query_params(uri: &Uri, raw_names: &[String]) -> Uri {
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let raw = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && !raw_names.iter().any(|n| n == raw)
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    // Made of the parts of a valid path and query: it parses.
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
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
    raw == param || percent_decode_str(raw).eq(param.bytes())
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

    const S3: [&str; 4] = [
        "access_token",
        "api_key",
        "X-Amz-Signature",
        "X-Amz-Credential",
    ];

    #[test]
    fn an_agents_own_query_credentials_are_found_however_spelled() {
        let found = QueryCredentials::scan(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261206&x-id=GetObject\
             &x-amz-signature=ab12&X%2DAmz%2DSignature=cd34",
            &S3,
            &[],
        );
        assert_eq!(
            found.held,
            ["X-Amz-Credential", "X-Amz-Signature", "x-amz-signature"]
        );
        assert!(found.strip.is_empty() && found.task.is_none());
        // A parameter with no value carries nothing; others are no credential.
        let found = QueryCredentials::scan("access_token&api_key=&q=x&key=k", &S3, &[]);
        assert_eq!(found, QueryCredentials::default());
    }

    #[test]
    fn task_tokens_and_swapped_parameters_are_stripped_not_held() {
        let token = format!("{}{}", crate::decision::tasks::TOKEN_PREFIX, "a".repeat(43));
        let found = QueryCredentials::scan(
            &format!("q=1&api%5Fkey={token}&key=agent-own&Key=again"),
            &S3,
            &["key"],
        );
        assert_eq!(found.task, Some(TokenHash::of(&token)));
        assert_eq!(found.strip, ["Key", "api%5Fkey", "key"]);
        assert!(found.held.is_empty());

        let uri: Uri = format!("https://h/p?q=1&api%5Fkey={token}&key=agent-own&Key=again&q=2")
            .parse()
            .unwrap();
        let out = without_query_params(&uri, &found.strip);
        assert_eq!(out.to_string(), "https://h/p?q=1&q=2");
        let only: Uri = "/p?key=v".parse().unwrap();
        assert_eq!(
            without_query_params(&only, &["key".into()]).to_string(),
            "/p"
        );
    }
}
