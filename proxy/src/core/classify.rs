//! Classify: name the request from the catalog. A host the catalog does not
//! cover is named by the built-in `connect` action on host:port, so it is
//! still decided by policy, never passed through unnamed.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method, Uri};

use crate::catalog::{Catalog, Classification, McpServerRef, RiskClass};
use crate::decision::{DecisionRequest, CONNECT_ACTION};
use crate::error::ProxyError;

use super::mcp::{self, McpError, McpLimits, McpMessage};

/// Where a request goes: from the absolute-form URI, the CONNECT authority
/// (for requests read inside a tunnel), or Envoy's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub tls: bool,
    /// Normalized: lower-case, no brackets, no trailing dot.
    pub host: String,
    pub port: u16,
}

impl RequestTarget {
    /// The target an authority names, its port the scheme's default
    /// unless it has one. Credentials in it are refused, never passed on.
    pub fn from_authority(
        authority: &http::uri::Authority,
        tls: bool,
    ) -> Result<RequestTarget, ProxyError> {
        if authority.as_str().contains('@') {
            return Err(ProxyError::MalformedRequest(
                "credentials in the request's host are not accepted".into(),
            ));
        }
        let (host, port) = authority_host_port(authority)?;
        if host.is_empty() {
            return Err(ProxyError::MalformedRequest("request names no host".into()));
        }
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(ProxyError::MalformedRequest(
                "port 0 cannot be reached".into(),
            ));
        }
        Ok(RequestTarget { tls, host, port })
    }

    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What a request is, in policy terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `None` for traffic the catalog does not cover.
    pub tool: Option<Arc<str>>,
    pub action: Arc<str>,
    pub resource: String,
    pub risk: RiskClass,
    pub sensitivity: Arc<str>,
    /// An MCP tool call's declared arguments, as one JSON object
    /// (`context.arguments`).
    pub arguments: Option<Arc<str>>,
    /// The MCP tool a `tools/call` names.
    pub mcp_tool: Option<Arc<str>>,
}

impl Named {
    /// The name for traffic the catalog does not cover.
    pub fn connect(target: &RequestTarget) -> Named {
        Named {
            tool: None,
            action: Arc::from(CONNECT_ACTION),
            resource: target.host_port(),
            risk: RiskClass::Unknown,
            sensitivity: Arc::from("unknown"),
            arguments: None,
            mcp_tool: None,
        }
    }

    /// The name a proxy deciding remotely put in its `Decide` request.
    pub fn of_request(request: &DecisionRequest) -> Named {
        let context = &request.context;
        Named {
            tool: (!context.tool.is_empty()).then(|| Arc::from(context.tool.as_str())),
            action: Arc::from(request.action.as_str()),
            resource: request.resource.clone(),
            risk: context.risk,
            sensitivity: Arc::from(context.sensitivity.as_str()),
            arguments: context.arguments.clone(),
            mcp_tool: context.mcp_tool.clone(),
        }
    }

    /// Headers that carry credentials for this request's tool (none for
    /// an uncovered host): where a task token may sit, and what is stripped.
    pub fn credential_headers<'c>(&self, catalog: &'c Catalog) -> &'c [HeaderName] {
        self.tool
            .as_deref()
            .and_then(|tool| catalog.credential_headers(tool))
            .unwrap_or_default()
    }
}

