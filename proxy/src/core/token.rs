//! Which task a request runs under: the task token it presents, hashed.

use http::header::{self, HeaderMap, HeaderName};

use crate::authorization;
use crate::decision::tasks::TOKEN_PREFIX;
use crate::decision::TokenHash;

/// The task token an agent presented, hashed, from the first place that
/// holds one:
/// * `Proxy-Authorization: Bearer tgt_…`, or `Basic` with the token as the
///   password (what `HTTPS_PROXY=http://agent:tgt_…@proxy:3128` sends);
/// * `Authorization: Bearer tgt_…` or `X-Api-Key: tgt_…`, and any header
///   the catalog names for the service: the placeholder pattern, where an
///   unmodified SDK is given the task token as its API key.
///
/// A value without the prefix is not a task token (it is stripped like any
/// other agent credential, and the request is decided without a task).
pub fn from_headers(headers: &HeaderMap, service_headers: &[HeaderName]) -> Option<TokenHash> {
    if let Some(hash) = headers
        .get_all(header::PROXY_AUTHORIZATION)
        .iter()
        .find_map(|v| from_proxy_authorization(v.to_str().ok()?))
    {
        return Some(hash);
    }
    let from_value = |v: &str| {
        let v = authorization::bearer(v).unwrap_or(v.trim());
        task_token(v)
    };
    [header::AUTHORIZATION, HeaderName::from_static("x-api-key")]
        .iter()
        .chain(service_headers)
        .flat_map(|name| headers.get_all(name))
        .find_map(|v| from_value(v.to_str().ok()?))
}

/// A task token in a `Proxy-Authorization` value: `Bearer tgt_…` or
/// `Basic base64(user:tgt_…)`.
pub fn from_proxy_authorization(value: &str) -> Option<TokenHash> {
    task_token(authorization::parse(value)?.secret())
}

/// A task token as a credential parameter's value (the placeholder
/// pattern for SDKs that send their key in the query string).
pub fn from_value(value: &str) -> Option<TokenHash> {
    task_token(value.trim())
}

fn task_token(value: &str) -> Option<TokenHash> {
    value
        .starts_with(TOKEN_PREFIX)
        .then(|| TokenHash::of(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_task_token_is_found_where_clients_put_it() {
        let token = TokenHash::of("tgt_abc");
        let service = [HeaderName::from_static("x-goog-api-key")];
        for placed in [
            ("proxy-authorization", "Bearer tgt_abc"),
            // agent:tgt_abc
            ("proxy-authorization", "Basic YWdlbnQ6dGd0X2FiYw=="),
            ("authorization", "Bearer tgt_abc"),
            ("authorization", "tgt_abc"),
            ("x-api-key", "tgt_abc"),
            ("x-goog-api-key", "tgt_abc"),
        ] {
            assert_eq!(
                from_headers(&headers(&[placed]), &service),
                Some(token),
                "{placed:?}"
            );
        }
        // The tool's header counts only for that tool.
        assert_eq!(
            from_headers(&headers(&[("x-goog-api-key", "tgt_abc")]), &[]),
            None
        );
        // Real credentials are not task tokens.
        for other in [
            ("authorization", "Bearer ghp_realtoken"),
            ("proxy-authorization", "Basic YWdlbnQ6cGFzc3dvcmQ="),
            ("x-api-key", "sk-live"),
        ] {
            assert_eq!(
                from_headers(&headers(&[other]), &service),
                None,
                "{other:?}"
            );
        }
        // Proxy-Authorization wins over the request's own headers.
        let both = headers(&[
            ("authorization", "Bearer tgt_other"),
            ("proxy-authorization", "Bearer tgt_abc"),
        ]);
        assert_eq!(from_headers(&both, &[]), Some(token));
    }
}
