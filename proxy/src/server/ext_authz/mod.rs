//! Envoy's `envoy.service.auth.v3.Authorization/Check`, a front of the
//! decision core like the proxy: Envoy's attributes become the core's
//! input, and the core's verdict becomes Envoy's answer (the credential
//! plan as headers to remove and set, or the refusal the proxy would send).
//! Envoy fails closed with `failure_mode_allow: false`: an error here is a
//! non-OK gRPC status, and Envoy then answers 403 itself.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::QueryParameter;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;
use http::uri::Authority;
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::core::audit::{AuditRecord, RequestLine};
use crate::core::classify::RequestTarget;
use crate::core::plan::{names_param, CredentialPlan};
use crate::core::{self, Caller, Inbound, Mode, Verdict};
use crate::decision::credentials::{CredentialError, Placement};
use crate::error::ProxyError;
use crate::identity::{CallerIdentity, EnvoySources, Identity, IdentityError, IdentitySource};

use super::DecisionPlane;

mod wire;

pub use wire::CheckRequest;

/// The gRPC service Envoy calls, as health checks name it.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// Its one method, answered by `server::front` without tonic.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The route-level context extension an Envoy operator sets to name the
/// workload when connections carry no mTLS identity.
pub const WORKLOAD_EXTENSION: &str = "tollgate_workload";

pub struct ExtAuthz {
    plane: Arc<DecisionPlane>,
    /// The `listener` and `mode` of its audit lines.
    listener: Arc<str>,
}

impl ExtAuthz {
    pub fn new(plane: Arc<DecisionPlane>) -> ExtAuthz {
        ExtAuthz {
            plane,
            listener: "envoy".into(),
        }
    }

    fn caller(&self, identity: CallerIdentity) -> Caller {
        Caller {
            listener: self.listener.clone(),
            mode: Mode::ExtAuthz,
            identity,
            connect_task: None,
            original_destination: None,
        }
    }
}

/// The parts of a `CheckRequest` tollgate decides on.
struct Attributes {
    identity: CallerIdentity,
    method: Method,
    target: RequestTarget,
    uri: Uri,
    headers: HeaderMap,
    /// The whole body, when Envoy sent it or the request has none; `None`
    /// when it is not known (not sent, or cut at the filter's limit).
    body: Option<Bytes>,
}

/// The header Envoy adds when it sends the body: `false` means whole.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// Who is asking, strongest first: Envoy's mTLS principal, a JWT Envoy's
/// `jwt_authn` verified, a JWT in the request's headers (verified here),
/// the route's `tollgate_workload` extension.
fn caller_identity(
    sources: &EnvoySources,
    principal: Option<String>,
    metadata: Option<wire::Metadata>,
    extension: Option<Arc<str>>,
) -> CallerIdentity {
    let presented = match principal {
        Some(principal) if !principal.is_empty() => {
            let identity = Identity::named(IdentitySource::EnvoyMtls, principal.into());
            let domain = &identity.attributes.trust_domain;
            Some(
                if domain.is_empty() || sources.trust_domains.allows(domain) {
                    Ok(Arc::new(identity))
                } else {
                    Err(IdentityError::TrustDomainRefused(domain.clone()))
                },
            )
        }
        _ => sources.jwt_authn.as_ref().and_then(|(key, verifier)| {
            let payload = metadata?
                .filter_metadata
                .into_iter()
                .find(|e| e.key == JWT_AUTHN_FILTER)?
                .value?
                .fields
                .remove(key)?;
            Some(match json(payload) {
                serde_json::Value::Object(claims) => {
                    verifier.verified_elsewhere(&claims, IdentitySource::EnvoyJwt)
                }
                _ => Err(IdentityError::Malformed(
                    "jwt_authn's payload is not an object".into(),
                )),
            })
        }),
    };
    CallerIdentity {
        presented,
        jwt: sources.jwt.clone(),
        jwt_header: sources.jwt_header.clone(),
        fallback: extension.map(|name| Arc::new(Identity::named(IdentitySource::Static, name))),
        last_token: None,
    }
}

/// The metadata namespace Envoy's JWT filter writes to.
const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";

