//! The metric series tollgate exports, named once. Every series a dashboard
//! or an alert may watch is registered at zero when the process starts, so
//! "nothing happened yet" reads as 0, not as "no data". (The per-action
//! request and identification counters are registered where they are
//! counted: `core::audit::register_request_series`, at start and on every
//! reload, and `register_identification_series`.)

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Decisions by tool, action and outcome (`decision`: `allow`, `deny`,
/// `approval_required`, or `would_deny` for a request report mode let
/// through).
pub const REQUESTS: &str = "tollgate_requests_total";
/// Requests report mode forwarded although policy denies them, by `tool`
/// and the denial's `reason`.
pub const WOULD_DENY: &str = "tollgate_would_deny_total";
/// Time to decide, whichever front asked.
pub const DECISION_DURATION: &str = "tollgate_decision_duration_seconds";
/// Time to the upstream's response head.
pub const UPSTREAM_DURATION: &str = "tollgate_upstream_duration_seconds";
/// Agent connections open now.
pub const OPEN_CONNECTIONS: &str = "tollgate_open_connections";
/// Reloads by `result`: `ok` or `refused`.
pub const RELOADS: &str = "tollgate_reloads_total";
/// Minted interception certificates reused or made, by `result`.
pub const LEAF_CACHE: &str = "tollgate_leaf_cache_total";
/// The embedded decision cache, by `result`: `hit` or `miss`.
pub const DECISION_CACHE: &str = "tollgate_decision_cache_total";
/// A remote decider's answers, by `result`.
pub const REMOTE_DECISIONS: &str = "tollgate_remote_decisions_total";

/// Callers identified, by `source` (`mtls`, `jwt`, `envoy_mtls`,
/// `envoy_jwt`, `source_address`, `static`; `none` when refused) and
/// `outcome` (`identified`, or the refusal's reason).
pub const IDENTIFICATIONS: &str = "tollgate_identifications_total";

/// Requests a proxy holds for an approval's verdict now.
pub const HELD_REQUESTS: &str = "tollgate_held_requests";
/// Approval changes made by this process, by `event`.
pub const APPROVAL_EVENTS: &str = "tollgate_approval_events_total";

/// MCP tools whose definition differs from their pin, by `tool` (the
/// MCP server's catalog tool): counted once per new definition, where the
/// pins are kept.
pub const MCP_TOOL_CHANGES: &str = "tollgate_mcp_tool_changes_total";

/// Connections and requests refused at a limit (`limit`: `connections`,
/// `tunnels`, `requests in flight`): overload answered, not queued.
pub const SHED_TOTAL: &str = "tollgate_shed_total";
/// Failed writes to the audit output (each retry of a failing output
/// counts again).
pub const AUDIT_WRITE_FAILURES: &str = "tollgate_audit_write_failures_total";
/// Audit lines lost: held for a failing output beyond its limit, or cut in
/// two by a pipe reader that went away.
pub const AUDIT_LINES_DROPPED: &str = "tollgate_audit_lines_dropped_total";

/// Every series with a fixed set of labels: (name, label, values).
const FIXED: [(&str, &str, &[&str]); 6] = [
    (RELOADS, "result", &["ok", "refused"]),
    (LEAF_CACHE, "result", &["hit", "miss"]),
    (DECISION_CACHE, "result", &["hit", "miss"]),
    (
        REMOTE_DECISIONS,
        "result",
        &["cache_hit", "answered", "unavailable"],
    ),
    (
        APPROVAL_EVENTS,
        "event",
        &["requested", "approved", "denied", "used", "expired"],
    ),
    (
        SHED_TOTAL,
        "limit",
        &["connections", "tunnels", "requests in flight"],
    ),
];

/// Describe every metric and register every fixed series at zero. Call
/// once, after the recorder is installed.
pub fn register() {
    describe_counter!(REQUESTS, "Decisions by tool, action and outcome.");
    describe_counter!(
        WOULD_DENY,
        "Requests forwarded in report mode although policy denies them, by tool and reason."
    );
    describe_histogram!(
        DECISION_DURATION,
        Unit::Seconds,
        "Time to decide one request, whichever front asked."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request upstream to its response head."
    );
    describe_gauge!(OPEN_CONNECTIONS, "Agent connections open now.");
    describe_counter!(RELOADS, "Reloads of catalog, policies and credentials.");
    describe_counter!(LEAF_CACHE, "Interception certificates reused or minted.");
    describe_counter!(DECISION_CACHE, "Lookups in the embedded decision cache.");
    describe_counter!(REMOTE_DECISIONS, "Answers of a remote decision service.");
    describe_gauge!(
        HELD_REQUESTS,
        "Requests held for an approval's verdict now."
    );
    describe_counter!(
        APPROVAL_EVENTS,
        "Approval changes made by this process: requested, approved, denied, used, expired."
    );
    describe_counter!(
        MCP_TOOL_CHANGES,
        "MCP tool definitions that differ from their pin, by the server's catalog tool."
    );
    describe_counter!(
        SHED_TOTAL,
        "Connections and requests refused at a limit (limits: in the configuration)."
    );
    describe_counter!(
        IDENTIFICATIONS,
        "Callers identified, by identity source and outcome."
    );
    describe_counter!(
        AUDIT_WRITE_FAILURES,
        "Failed writes to the audit output, retries included."
    );
    describe_counter!(
        AUDIT_LINES_DROPPED,
        "Audit lines lost to a failing audit output."
    );
    for (name, label, values) in FIXED {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
    let _ = metrics::histogram!(DECISION_DURATION);
    let _ = metrics::histogram!(UPSTREAM_DURATION);
    metrics::gauge!(OPEN_CONNECTIONS).increment(0.0);
    metrics::gauge!(HELD_REQUESTS).increment(0.0);
    metrics::counter!(AUDIT_WRITE_FAILURES).increment(0);
    metrics::counter!(AUDIT_LINES_DROPPED).increment(0);
}
