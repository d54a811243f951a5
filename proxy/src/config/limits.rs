//! `limits:`: what one agent connection or request may cost tollgate. Read
//! once at start, like the listeners they apply to.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ctx::Ctx;
use super::raw::RawLimits;
use super::ConfigError;

// Defaults: docs/configuration.md lists the same values and compares them
// with Envoy's and nginx's.

/// The request line (method, target, version): past it, `414`.
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// The header block, names and values: past it, `431`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Header fields in one request: past it, `431`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// From the first byte of a request head to its end: past it, `408` and
/// the connection is closed.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request under way is closed after this.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An agent's TLS handshake (a TLS proxy listener, an intercepted tunnel,
/// a redirected TLS connection).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Agent connections open at once, across listeners; more are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `CONNECT` tunnels and redirected connections relayed or intercepted at
/// once; more get `503`.
pub const DEFAULT_MAX_TUNNELS: usize = 5_000;
/// Requests being decided or waiting for their upstream's answer at once;
/// more get `503` with `Retry-After`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2_048;
/// HTTP/2 streams one agent connection may have open.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams an agent may open and reset before tollgate answers them
/// (CVE-2023-44487, "rapid reset"); past it the connection is closed.
pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 20;
/// Streams tollgate may reset because the agent broke the protocol on
/// them; past it the connection is closed.
pub const DEFAULT_H2_MAX_ERROR_RESETS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_request_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// `None`: bodies stream, whatever their size.
    pub max_body_bytes: Option<u64>,
    /// A tool's own body limit, over `max_body_bytes`.
    pub tool_body_bytes: BTreeMap<String, u64>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_tunnels: usize,
    pub max_in_flight: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_resets: usize,
    pub h2_max_error_resets: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line_bytes: DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: None,
            tool_body_bytes: BTreeMap::new(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_tunnels: DEFAULT_MAX_TUNNELS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_resets: DEFAULT_H2_MAX_PENDING_RESETS,
            h2_max_error_resets: DEFAULT_H2_MAX_ERROR_RESETS,
        }
    }
}

impl Limits {
    /// The largest body a request to `tool` may have.
    pub fn body_limit(&self, tool: Option<&str>) -> Option<u64> {
        tool.and_then(|t| self.tool_body_bytes.get(t).copied())
            .or(self.max_body_bytes)
    }
}

pub(super) fn limits(raw: RawLimits, ctx: &Ctx) -> Result<Limits, ConfigError> {
    let at_least = |field: &str, value: Option<usize>, min: usize, default: usize| match value {
        None => Ok(default),
        Some(v) if v >= min => Ok(v),
        Some(v) => Err(ctx.invalid(field, format!("{v} is below the minimum of {min}"))),
    };
    let timeout = |field: &str, value: Option<&str>, default: Duration| {
        let d = ctx.duration(field, value, default)?;
        if d.is_zero() {
            return Err(ctx.invalid(field, "must be longer than 0s".into()));
        }
        Ok(d)
    };
    Ok(Limits {
        // hyper's read buffer cannot be smaller than 8 KiB, and a head
        // must fit in it.
        max_request_line_bytes: at_least(
            "limits.max_request_line_bytes",
            raw.max_request_line_bytes,
            256,
            DEFAULT_MAX_REQUEST_LINE_BYTES,
        )?,
        max_header_bytes: at_least(
            "limits.max_header_bytes",
            raw.max_header_bytes,
            1024,
            DEFAULT_MAX_HEADER_BYTES,
        )?,
        max_headers: at_least(
            "limits.max_headers",
            raw.max_headers,
            8,
            DEFAULT_MAX_HEADERS,
        )?,
        max_body_bytes: raw.max_body_bytes,
        tool_body_bytes: raw
            .tools
            .into_iter()
            .map(|(tool, l)| (tool, l.max_body_bytes))
            .collect(),
        header_read_timeout: timeout(
            "limits.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        idle_timeout: timeout(
            "limits.idle_timeout",
            raw.idle_timeout.as_deref(),
            DEFAULT_CLIENT_IDLE_TIMEOUT,
        )?,
        tls_handshake_timeout: timeout(
            "limits.tls_handshake_timeout",
            raw.tls_handshake_timeout.as_deref(),
            DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        )?,
        max_connections: at_least(
            "limits.max_connections",
            raw.max_connections,
            1,
            DEFAULT_MAX_CONNECTIONS,
        )?,
        max_tunnels: at_least(
            "limits.max_tunnels",
            raw.max_tunnels,
            1,
            DEFAULT_MAX_TUNNELS,
        )?,
        max_in_flight: at_least(
            "limits.max_in_flight",
            raw.max_in_flight,
            1,
            DEFAULT_MAX_IN_FLIGHT,
        )?,
        h2_max_concurrent_streams: raw
            .http2
            .max_concurrent_streams
            .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS)
            .max(1),
        h2_max_pending_resets: raw
            .http2
            .max_pending_resets
            .unwrap_or(DEFAULT_H2_MAX_PENDING_RESETS),
        h2_max_error_resets: raw
            .http2
            .max_error_resets
            .unwrap_or(DEFAULT_H2_MAX_ERROR_RESETS),
    })
}
