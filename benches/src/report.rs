//! The load harness's report: Markdown tables for every section that ran,
//! then one table of goals with the value measured for each.

use std::time::Duration;

use crate::fixtures::Percentiles;
use crate::wrk::LoadResult;

/// Bytes in a MiB, for rates and queues shown in MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

pub const DIRECT: &str = "direct";
pub const ENVOY: &str = "Envoy bare route";
pub const ENVOY_NOOP: &str = "Envoy + no-op ext_authz";
pub const ENVOY_TOLLGATE: &str = "Envoy + tollgate decision";
/// In the ext_authz pairs with `--calibrate`: a no-op server doing chosen
/// work in tollgate decision's place.
pub const ENVOY_CALIBRATION: &str = "Envoy + no-op ext_authz doing calibration work";
pub const TOLLGATE: &str = "tollgate full authz";
pub const TOLLGATE_NO_CACHE: &str = "tollgate full authz, no decision cache";
pub const TOLLGATE_REMOTE: &str = "tollgate, remote decision (warm cache)";
pub const OHA_DIRECT: &str = "direct (oha)";
pub const OHA_PLAIN: &str = "tollgate plain HTTP (oha)";
pub const MITM: &str = "tollgate MITM";
pub const BULK_DIRECT: &str = "direct";
pub const BULK_ACROSS: &str = "direct, sender on the proxy CPU";
pub const BULK_RELAY: &str = "minimal splice relay (no HTTP, no decision)";
pub const BULK_ENVOY: &str = "Envoy `CONNECT` tunnel";
pub const BULK_TOLLGATE: &str = "tollgate tunnel (`connect` action)";
pub const ID_STATIC: &str = "tollgate, static identity (wrk)";
pub const ID_JWT: &str = "tollgate, JWT identity, cached verification (wrk)";
pub const ID_PLAIN: &str = "tollgate, plain listener (oha)";
pub const ID_MTLS: &str = "tollgate, mTLS listener, X.509-SVID (oha)";
pub const HANDSHAKE_TOLLGATE: &str = "tollgate mTLS listener";
pub const HANDSHAKE_ENVOY: &str = "Envoy mTLS listener (`require_client_certificate`)";
pub const TP_HTTP_EXPLICIT: &str = "explicit listener, absolute-form HTTP (wrk)";
pub const TP_HTTP: &str = "transparent listener, redirected HTTP (wrk)";
pub const TP_HTTPS_EXPLICIT: &str = "explicit listener, `CONNECT`, HTTPS intercepted (oha)";
pub const TP_HTTPS: &str = "transparent listener, redirected HTTPS intercepted (oha)";
pub const TP_BULK_EXPLICIT: &str = "explicit listener, `CONNECT` tunnel";
pub const TP_BULK: &str = "transparent listener, redirected and relayed blind";
pub const STATE_NO_TASK: &str = "no task (tasks in memory)";
pub const STATE_MEMORY_BUDGET: &str = "task with a budget, tasks in memory";
pub const STATE_REDIS_BUDGET: &str = "task with a budget, tasks in Redis";
pub const STATE_MEMORY: &str = "task without budgets, tasks in memory";
pub const STATE_REDIS: &str = "task without budgets, tasks in Redis";
pub const MCP_REST: &str = "REST `POST` of the same size";
pub const MCP_CALL: &str = "MCP `tools/call`, 4 KiB of arguments, one read by policy";
pub const RELEASE_EMBEDDED: &str = "one process: tollgate run deciding in-process";
pub const RELEASE_SERVICE: &str = "tollgate run asking one tollgate decision";
pub const RELEASE_REPLICAS: &str =
    "tollgate run asking replica A, Approve sent to replica B, both on one Redis";

/// What an identity row is compared with: the same load against the same
/// proxy, identifying the old way.
fn identity_reference(row: &str) -> Option<&'static str> {
    match row {
        ID_JWT => Some(ID_STATIC),
        ID_MTLS => Some(ID_PLAIN),
        HANDSHAKE_TOLLGATE => Some(HANDSHAKE_ENVOY),
        _ => None,
    }
}

/// What a transparent row is compared with: the same load through the
/// explicit listener of the same process.
fn transparent_reference(row: &str) -> Option<&'static str> {
    match row {
        TP_HTTP | TP_HTTP_EXPLICIT => Some(TP_HTTP_EXPLICIT),
        TP_HTTPS | TP_HTTPS_EXPLICIT => Some(TP_HTTPS_EXPLICIT),
        TP_BULK | TP_BULK_EXPLICIT => Some(TP_BULK_EXPLICIT),
        _ => None,
    }
}

