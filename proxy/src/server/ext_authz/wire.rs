//! The ext_authz `Check` RPC on the wire, decoding only what tollgate
//! reads.
//!
//! Envoy's `CheckRequest` carries much more than a decision needs: peer
//! addresses, the request time and id, labels, metadata, maybe the body.
//! The generated message decodes all of it, one allocation per string and
//! a hashed map of the headers, on every check. These messages keep the
//! field numbers of `envoy/service/auth/v3/attribute_context.proto` for the
//! fields tollgate reads and let protobuf skip the rest unread. A map on the
//! wire is a repeated entry message (key 1, value 2), so the headers arrive
//! as a list in Envoy's order, without hashing. What ends up in a `Uri` or a
//! `HeaderMap` is kept as `Bytes`: protobuf's bytes and string share a wire
//! type, and decoding from `Bytes` hands out slices of the received frame
//! (`server::front`), so those values are validated once, by `http`, and
//! never copied.

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`, the fields tollgate reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
    /// `map<string, string> context_extensions`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<MapEntry>,
    /// Dynamic metadata the filter was told to send
    /// (`metadata_context_namespaces`): `jwt_authn`'s verified payload.
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
}

/// `envoy.config.core.v3.Metadata`: `map<string, Struct> filter_metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(message, repeated, tag = "1")]
    pub filter_metadata: Vec<StructEntry>,
}

/// One entry of a `map<string, google.protobuf.Struct>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StructEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<prost_types::Struct>,
}

/// `AttributeContext.Peer`: only the mTLS principal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(string, tag = "4")]
    pub principal: String,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `map<string, string> headers`, Envoy's default encoding.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<MapEntry>,
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    #[prost(bytes = "bytes", tag = "6")]
    pub scheme: Bytes,
    /// The body's length as the request declared it; -1 when unknown.
    #[prost(int64, tag = "9")]
    pub size: i64,
    /// The body, when the filter sends it (`with_request_body`), as text
    /// (`body`) or, with `pack_as_bytes`, as bytes (`raw_body`).
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    /// `header_map`: what Envoy sends instead of `headers` when the filter
    /// sets `encode_raw_headers: true`.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a protobuf `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MapEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`: with raw headers the value is in
/// `raw_value` and may be any bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}