/// A protobuf `Value` (Envoy's metadata) as JSON.
fn json(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind as K;
    match value.kind {
        Some(K::StringValue(s)) => serde_json::Value::String(s),
        // Whole seconds (`exp`, `nbf`) come back as integers.
        Some(K::NumberValue(n)) if n.fract() == 0.0 && n >= 0.0 && n < 2f64.powi(63) => {
            serde_json::Value::from(n as u64)
        }
        Some(K::NumberValue(n)) => serde_json::Value::from(n),
        Some(K::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(K::StructValue(s)) => {
            serde_json::Value::Object(s.fields.into_iter().map(|(k, v)| (k, json(v))).collect())
        }
        Some(K::ListValue(l)) => serde_json::Value::Array(l.values.into_iter().map(json).collect()),
        Some(K::NullValue(_)) | None => serde_json::Value::Null,
    }
}

fn attributes(check: CheckRequest, sources: &EnvoySources) -> Result<Attributes, ProxyError> {
    let malformed = |m: &str| ProxyError::MalformedRequest(m.to_string());
    let attrs = check.attributes.ok_or_else(|| malformed("no attributes"))?;
    let http = attrs
        .request
        .and_then(|r| r.http)
        .ok_or_else(|| malformed("no HTTP request attributes"))?;
    let extension = attrs
        .context_extensions
        .into_iter()
        .find(|e| e.key == WORKLOAD_EXTENSION.as_bytes())
        .map(|e| String::from_utf8(e.value.into()).map(Arc::from))
        .transpose()
        .map_err(|_| malformed("workload extension is not UTF-8"))?;
    let identity = caller_identity(
        sources,
        attrs.source.map(|s| s.principal),
        attrs.metadata_context,
        extension,
    );
    let method = Method::from_bytes(&http.method).map_err(|_| malformed("bad method"))?;
    let tls = http.scheme == "https".as_bytes();
    let authority =
        Authority::from_maybe_shared(http.host).map_err(|_| malformed("bad host attribute"))?;
    // Read as strictly as the proxy reads a request's host: Envoy passes
    // on whatever `:authority` the client sent.
    let target = RequestTarget::from_authority(&authority, tls)?;
    let uri = Uri::from_maybe_shared(http.path).map_err(|_| malformed("bad path attribute"))?;
    let (size, text_body, raw_body) = (http.size, http.body, http.raw_body);
    let raw = http.header_map.map(|m| m.headers).unwrap_or_default();
    let mut headers = HeaderMap::with_capacity(http.headers.len() + raw.len());
    // Envoy lists the pseudo-headers too; their content is in the
    // attributes already and a header name cannot start with ':'. Any other
    // header must be valid HTTP: one left out could be an agent's own
    // credential that then would not be removed, so it refuses the check.
    let mut add = |name: &[u8], value: Bytes| {
        if name.starts_with(b":") {
            return Ok(());
        }
        let name = HeaderName::from_bytes(name).map_err(|_| malformed("bad header name"))?;
        let value = http::HeaderValue::from_maybe_shared(value)
            .map_err(|_| malformed("bad header value"))?;
        headers.append(name, value);
        Ok::<_, ProxyError>(())
    };
    for entry in http.headers {
        add(&entry.key, entry.value)?;
    }
    for entry in raw {
        let value = if entry.raw_value.is_empty() {
            entry.value
        } else {
            entry.raw_value
        };
        add(&entry.key, value)?;
    }
    // Envoy says whether the body it sent is whole; without that header
    // it sent none, which is the body only when the request declared none.
    let body = if headers.get(PARTIAL_BODY).is_some_and(|v| v == "false") {
        Some(if raw_body.is_empty() {
            text_body
        } else {
            raw_body
        })
    } else if size == 0 {
        Some(Bytes::new())
    } else {
        None
    };
    Ok(Attributes {
        identity,
        method,
        target,
        uri,
        headers,
        body,
    })
}

fn text(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Envoy answers the agent itself: `status`, `headers` and `body` are
/// what the agent gets.
fn denied(
    err: &ProxyError,
    status: http::StatusCode,
    (headers, body): (Vec<(HeaderName, http::HeaderValue)>, String),
    metadata: Struct,
) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::PermissionDenied as i32,
            message: err.reason().to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers: headers
                .iter()
                .filter_map(|(name, value)| Some(header(name.as_str(), value.to_str().ok()?)))
                .collect(),
            body,
        })),
        dynamic_metadata: Some(metadata),
    }
}