/// What a row under a task kept in Redis is compared with: the same task
/// kept in memory.
fn state_reference(row: &str) -> Option<&'static str> {
    match row {
        STATE_REDIS_BUDGET | STATE_MEMORY_BUDGET => Some(STATE_MEMORY_BUDGET),
        STATE_REDIS | STATE_MEMORY => Some(STATE_MEMORY),
        _ => None,
    }
}

/// RSS of one `tollgate run`, KiB.
#[derive(Debug, Clone)]
pub struct Memory {
    pub idle_kib: u64,
    /// After one request on a connection since closed: what serving
    /// traffic allocates once (upstream pool, caches), not per connection.
    pub warm_kib: u64,
    pub connections: usize,
    /// Per round of opening `connections` and closing them all again: RSS
    /// with them open, then after they closed. Rounds that level off mean
    /// closed connections' memory is reused; a climb every round, a leak.
    pub rounds: Vec<(u64, u64)>,
}

impl Memory {
    pub fn per_connection_kib(&self) -> f64 {
        let open = self.rounds.first().map_or(0, |r| r.0);
        (open as f64 - self.warm_kib as f64) / self.connections as f64
    }
}

/// One run of an Envoy + ext_authz stack in the alternated section.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRun {
    pub row: &'static str,
    pub load: LoadResult,
    /// CPU microseconds per request, Envoy and the authorization server.
    pub envoy_us: f64,
    pub authz_us: f64,
}

/// A row whose runs alternated with those of the row it is compared with,
/// and the CPU the proxy spent per request (or per connection) over all
/// its measured runs.
#[derive(Debug, Clone, Copy)]
pub struct ProxyRow {
    pub name: &'static str,
    pub load: LoadResult,
    pub proxy_cpu_us: f64,
}

/// What the Redis server spent on a row's requests.
#[derive(Debug, Clone, Copy)]
pub struct RedisShare {
    /// CPU microseconds per request.
    pub cpu_us: f64,
    /// Commands per request as Redis counts them: each of a pipeline's,
    /// and a script along with every command it runs.
    pub commands: f64,
}

/// A row of the task-store section; `redis` for the rows through Redis.
#[derive(Debug, Clone, Copy)]
pub struct StateRow {
    pub row: ProxyRow,
    pub redis: Option<RedisShare>,
}

/// Many gated requests held at once by one `tollgate run`, then released
/// by verdicts sent all together.
#[derive(Debug, Clone)]
pub struct HeldRequests {
    pub held: usize,
    /// Each request's body (all the same length, each different).
    pub body_bytes: usize,
    /// RSS, KiB: warm (held requests served before) and none held now.
    pub before_kib: u64,
    /// With every request held and its approval pending.
    pub holding_kib: u64,
    /// Once every request was answered and its connection closed.
    pub after_kib: u64,
    /// Then with as many idle keep-alive connections open, each after one
    /// ordinary request: what a held request costs beyond its connection.
    pub idle_kib: u64,
    pub approved: usize,
    pub denied: usize,
    /// Verdicts in flight at once.
    pub in_flight: usize,
    /// From the first verdict sent to the last answer read.
    pub release: Duration,
}

impl HeldRequests {
    /// RSS per held request, less the body it holds.
    pub fn per_request_kib(&self) -> f64 {
        let grown = self.holding_kib as f64 - self.before_kib as f64;
        grown / self.held.max(1) as f64 - self.body_bytes as f64 / 1024.0
    }

    /// RSS per idle keep-alive connection, against the same process after
    /// the release.
    pub fn per_idle_connection_kib(&self) -> f64 {
        (self.idle_kib as f64 - self.after_kib as f64) / self.held.max(1) as f64
    }
}

/// One trial of a release: from `Approve` returning, and from it being
/// sent, to the upstream receiving the held request.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub after_return: Duration,
    pub after_sent: Duration,
}

/// The release latency of one deployment shape, or why it was not
/// measured.
#[derive(Debug, Clone)]
pub struct ReleaseLatency {
    pub shape: &'static str,
    pub trials: Result<Vec<Release>, String>,
}