pub fn classify(
    catalog: &Catalog,
    target: &RequestTarget,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Named, ProxyError> {
    let path = uri.path();
    check_path(path)?;
    let Some(c) = catalog.classify(&target.host, method, path, uri.query(), headers) else {
        return Ok(Named::connect(target));
    };
    // No route names this path, yet it may name one as a lenient upstream
    // reads it: the request would pass as `<tool>:unknown` and act as
    // that route. Refused rather than guessed either way.
    if c.risk == RiskClass::Unknown {
        if let Some(read) = upstream_reading(path) {
            if let Some(other) = catalog
                .classify(&target.host, method, &read, uri.query(), headers)
                .filter(|o| o.risk != RiskClass::Unknown)
            {
                return Err(ProxyError::MalformedRequest(format!(
                    "the path can be read as `{read}` ({}), which it does not match as sent; send it in that form",
                    other.action
                )));
            }
        }
    }
    Ok(Named::from(c))
}

impl From<Classification> for Named {
    fn from(c: Classification) -> Named {
        Named {
            tool: Some(c.tool),
            action: c.action,
            resource: c.resource,
            risk: c.risk,
            sensitivity: c.sensitivity,
            arguments: None,
            mcp_tool: None,
        }
    }
}

/// A request to an MCP server the catalog declares, read: its message
/// when it carries one.
pub struct McpCall<'c, 'b> {
    server: McpServerRef<'c>,
    message: Option<McpMessage<'b>>,
    /// Set for a method other than POST: not the protocol's.
    unknown: bool,
}

/// The MCP request this is, or `None` for any other request. Only a POST
/// carries messages: the event stream (GET) and the end of a session
/// (DELETE) are the protocol's, any other method is unknown. The front
/// must have read a POST's body. Of a batch, message `element` (the
/// first when `None`: a batch of one).
pub fn read_mcp<'c, 'b>(
    catalog: &'c Catalog,
    target: &RequestTarget,
    method: &Method,
    uri: &Uri,
    body: Option<&'b [u8]>,
    element: Option<usize>,
) -> Result<Option<McpCall<'c, 'b>>, ProxyError> {
    let Some(server) = catalog.mcp_server(&target.host, uri.path()) else {
        return Ok(None);
    };
    if method != Method::POST {
        let unknown = method != Method::GET && method != Method::DELETE;
        return Ok(Some(McpCall {
            server,
            message: None,
            unknown,
        }));
    }
    let body = body.ok_or_else(|| {
        ProxyError::MalformedRequest(
            "an MCP request is decided on its body, which did not come".into(),
        )
    })?;
    let read = mcp::read(body, &McpLimits::default())?;
    let Some(message) = read.messages.into_iter().nth(element.unwrap_or(0)) else {
        return Err(McpError::EmptyBatch.into());
    };
    Ok(Some(McpCall {
        server,
        message: Some(message),
        unknown: false,
    }))
}

impl<'c, 'b> McpCall<'c, 'b> {
    pub fn message(&self) -> Option<&McpMessage<'b>> {
        self.message.as_ref()
    }

    /// The server, when the message asks it for its tools (`tools/list`),
    /// whose answer the front filters.
    pub fn lists_tools(&self) -> Option<McpServerRef<'c>> {
        matches!(&self.message, Some(McpMessage::Protocol { method, .. }) if method == "tools/list")
            .then_some(self.server)
    }

    /// The action the message is decided as; a tool call whose declared
    /// arguments do not match the catalog is refused.
    pub fn named(&self) -> Result<Named, ProxyError> {
        let server = &self.server;
        let c = match &self.message {
            None if self.unknown => server.unknown_method(),
            None => server.protocol(),
            Some(McpMessage::ToolCall {
                name, arguments, ..
            }) => {
                let read = arguments.members(server.reads(name));
                let (c, declared) =
                    server
                        .tool_call(name, &read)
                        .map_err(|error| McpError::Arguments {
                            tool: name.clone(),
                            error,
                        })?;
                return Ok(Named {
                    arguments: declared.map(Arc::from),
                    mcp_tool: Some(Arc::from(name.as_str())),
                    ..Named::from(c)
                });
            }
            Some(McpMessage::ResourceRead { .. }) => server.resources_read(),
            Some(McpMessage::PromptGet { .. }) => server.prompts_get(),
            Some(McpMessage::Protocol { .. } | McpMessage::Response { .. }) => server.protocol(),
            Some(McpMessage::Other { .. }) => server.unknown_method(),
        };
        Ok(Named::from(c))
    }
}