/// The credential plan in Envoy's terms: the agent's credential headers
/// the request carries go, the planned credential is set. Only headers the
/// request carries are listed: Envoy's work per listed header is not free,
/// and absent ones need no removal.
fn render(
    plan: &CredentialPlan<'_>,
    attrs: &Attributes,
    identity_header: &HeaderName,
) -> Result<OkHttpResponse, CredentialError> {
    // The secret is read before anything is decided about headers: a
    // refusal sends nothing upstream.
    let injected = match plan.inject() {
        Some(bound) => Some((bound, bound.value()?)),
        None => None,
    };
    let mut remove: Vec<String> = plan
        .strip()
        .filter(|h| attrs.headers.contains_key(*h))
        .map(|h| h.as_str().to_string())
        .collect();
    // A workload token in a header of its own is for tollgate, not the API.
    if attrs.headers.contains_key(identity_header)
        && !remove.iter().any(|h| h == identity_header.as_str())
    {
        remove.push(identity_header.as_str().to_string());
    }
    let mut ok = OkHttpResponse {
        // Envoy matches these on the raw name, as the agent spelled it.
        query_parameters_to_remove: plan.strip_query().to_vec(),
        ..OkHttpResponse::default()
    };
    if let Some((bound, value)) = injected {
        match bound.placement() {
            Placement::Header(name) => {
                // Overwritten in one step rather than removed and added.
                remove.retain(|h| h != name.as_str());
                ok.headers.push(header(name.as_str(), value.expose()));
            }
            Placement::Query(param) => {
                // Envoy percent-encodes what it sets and overwrites the
                // parameter as spelled; the agent's other spellings of it
                // go too.
                let spellings = attrs
                    .uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .map(|pair| pair.split_once('=').map_or(pair, |(n, _)| n))
                    .filter(|raw| *raw != param && names_param(raw, param))
                    .map(String::from);
                // Envoy removes after it sets: the parameter as spelled
                // here must stay on the list of what is set only.
                ok.query_parameters_to_remove.retain(|raw| raw != param);
                ok.query_parameters_to_remove.extend(spellings);
                ok.query_parameters_to_remove.sort_unstable();
                ok.query_parameters_to_remove.dedup();
                ok.query_parameters_to_set.push(QueryParameter {
                    key: param.clone(),
                    value: value.expose().to_string(),
                });
            }
        }
    }
    ok.headers_to_remove = remove;
    Ok(ok)
}

impl ExtAuthz {
    /// Envoy's `Check`: decide, write the audit line, answer. Every outcome
    /// is an answer; a refusal carries the HTTP status Envoy sends back.
    pub async fn check(&self, request: CheckRequest) -> CheckResponse {
        let attrs = match attributes(request, &self.plane.envoy) {
            Ok(attrs) => attrs,
            Err(err) => {
                let caller = self.caller(CallerIdentity::default());
                let record = core::refused(&caller, RequestLine::default(), &err);
                return self.answer(record, Err(err));
            }
        };
        let caller = self.caller(attrs.identity.clone());
        let snapshot = self.plane.snapshot.load();
        let inbound = Inbound {
            target: &attrs.target,
            method: &attrs.method,
            uri: &attrs.uri,
            headers: &attrs.headers,
            held: None,
            // An MCP message is decided on the body Envoy sent (the shipped
            // gateway sends it whole, up to 1 MiB).
            body: attrs.body.as_deref(),
        };
        let mut verdict = self.plane.core.http(&snapshot, &caller, inbound).await;
        // An approval gate: asked for at once, bound to the body Envoy
        // sent, and refused with its id while pending (Envoy's check is not
        // held: see docs/approvals.md). The agent sends the request again
        // once it is approved.
        let held;
        if verdict.needs_holding() {
            let Some(body) = &attrs.body else {
                let err = ProxyError::HeldBodyUnreadable(
                    "Envoy sent no body to bind the approval to: set with_request_body \
                     on the ext_authz filter"
                        .into(),
                );
                let mut record = verdict.record;
                record.refused(&err);
                return self.answer(record, Err(err));
            };
            held = verdict.held_call(body, attrs.uri.query().unwrap_or(""));
            let inbound = Inbound {
                held: Some(&held),
                ..inbound
            };
            verdict = self.plane.core.http(&snapshot, &caller, inbound).await;
        }
        let Verdict {
            mut record,
            outcome,
        } = verdict;
        let answer = match outcome {
            Ok(allowed) => render(&allowed.credentials, &attrs, &self.plane.envoy.jwt_header)
                .map_err(|err| {
                    let err = ProxyError::from(err);
                    record.refused(&err);
                    err
                }),
            Err(err) => Err(err),
        };
        self.answer(record, answer)
    }