/// The sample at quantile `q` (nearest rank) of `sorted`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A shape's trials in ms: from `Approve` returning, and from it being
/// sent.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseSummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub sent_p50: f64,
    pub sent_p99: f64,
    /// Trials where the upstream had the request before the approver had
    /// `Approve`'s answer (counted as 0): the verdict is announced before
    /// it is answered.
    pub upstream_first: usize,
}

impl ReleaseLatency {
    pub fn summary(&self) -> Option<ReleaseSummary> {
        let trials = self.trials.as_ref().ok().filter(|t| !t.is_empty())?;
        let sorted = |f: fn(&Release) -> Duration| {
            let mut v: Vec<Duration> = trials.iter().map(f).collect();
            v.sort();
            v
        };
        let returned = sorted(|r| r.after_return);
        let sent = sorted(|r| r.after_sent);
        Some(ReleaseSummary {
            p50: ms(quantile(&returned, 0.5)),
            p99: ms(quantile(&returned, 0.99)),
            max: ms(*returned.last()?),
            sent_p50: ms(quantile(&sent, 0.5)),
            sent_p99: ms(quantile(&sent, 0.99)),
            upstream_first: returned.iter().filter(|d| d.is_zero()).count(),
        })
    }
}

/// The middle value; with an even count, the mean of the two middle ones.
pub fn median_f64(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A bulk route's medians over its runs.
pub struct BulkRow {
    pub name: &'static str,
    pub bytes_per_second: f64,
    /// Per CPU, the share of the run it was busy (all processes, softirq
    /// included).
    pub busy: Vec<f64>,
    /// Bytes queued unread in the reader's socket (`bulk::BulkRun`).
    pub reader_queue: f64,
}

#[derive(Default)]
pub struct Report {
    /// wrk rows.
    pub rows: Vec<(&'static str, LoadResult)>,
    /// The two ext_authz stacks, runs alternated.
    pub ext_authz: Vec<AuthzRun>,
    /// oha rows.
    pub oha_rows: Vec<(&'static str, LoadResult)>,
    /// One download per route.
    pub tunnel: Vec<BulkRow>,
    pub memory: Option<Memory>,
    /// Keep-alive rows identifying by JWT and mTLS, beside the static and
    /// plain rows they are compared with.
    pub identity: Vec<ProxyRow>,
    /// New mTLS connections per second, tollgate and Envoy.
    pub handshakes: Vec<ProxyRow>,
    /// Per policy-set size: cache miss, cache hit.
    pub decisions: Vec<(usize, Percentiles, Percentiles)>,
    /// One tollgate with an explicit and a transparent listener, each pair
    /// of rows alternated: keep-alive HTTP, then intercepted HTTPS.
    pub transparent: Vec<ProxyRow>,
    /// The same tollgate's blind relay, through `CONNECT` and redirected.
    pub transparent_bulk: Vec<BulkRow>,
    /// Requests under tasks kept in memory and in Redis, runs alternated.
    pub state: Vec<StateRow>,
    /// The same search as a REST `POST` and as an MCP `tools/call`, one
    /// tollgate, runs alternated.
    pub mcp: Vec<ProxyRow>,
    /// Gated requests held at once, their memory and their release.
    pub held: Option<HeldRequests>,
    /// `Approve` → upstream, per deployment shape.
    pub release: Vec<ReleaseLatency>,
    /// p99 with idle and slowloris connections held, per proxy.
    pub slowloris: Vec<SlowlorisRow>,
    /// The decision service killed and restarted under a proxy.
    pub failover: Option<Failover>,
}

/// Per trial, ms: a restarted decision service's log line saying it
/// listens (or its spawn) → the proxy's first allowed answer.
#[derive(Debug, Clone)]
pub struct Failover {
    pub from_listening: Vec<f64>,
    pub from_spawn: Vec<f64>,
}

impl Failover {
    pub fn median(v: &[f64]) -> f64 {
        median_f64(v.to_vec()).unwrap_or(f64::NAN)
    }

    pub fn max(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// One proxy's normal traffic without and with idle and slowloris
/// connections held, and what it did with those.
#[derive(Debug, Clone)]
pub struct SlowlorisRow {
    pub name: &'static str,
    pub unloaded: LoadResult,
    pub loaded: LoadResult,
    pub idle: usize,
    /// Idle connections the proxy had closed by the end of the loaded runs.
    pub idle_closed: usize,
    pub slowloris: usize,
    pub slow: crate::slowloris::SlowStats,
}

fn get(rows: &[(&str, LoadResult)], name: &str) -> Option<LoadResult> {
    rows.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b)
}

fn shown(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.2}"))
}

impl Report {
    pub fn print(&self, footer: &str) {
        self.print_wrk();
        self.print_mcp();
        self.print_ext_authz();
        self.print_oha();
        self.print_tunnel();
        self.print_memory();
        self.print_identity();
        self.print_transparent();
        self.print_state();
        self.print_approvals();
        self.print_decisions();
        self.print_slowloris();
        self.print_failover();
        self.print_goals();
        println!("\n{footer}");
    }

    fn print_wrk(&self) {
        if self.rows.is_empty() {
            return;
        }
        let direct = get(&self.rows, DIRECT).map(|r| r.requests_per_sec);
        let envoy = get(&self.rows, ENVOY);
        println!("| row | req/s | p50 ms | p99 ms | req/s vs direct | req/s vs Envoy bare | p99 vs Envoy bare |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, r) in &self.rows {
            println!(
                "| {name} | {:.0} | {:.3} | {:.3} | {} | {} | {} |",
                r.requests_per_sec,
                r.p50_ms,
                r.p99_ms,
                shown(ratio(Some(r.requests_per_sec), direct)),
                shown(ratio(
                    Some(r.requests_per_sec),
                    envoy.map(|e| e.requests_per_sec)
                )),
                shown(ratio(Some(r.p99_ms), envoy.map(|e| e.p99_ms))),
            );
        }
        println!();
    }

    fn mcp_row(&self, name: &str) -> Option<LoadResult> {
        self.mcp.iter().find(|r| r.name == name).map(|r| r.load)
    }

    fn print_mcp(&self) {
        if self.mcp.is_empty() {
            return;
        }
        let rest = self.mcp_row(MCP_REST);
        println!(
            "| tollgate full authz, `POST` bodies of {} bytes, keep-alive, runs alternated | req/s | p50 ms | p99 ms | proxy CPU µs/req | p99 vs REST | req/s vs REST |",
            crate::mcp::mcp_body().len()
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.mcp {
            let p99 = shown(ratio(Some(r.load.p99_ms), rest.map(|r| r.p99_ms)));
            let versus = ratio(
                Some(r.load.requests_per_sec),
                rest.map(|r| r.requests_per_sec),
            );
            print_row_with(r, &[&p99], versus);
        }
        println!();
    }

    /// Median over the alternated runs of one stack.
    fn authz_median(&self, row: &str, field: impl Fn(&AuthzRun) -> f64) -> Option<f64> {
        median_f64(
            self.ext_authz
                .iter()
                .filter(|r| r.row == row)
                .map(field)
                .collect(),
        )
    }

    fn print_ext_authz(&self) {
        if self.ext_authz.is_empty() {
            return;
        }
        println!("| ext_authz, runs alternated | req/s | p99 ms | Envoy CPU µs/req | authz CPU µs/req | together µs/req |");
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &self.ext_authz {
            println!(
                "| {} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1} |",
                r.row,
                r.load.requests_per_sec,
                r.load.p99_ms,
                r.envoy_us,
                r.authz_us,
                r.envoy_us + r.authz_us
            );
        }
        for row in [ENVOY_NOOP, ENVOY_TOLLGATE, ENVOY_CALIBRATION] {
            if !self.ext_authz.iter().any(|r| r.row == row) {
                continue;
            }
            let m = |f: fn(&AuthzRun) -> f64, decimals: usize| {
                self.authz_median(row, f)
                    .map_or("–".to_string(), |v| format!("{v:.decimals$}"))
            };
            println!(
                "| **{row}, median** | {} | {} | {} | {} | {} |",
                m(|r| r.load.requests_per_sec, 0),
                m(|r| r.load.p99_ms, 3),
                m(|r| r.envoy_us, 1),
                m(|r| r.authz_us, 1),
                m(|r| r.envoy_us + r.authz_us, 1),
            );
        }
        println!();
    }

    fn print_oha(&self) {
        if self.oha_rows.is_empty() {
            return;
        }
        let plain = get(&self.oha_rows, OHA_PLAIN).map(|r| r.requests_per_sec);
        println!("| row (oha, CONNECT-capable) | req/s | p50 ms | p99 ms | req/s vs tollgate plain HTTP |");
        println!("|---|---:|---:|---:|---:|");
        for (name, r) in &self.oha_rows {
            println!(
                "| {name} | {:.0} | {:.3} | {:.3} | {} |",
                r.requests_per_sec,
                r.p50_ms,
                r.p99_ms,
                shown(ratio(Some(r.requests_per_sec), plain)),
            );
        }
        println!();
    }

    fn bulk(&self, name: &str) -> Option<f64> {
        self.tunnel
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.bytes_per_second)
    }

    fn print_tunnel(&self) {
        let versus = [
            ("vs direct", self.bulk(BULK_DIRECT)),
            ("vs Envoy tunnel", self.bulk(BULK_ENVOY)),
        ];
        print_bulk("bulk download, one connection", &self.tunnel, &versus);
    }

    fn print_memory(&self) {
        let Some(m) = &self.memory else { return };
        println!("| tollgate run, 1 worker | RSS KiB |\n|---|---:|");
        println!("| idle, after start | {} |", m.idle_kib);
        println!("| after one request (connection closed) | {} |", m.warm_kib);
        for (i, (open, closed)) in m.rounds.iter().enumerate() {
            let round = i + 1;
            println!(
                "| round {round}: {} idle keep-alive connections open | {open} |",
                m.connections
            );
            println!("| round {round}: all closed again | {closed} |");
        }
        println!(
            "| per open connection (round 1 open − after one request) ÷ {} | {:.1} |\n",
            m.connections,
            m.per_connection_kib()
        );
    }

    fn identity_rps(&self, name: &str) -> Option<f64> {
        self.identity
            .iter()
            .chain(&self.handshakes)
            .find(|r| r.name == name)
            .map(|r| r.load.requests_per_sec)
    }

    fn print_identity(&self) {
        let tables = [
            (
                "identity, HTTP/1.1 keep-alive",
                "req/s",
                "proxy CPU µs/req",
                "req/s vs static or plain",
                &self.identity,
            ),
            (
                "new mTLS connection: full handshake, 1 request, close",
                "connections/s",
                "proxy CPU µs/connection",
                "vs Envoy",
                &self.handshakes,
            ),
        ];
        for (title, rate, cpu, versus, rows) in tables {
            if rows.is_empty() {
                continue;
            }
            println!("| {title} | {rate} | p50 ms | p99 ms | {cpu} | {versus} |");
            println!("|---|---:|---:|---:|---:|---:|");
            for r in rows {
                let reference = identity_reference(r.name).and_then(|n| self.identity_rps(n));
                print_versus_row(r, ratio(Some(r.load.requests_per_sec), reference));
            }
            println!();
        }
    }

    fn transparent_rate(&self, name: &str) -> Option<f64> {
        let rows = self.transparent.iter();
        let rate = rows.map(|r| (r.name, r.load.requests_per_sec));
        let bulk = self.transparent_bulk.iter();
        rate.chain(bulk.map(|r| (r.name, r.bytes_per_second)))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn print_transparent(&self) {
        let versus = |name| {
            ratio(
                self.transparent_rate(name),
                transparent_reference(name).and_then(|r| self.transparent_rate(r)),
            )
        };
        if !self.transparent.is_empty() {
            println!("| one tollgate, explicit and transparent listeners, runs alternated | req/s | p50 ms | p99 ms | proxy CPU µs/req | vs explicit |");
            println!("|---|---:|---:|---:|---:|---:|");
            for r in &self.transparent {
                print_versus_row(r, versus(r.name));
            }
            println!();
        }
        let reference = [("vs explicit", self.transparent_rate(TP_BULK_EXPLICIT))];
        print_bulk(
            "bulk download, one connection, the same tollgate",
            &self.transparent_bulk,
            &reference,
        );
    }

    fn state_rps(&self, name: &str) -> Option<f64> {
        self.state
            .iter()
            .find(|r| r.row.name == name)
            .map(|r| r.row.load.requests_per_sec)
    }

    fn print_state(&self) {
        if self.state.is_empty() {
            return;
        }
        println!("| tollgate run, requests under a task, runs alternated | req/s | p50 ms | p99 ms | proxy CPU µs/req | Redis CPU µs/req | Redis commands/req | vs tasks in memory |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for StateRow { row: r, redis } in &self.state {
            let versus = ratio(
                Some(r.load.requests_per_sec),
                state_reference(r.name).and_then(|n| self.state_rps(n)),
            );
            let (cpu, commands) = match redis {
                Some(s) => (format!("{:.1}", s.cpu_us), format!("{:.2}", s.commands)),
                None => ("–".into(), "–".into()),
            };
            print_row_with(r, &[&cpu, &commands], versus);
        }
        println!();
    }

    fn print_approvals(&self) {
        if let Some(h) = &self.held {
            println!(
                "| {} gated requests held at once: one tollgate run, 1 worker, deciding in-process | value |\n|---|---:|",
                h.held
            );
            println!("| RSS before: warm, nothing held | {} KiB |", h.before_kib);
            println!(
                "| RSS with all {} held, each with a pending approval of its own | {} KiB |",
                h.held, h.holding_kib
            );
            println!(
                "| per held request, its {}-byte body excluded: (held − before) ÷ {} − body | {:.1} KiB |",
                h.body_bytes,
                h.held,
                h.per_request_kib()
            );
            println!(
                "| verdicts sent ({} approve, {} deny, {} in flight) → last answer read | {:.0} ms |",
                h.approved,
                h.denied,
                h.in_flight,
                ms(h.release)
            );
            println!(
                "| approved: 200 through the upstream, once each / denied: 403 `approval_denied`, never upstream | {} / {} |",
                h.approved, h.denied
            );
            println!(
                "| RSS after every answer, connections closed | {} KiB |",
                h.after_kib
            );
            println!(
                "| then {} idle keep-alive connections, each after one GET: per connection | {:.1} KiB |\n",
                h.held,
                h.per_idle_connection_kib()
            );
        }
        if self.release.is_empty() {
            return;
        }
        println!("| `Approve` returned → upstream received the held request | trials | p50 ms | p99 ms | max ms | from `Approve` sent: p50 ms | p99 ms | upstream first |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.release {
            match (&r.trials, r.summary()) {
                (Ok(trials), Some(s)) => println!(
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    r.shape,
                    trials.len(),
                    s.p50,
                    s.p99,
                    s.max,
                    s.sent_p50,
                    s.sent_p99,
                    s.upstream_first
                ),
                (Err(why), _) => println!("| {} | – | not measured: {why} | | | | | |", r.shape),
                (Ok(_), None) => println!("| {} | 0 | | | | | | |", r.shape),
            }
        }
        println!();
    }

    fn release_p99(&self, shape: &str) -> Option<f64> {
        self.release
            .iter()
            .find(|r| r.shape == shape)
            .and_then(|r| r.summary())
            .map(|s| s.p99)
    }

    fn print_decisions(&self) {
        if self.decisions.is_empty() {
            return;
        }
        println!("| Cedar decision, 1,000-route catalog | mean µs | p50 µs | p99 µs |\n|---|---:|---:|---:|");
        for (policies, miss, hit) in &self.decisions {
            for (what, p) in [("cache miss", miss), ("cache hit", hit)] {
                println!(
                    "| {policies} policies, {what} | {:.2} | {:.2} | {:.2} |",
                    p.mean, p.p50, p.p99
                );
            }
        }
        println!();
    }

    fn print_failover(&self) {
        let Some(f) = &self.failover else {
            return;
        };
        println!(
            "| decision service killed, started again ({} trials) | median ms | max ms |",
            f.from_listening.len()
        );
        println!("|---|---:|---:|");
        for (name, v) in [
            (
                "its `listening` log line → proxy's first 200",
                &f.from_listening,
            ),
            ("its spawn → proxy's first 200", &f.from_spawn),
        ] {
            println!(
                "| {name} | {:.1} | {:.1} |",
                Failover::median(v),
                Failover::max(v)
            );
        }
        println!();
    }

    fn print_slowloris(&self) {
        if self.slowloris.is_empty() {
            return;
        }
        println!("| idle + slowloris held | req/s unloaded | p99 ms unloaded | req/s loaded | p99 ms loaded | p99 loaded ÷ unloaded (goal ≤ 2) | idle closed | slowloris opened | slowloris closed | closed after (median s) | answers |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &self.slowloris {
            let answers: Vec<String> = r
                .slow
                .answers
                .iter()
                .map(|(status, n)| format!("{n}× {status}"))
                .collect();
            println!(
                "| {} ({} idle, {} slowloris) | {:.0} | {:.3} | {:.0} | {:.3} | {:.2} | {} | {} | {} | {} | {} |",
                r.name,
                r.idle,
                r.slowloris,
                r.unloaded.requests_per_sec,
                r.unloaded.p99_ms,
                r.loaded.requests_per_sec,
                r.loaded.p99_ms,
                r.loaded.p99_ms / r.unloaded.p99_ms,
                r.idle_closed,
                r.slow.opened,
                r.slow.closed,
                r.slow
                    .median_lifetime()
                    .map_or("–".into(), |s| format!("{s:.1}")),
                if answers.is_empty() {
                    "none".to_string()
                } else {
                    answers.join(", ")
                },
            );
        }
        println!();
    }

    fn print_goals(&self) {
        let rps = |rows: &[(&str, LoadResult)], n: &str| get(rows, n).map(|r| r.requests_per_sec);
        let p99 = |n: &str| get(&self.rows, n).map(|r| r.p99_ms);
        let w = |n: &str| rps(&self.rows, n);
        let bulk = |n| self.bulk(n);
        let decision = |hit: bool| {
            self.decisions
                .iter()
                .find(|(n, ..)| *n == 1_000)
                .map(|(_, miss, h)| if hit { h.p99 } else { miss.p99 })
        };
        // (goal, value, target, higher is better)
        let alternated = |n: &str| self.authz_median(n, |r| r.load.requests_per_sec);
        let id = |n: &str| self.identity_rps(n);
        let tp = |n: &str| self.transparent_rate(n);
        let state = |n: &str| self.state_rps(n);
        let mcp = |n: &str| self.mcp_row(n).map(|r| r.requests_per_sec);
        let goals: [(&str, Option<f64>, f64, bool); 22] = [
            (
                "tollgate full authz ÷ Envoy + no-op ext_authz (req/s)",
                ratio(w(TOLLGATE), w(ENVOY_NOOP)),
                2.0,
                true,
            ),
            (
                "tollgate full authz ÷ Envoy bare (req/s)",
                ratio(w(TOLLGATE), w(ENVOY)),
                1.0,
                true,
            ),
            (
                "tollgate p99 ÷ Envoy bare p99",
                ratio(p99(TOLLGATE), p99(ENVOY)),
                1.0,
                false,
            ),
            (
                "Envoy + tollgate decision ÷ Envoy + no-op ext_authz (req/s)",
                ratio(w(ENVOY_TOLLGATE), w(ENVOY_NOOP)),
                0.95,
                true,
            ),
            (
                "the same, runs alternated (median req/s)",
                ratio(alternated(ENVOY_TOLLGATE), alternated(ENVOY_NOOP)),
                0.95,
                true,
            ),
            (
                "tollgate remote, warm cache ÷ embedded (req/s)",
                ratio(w(TOLLGATE_REMOTE), w(TOLLGATE)),
                0.9,
                true,
            ),
            (
                "tollgate MITM HTTPS ÷ tollgate plain HTTP, both oha (req/s)",
                ratio(rps(&self.oha_rows, MITM), rps(&self.oha_rows, OHA_PLAIN)),
                0.8,
                true,
            ),
            // A blind tunnel is held against the relays of the same run;
            // tollgate ÷ direct stays in the tunnel table's "vs direct".
            (
                "tollgate tunnel ÷ Envoy `CONNECT` tunnel (bytes/s)",
                ratio(bulk(BULK_TOLLGATE), bulk(BULK_ENVOY)),
                1.1,
                true,
            ),
            (
                "tollgate tunnel ÷ minimal splice relay (bytes/s)",
                ratio(bulk(BULK_TOLLGATE), bulk(BULK_RELAY)),
                1.0,
                true,
            ),
            (
                "Cedar decision p99, 1,000 policies, cache miss (µs)",
                decision(false),
                50.0,
                false,
            ),
            (
                "Cedar decision p99, 1,000 policies, cache hit (µs)",
                decision(true),
                1.0,
                false,
            ),
            (
                "MCP `tools/call` with 4 KiB of arguments ÷ REST `POST` of the same size, both wrk (req/s)",
                ratio(mcp(MCP_CALL), mcp(MCP_REST)),
                0.8,
                true,
            ),
            (
                "RSS per idle keep-alive connection (KiB)",
                self.memory.as_ref().map(|m| m.per_connection_kib()),
                32.0,
                false,
            ),
            (
                "tollgate JWT identity (cached) ÷ static identity, both wrk (req/s)",
                ratio(id(ID_JWT), id(ID_STATIC)),
                0.95,
                true,
            ),
            (
                "tollgate mTLS listener ÷ plain listener, both oha (req/s)",
                ratio(id(ID_MTLS), id(ID_PLAIN)),
                0.8,
                true,
            ),
            (
                "tollgate transparent ÷ explicit listener, keep-alive HTTP, both wrk (req/s)",
                ratio(tp(TP_HTTP), tp(TP_HTTP_EXPLICIT)),
                0.95,
                true,
            ),
            (
                "tollgate transparent ÷ `CONNECT`, intercepted HTTPS, both oha (req/s)",
                ratio(tp(TP_HTTPS), tp(TP_HTTPS_EXPLICIT)),
                0.95,
                true,
            ),
            (
                "tollgate transparent blind relay ÷ `CONNECT` tunnel (bytes/s)",
                ratio(tp(TP_BULK), tp(TP_BULK_EXPLICIT)),
                0.95,
                true,
            ),
            (
                "task with a budget (never cached): tasks in Redis ÷ in memory (req/s)",
                ratio(state(STATE_REDIS_BUDGET), state(STATE_MEMORY_BUDGET)),
                0.7,
                true,
            ),
            (
                "RSS per held request, its body excluded (KiB)",
                self.held.as_ref().map(HeldRequests::per_request_kib),
                64.0,
                false,
            ),
            (
                "`Approve` → upstream p99, one process deciding in-process (ms)",
                self.release_p99(RELEASE_EMBEDDED),
                50.0,
                false,
            ),
            (
                "`Approve` → upstream p99, two decision replicas on Redis, Approve on the other (ms)",
                self.release_p99(RELEASE_REPLICAS),
                50.0,
                false,
            ),
        ];
        if goals.iter().all(|g| g.1.is_none()) {
            return;
        }
        println!("| goal | value | target | met |\n|---|---:|---:|:-:|");
        for (label, value, target, higher) in goals {
            let Some(v) = value else { continue };
            let meets = |v: f64| if higher { v >= target } else { v <= target };
            let met = meets(v);
            let sign = if higher { "≥" } else { "≤" };
            // Two decimals, or as many more as it takes for the value shown
            // to fall on the same side of the target as the value itself
            // (not "0.95 | ≥ 0.95 | no").
            let shown = (2..=6)
                .map(|decimals| format!("{v:.decimals$}"))
                .find(|s| s.parse().is_ok_and(|r: f64| meets(r) == met))
                .unwrap_or_else(|| format!("{v}"));
            println!(
                "| {label} | {shown} | {sign} {target} | {} |",
                if met { "yes" } else { "**no**" }
            );
        }
    }
}

/// A table of bulk routes: rate, the rate over each reference given, each
/// CPU's busy share, the reader's queue.
fn print_bulk(title: &str, rows: &[BulkRow], versus: &[(&str, Option<f64>)]) {
    if rows.is_empty() {
        return;
    }
    let cpus = rows.iter().map(|r| r.busy.len()).max().unwrap_or(0);
    let versus_heads: String = versus.iter().map(|(h, _)| format!(" {h} |")).collect();
    let busy_heads: String = (0..cpus).map(|c| format!(" CPU {c} busy |")).collect();
    println!(
        "| {title} | MiB/s |{versus_heads}{busy_heads} reader queue MiB |\n|---|---:|{}---:|",
        "---:|".repeat(versus.len() + cpus)
    );
    for row in rows {
        let rate = row.bytes_per_second;
        let ratios: String = versus
            .iter()
            .map(|(_, reference)| format!(" {} |", shown(ratio(Some(rate), *reference))))
            .collect();
        let busy: String = row
            .busy
            .iter()
            .map(|b| format!(" {:.0} % |", b * 100.0))
            .collect();
        println!(
            "| {} | {:.0} |{ratios}{busy} {:.1} |",
            row.name,
            rate / MIB,
            row.reader_queue / MIB,
        );
    }
    println!();
}

/// A row of req/s, latencies and CPU, and its ratio to the row it is set
/// against.
fn print_versus_row(r: &ProxyRow, versus: Option<f64>) {
    print_row_with(r, &[], versus);
}

/// The same with `more` columns before the ratio.
fn print_row_with(r: &ProxyRow, more: &[&str], versus: Option<f64>) {
    let more: String = more.iter().map(|c| format!(" {c} |")).collect();
    println!(
        "| {} | {:.0} | {:.3} | {:.3} | {:.1} |{more} {} |",
        r.name,
        r.load.requests_per_sec,
        r.load.p50_ms,
        r.load.p99_ms,
        r.proxy_cpu_us,
        shown(versus),
    );
}