/// The path as a lenient upstream may read it: slashes merged (nginx's
/// `merge_slashes`), unreserved characters percent-decoded (RFC 3986
/// §6.2.2.2), and lower-cased (case-insensitive servers). `None` when that is the
/// path as sent.
fn upstream_reading(path: &str) -> Option<String> {
    let mut read = String::with_capacity(path.len());
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && read.ends_with('/') && segments.peek().is_some() {
            continue;
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let decoded = (bytes[i] == b'%')
                .then(|| segment.get(i + 1..i + 3))
                .flatten()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
            match decoded {
                Some(b) => {
                    read.push(char::from(b.to_ascii_lowercase()));
                    i += 3;
                }
                None => {
                    read.push(char::from(bytes[i].to_ascii_lowercase()));
                    i += 1;
                }
            }
        }
        if segments.peek().is_some() {
            read.push('/');
        }
    }
    (read != path).then_some(read)
}

/// Refuse paths the upstream might read differently from the catalog: dot
/// segments (`/a/../b`) and encoded separators (`%2F`, `%5C`) would let a
/// request be classified as one route and served as another.
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    if !path.starts_with('/') && path != "*" {
        return Err(ProxyError::MalformedRequest(
            "request path must start with `/`".into(),
        ));
    }
    // Runs on every request: compare bytes in place, allocate nothing.
    let bytes = path.as_bytes();
    let encoded_separator = bytes.windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    });
    if encoded_separator || bytes.contains(&b'\\') {
        return Err(ProxyError::MalformedRequest(
            "encoded path separators are not accepted".into(),
        ));
    }
    if path.split('/').any(is_dot_segment) {
        return Err(ProxyError::MalformedRequest(
            "dot segments in the path are not accepted".into(),
        ));
    }
    // Servlet containers drop `;` parameters from segments
    // (`/merge;x` is `/merge` to them), so a parameter could move a request
    // to a resource the catalog did not name.
    if bytes.contains(&b';') {
        return Err(ProxyError::MalformedRequest(
            "`;` parameters in the path are not accepted".into(),
        ));
    }
    // `%` must start an escape: `%zz` or a cut-off `%2` is read one way by
    // one server and another way (or refused) by the next; an escaped
    // control character (`%00`) ends a path early for some.
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let escaped = rest
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            None => {
                return Err(ProxyError::MalformedRequest(
                    "invalid percent-encoding in the path".into(),
                ))
            }
            Some(b) if b.is_ascii_control() => {
                return Err(ProxyError::MalformedRequest(
                    "an escaped control character in the path".into(),
                ))
            }
            Some(_) => rest = &rest[at + 3..],
        }
    }
    Ok(())
}

/// `.` or `..`, each dot possibly percent-encoded (`%2e`, `%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1..3].eq_ignore_ascii_case(b"2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// The host (normalized) and port an authority names. `http` parses
/// leniently and reads what it cannot parse as absent: `example.com:44x`
/// has no port (so the scheme's default would be used), `[::1]x` is
/// `[::1]`, `a[b` is a host. A server may read such an authority another
/// way, so it is refused here instead of being guessed at.
pub fn authority_host_port(
    authority: &http::uri::Authority,
) -> Result<(String, Option<u16>), ProxyError> {
    let malformed = |what: &str| ProxyError::MalformedRequest(format!("the request's host {what}"));
    let text = authority.as_str();
    let host_port = text.rsplit_once('@').map_or(text, |(_, hp)| hp);
    let host = authority.host();
    // `Authority::host` is the start of what follows any userinfo.
    let rest = host_port.get(host.len()..).unwrap_or_default();
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        // RFC 3986 §3.2.3: an empty port is the scheme's default.
        Some("") => None,
        Some(digits) if digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(
            digits
                .parse()
                .map_err(|_| malformed("has a port above 65535"))?,
        ),
        _ => return Err(malformed("has a port that is not a number")),
    };
    match host.strip_prefix('[') {
        Some(literal) => {
            let literal = literal.strip_suffix(']').unwrap_or(literal);
            if literal.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(malformed(
                    "has a bracketed part that is not an IPv6 address",
                ));
            }
        }
        None if host.contains(['[', ']']) => return Err(malformed("has a stray bracket")),
        None => {}
    }
    Ok((normalize_host(host), port))
}