    fn answer(
        &self,
        mut record: AuditRecord,
        answer: Result<OkHttpResponse, ProxyError>,
    ) -> CheckResponse {
        // For Envoy's access log, allowed or not.
        let mut metadata = Struct {
            fields: HashMap::from([("decision_id".to_string(), text(record.decision_id()))]),
        };
        // Report mode: Envoy forwards (the answer is OK); its access log
        // can still tell the request apart. Nothing is added toward the
        // upstream, which has no business knowing tollgate's policies.
        let would_deny = record.would_deny();
        for (key, value) in [
            ("tool", record.tool()),
            ("action", record.action()),
            ("would_deny", would_deny),
        ] {
            if let Some(v) = value {
                metadata.fields.insert(key.to_string(), text(v));
            }
        }
        let response = match answer {
            Ok(ok) => CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(ok)),
                dynamic_metadata: Some(metadata),
            },
            // An MCP call awaiting an answer: a JSON-RPC error, with 200,
            // as the proxy answers it.
            Err(err) if record.mcp_message().is_some_and(|m| m.id.is_some()) => {
                let id = record.mcp_message().and_then(|m| m.id.clone());
                let elicit = self.plane.console_url.as_deref().zip(record.mcp_version());
                let body =
                    err.json_rpc_answer(record.decision_id(), id.unwrap_or_default(), elicit);
                record.answered(http::StatusCode::OK.as_u16());
                let json = http::HeaderValue::from_static("application/json");
                let rendered = (vec![(http::header::CONTENT_TYPE, json)], body);
                denied(&err, http::StatusCode::OK, rendered, metadata)
            }
            Err(err) => {
                let format = self
                    .plane
                    .snapshot
                    .load()
                    .catalog
                    .error_format(record.tool().unwrap_or(""));
                let rendered = err.rendered(record.decision_id(), format);
                denied(&err, err.status(), rendered, metadata)
            }
        };
        self.plane.audit.emit(record);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use prost::Message;

    fn peer(principal: &str, port: u32) -> Peer {
        Peer {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            labels: HashMap::from([("app".into(), "agent".into())]),
            principal: principal.into(),
            ..Default::default()
        }
    }

    /// Envoy's message with the fields tollgate does not read filled in
    /// too, through the wire as it reaches the service.
    fn check(mut http: HttpRequest, principal: &str, extension: Option<&str>) -> CheckRequest {
        http.id = "1234567890".into();
        http.protocol = "HTTP/1.1".into();
        http.size = 3;
        http.body = "{ }".into();
        let mut extensions = HashMap::from([("route".to_string(), "items".to_string())]);
        if let Some(w) = extension {
            extensions.insert(WORKLOAD_EXTENSION.into(), w.into());
        }
        let full = EnvoyCheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer(principal, 40312)),
                destination: Some(peer("", 10000)),
                request: Some(AttrRequest {
                    time: Some(envoy_types::pb::google::protobuf::Timestamp {
                        seconds: 1_800_000_000,
                        nanos: 1,
                    }),
                    http: Some(http),
                }),
                context_extensions: extensions,
                ..Default::default()
            }),
        };
        CheckRequest::decode(full.encode_to_vec().as_slice()).unwrap()
    }

    fn http(method: &str, host: &str, path: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            host: host.into(),
            path: path.into(),
            scheme: "https".into(),
            headers: HashMap::from([("x-amz-copy-source".into(), "b/k".into())]),
            ..Default::default()
        }
    }

    fn attributes_of(request: CheckRequest) -> Result<Attributes, ProxyError> {
        attributes(request, &EnvoySources::default())
    }

    /// The identity the check settled before its headers are read.
    fn presented(a: &Attributes) -> Option<&str> {
        match &a.identity.presented {
            Some(Ok(identity)) => Some(&identity.name),
            _ => None,
        }
    }

    #[test]
    fn attributes_name_target_identity_and_headers() {
        let a = attributes_of(check(
            http("POST", "API.github.com:8443", "/repos/a/b/pulls?x=1"),
            "",
            Some("spiffe://td/ns/a/sa/b"),
        ))
        .unwrap();
        // The route extension: a fallback, the weakest source.
        assert_eq!(presented(&a), None);
        let fallback = a.identity.fallback.as_ref().unwrap();
        assert_eq!(&*fallback.name, "spiffe://td/ns/a/sa/b");
        assert_eq!(fallback.source(), IdentitySource::Static);
        assert_eq!(
            (a.target.host.as_str(), a.target.port, a.target.tls),
            ("api.github.com", 8443, true)
        );
        assert_eq!(a.uri.path(), "/repos/a/b/pulls");
        assert_eq!(a.uri.query(), Some("x=1"));
        assert!(a.headers.contains_key("x-amz-copy-source"));
    }

    #[test]
    fn raw_headers_are_read_like_the_header_map() {
        // Envoy's `encode_raw_headers: true`: the headers arrive as a list,
        // values as bytes, and must still be seen (a credential header the
        // agent sent is only removed if tollgate sees it).
        let mut raw = http("GET", "api.github.com", "/");
        raw.headers.clear();
        raw.header_map = Some(core::HeaderMap {
            headers: [
                (":path", &b"/"[..]),
                ("x-api-key", b"agent-held"),
                ("x-opaque", b"\xfe\x80"),
                ("accept", b"a"),
                ("accept", b"b"),
            ]
            .into_iter()
            .map(|(key, value)| core::HeaderValue {
                key: key.into(),
                raw_value: value.to_vec(),
                ..Default::default()
            })
            .collect(),
        });
        let a = attributes_of(check(raw, "", Some("w"))).unwrap();
        assert_eq!(a.headers["x-api-key"], "agent-held");
        assert_eq!(a.headers["x-opaque"].as_bytes(), b"\xfe\x80");
        assert_eq!(a.headers.get_all("accept").iter().count(), 2);
        assert!(!a.headers.keys().any(|k| k.as_str().starts_with(':')));
    }

    #[test]
    fn damaged_requests_are_refused_or_read_never_a_panic() {
        // Envoy's bytes with a few bytes changed, or cut short: protobuf
        // either refuses them or yields fields that `attributes` checks.
        let mut raw = http("POST", "api.github.com:8443", "/repos/a/b/pulls?x=1");
        raw.header_map = Some(core::HeaderMap {
            headers: vec![core::HeaderValue {
                key: "x-raw".into(),
                raw_value: b"v".to_vec(),
                ..Default::default()
            }],
        });
        let wire = check(raw, "spiffe://td/ns/a/sa/b", Some("w")).encode_to_vec();
        let mut rng = crate::testing::Rng(0x9e37_79b9_7f4a_7c15);
        let (mut decoded, mut read) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = wire.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.below(256) as u8;
            }
            bytes.truncate(bytes.len() - rng.below(4));
            let Ok(request) = CheckRequest::decode(bytes.as_slice()) else {
                continue;
            };
            decoded += 1;
            if let Ok(a) = attributes_of(request) {
                read += 1;
                assert!(a.uri.path().starts_with('/'), "{}", a.uri);
                assert!(!a.headers.keys().any(|k| k.as_str().starts_with(':')));
            }
        }
        // Most damage lands in a value: both outcomes must have been seen.
        assert!(
            decoded > 500 && read > 500,
            "{decoded} decoded, {read} read"
        );
        assert!(read < 20_000, "no damaged request was refused");
    }

    #[test]
    fn the_mtls_principal_wins_over_the_route_extension() {
        let a = attributes_of(check(
            http("GET", "api.github.com", "/"),
            "spiffe://td/ns/real/sa/x",
            Some("spiffe://td/ns/route/sa/y"),
        ))
        .unwrap();
        assert_eq!(presented(&a), Some("spiffe://td/ns/real/sa/x"));
    }

    #[test]
    fn envoys_principal_answers_to_the_allowed_trust_domains() {
        let sources = EnvoySources {
            trust_domains: crate::identity::TrustDomains::new(vec!["cluster.local".into()]),
            ..EnvoySources::default()
        };
        let identify = |principal: &str| {
            attributes(
                check(http("GET", "api.github.com", "/"), principal, None),
                &sources,
            )
            .unwrap()
            .identity
            .presented
            .unwrap()
            .map(|i| i.name.to_string())
        };
        assert_eq!(
            identify("spiffe://cluster.local/ns/a/sa/b").as_deref(),
            Ok("spiffe://cluster.local/ns/a/sa/b")
        );
        assert_eq!(
            identify("spiffe://partner.example/ns/a/sa/b"),
            Err(IdentityError::TrustDomainRefused("partner.example".into()))
        );
    }

    #[test]
    fn malformed_attributes_are_refused_not_guessed() {
        assert!(attributes_of(CheckRequest::default()).is_err());
        let mut control_byte = http("GET", "api.github.com", "/");
        control_byte
            .headers
            .insert("x-api-key".into(), "agent\u{1}key".into());
        for bad in [
            control_byte,
            http("GET", "", "/"),
            http("GET", "bad host", "/"),
            http("GET", "api.github.com:44x", "/"),
            http("GET", "api.github.com:0", "/"),
            http("GET", "user:secret@api.github.com", "/"),
            http("GET", "[::1]x", "/"),
            http("G E T", "api.github.com", "/"),
            http("GET", "api.github.com", "no slash ^"),
        ] {
            let err = attributes_of(check(bad, "", Some("w")))
                .err()
                .map(|e| e.reason().to_string());
            assert_eq!(err.as_deref(), Some("malformed_request"));
        }
    }
}