/// Lower-case, no trailing dot, no IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mcp_request_is_named_by_its_method_and_message() {
        let catalog = Catalog::from_sources(&[(
            "m.yaml".into(),
            "tool: m\nendpoints:\n  - hosts: [m.test]\n    mcp:\n      path: /mcp\n      tools:\n        - { name: look, risk: read }\n    routes: []\n".into(),
        )])
        .unwrap();
        let target = RequestTarget {
            tls: true,
            host: "m.test".into(),
            port: 443,
        };
        let uri: Uri = "/mcp".parse().unwrap();
        let name = |method: Method, body: Option<&str>| {
            let call = read_mcp(
                &catalog,
                &target,
                &method,
                &uri,
                body.map(str::as_bytes),
                None,
            )?;
            call.map(|c| c.named().map(|n| n.action.to_string()))
                .transpose()
        };
        assert_eq!(
            name(Method::GET, None).unwrap().as_deref(),
            Some("m:mcp.protocol")
        );
        assert_eq!(
            name(Method::DELETE, None).unwrap().as_deref(),
            Some("m:mcp.protocol")
        );
        assert_eq!(
            name(Method::PUT, None).unwrap().as_deref(),
            Some("m:unknown")
        );
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"look"}}"#;
        assert_eq!(
            name(Method::POST, Some(call)).unwrap().as_deref(),
            Some("m:look")
        );
        assert!(
            name(Method::POST, None).is_err(),
            "a POST is decided on its body"
        );
        // Each message of a batch is named on its own.
        let batch = format!(r#"[{call},{{"jsonrpc":"2.0","id":2,"method":"ping"}}]"#);
        let element = |i| {
            read_mcp(
                &catalog,
                &target,
                &Method::POST,
                &uri,
                Some(batch.as_bytes()),
                Some(i),
            )
            .unwrap()
            .unwrap()
            .named()
            .unwrap()
            .action
        };
        assert_eq!((&*element(0), &*element(1)), ("m:look", "m:mcp.protocol"));
        let other: Uri = "/other".parse().unwrap();
        assert!(
            read_mcp(&catalog, &target, &Method::POST, &other, None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn tricky_paths_are_refused() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/%2E",
            "/a/%2e./b",
            "/a%5Cb",
            "/repos/acme%2Fapi",
            "/a\\b",
            "relative",
            "/%2",
            "/a%zzb",
            "/a%",
            "/a%+1",
            "/a/1;x=y",
            "/a%00",
            "/a%7F",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/a/b.c/d",
            "/a/...",
            "/a/%2e%2e%2e",
            "/v1/chat/completions",
            "/a%20b",
            "/a/.well-known/x",
            "/%41%7e",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn paths_are_read_as_lenient_upstreams_would() {
        assert_eq!(upstream_reading("/repos/acme/api"), None);
        for (sent, read) in [
            ("/repos//acme/api", "/repos/acme/api"),
            ("//repos/acme/api", "/repos/acme/api"),
            ("/Repos/acme/api", "/repos/acme/api"),
            ("/rep%6Fs/acme/api", "/repos/acme/api"),
            ("/a/%2Fb", "/a/%2fb"),
        ] {
            assert_eq!(upstream_reading(sent).as_deref(), Some(read), "{sent}");
        }
    }

    #[test]
    fn authorities_http_reads_leniently_are_refused() {
        let read = |text: &str| authority_host_port(&text.parse().unwrap());
        assert_eq!(
            read("API.example.com:8443").unwrap(),
            ("api.example.com".into(), Some(8443))
        );
        assert_eq!(read("[::1]:443").unwrap(), ("::1".into(), Some(443)));
        assert_eq!(read("example.com:").unwrap(), ("example.com".into(), None));
        assert_eq!(read("example.com").unwrap(), ("example.com".into(), None));
        // Found by fuzzing (fuzz/regressions/authority/): each was read as
        // another host or port than the text says.
        for bad in [
            "example.com:44x",
            "example.com:99999",
            "[::1]x:80",
            "h[4002:8::1db]:80",
            "[zz]:80",
            "[]:80",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.GitHub.com."), "api.github.com");
        assert_eq!(normalize_host("[::1]"), "::1");
    }
}
