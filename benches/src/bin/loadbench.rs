//! Load benchmark: the same load against every participant in one run on
//! one machine, one row at a time; prints Markdown tables and the goals.
//!
//!     scripts/bench                       # 10 s per run, 2 runs per row (tunnel rows 3 s x 7)
//!     scripts/bench --duration 3 --runs 1 # quicker
//!     scripts/bench --pin                 # proxies (and their authz) on CPU 0; load generators, upstreams and this harness on CPU 1
//!     scripts/bench --only oha --only memory  # some sections: wrk, mcp, ext_authz, oha, tunnel, memory, identity, transparent, state, approvals, decision
//!     scripts/bench --pin --only mcp      # an MCP tools/call with 4 KiB of arguments against a REST POST of the same size, one tollgate
//!     scripts/bench --pin --only ext_authz --calibrate metadata,spin-us=7   # a no-op server doing that work stands in for tollgate decision
//!     scripts/bench --pin --only ext_authz --calibrate h2                  # the no-op over bare HTTP/2: what tonic costs per check
//!     scripts/bench --pin --only ext_authz --noop h2                       # tollgate decision against that bare no-op instead of tonic's
//!     scripts/bench --pin --only state --redis-cpu load                    # the state section's Redis on the load CPU (default: beside the proxy)
//!     scripts/bench --only approvals --held 1000 --trials 200             # held requests' memory, and Approve → upstream latency
//!     scripts/bench --only failover --failover-trials 10                 # decision service killed and restarted: time to the proxy's first 200
//!     scripts/bench --pin --only slowloris --slowloris 1000 --idle-connections 10000  # p99 with idle and slowloris connections held; --slowloris-yaml 'limits: {…}' tries settings
//!     target/release/loadbench --smoke    # 1 s per row: every participant answers 2xx (a test)
//!
//! Sections: wrk rows (direct, Envoy, tollgate plain HTTP); the same
//! search as a REST `POST` and as an MCP `tools/call`, 4 KiB bodies, through
//! one tollgate, runs alternated; the two
//! ext_authz stacks again with their runs alternated and the CPU each
//! process spends per request; oha rows
//! (tollgate plain HTTP and MITM HTTPS through CONNECT, one generator for
//! both); a bulk download direct, direct with its sender on the proxy CPU
//! (pinned only), through a minimal splice relay, Envoy's `CONNECT` tunnel
//! and tollgate's; tollgate's memory idle and over rounds
//! of opening and closing many idle keep-alive connections; workload
//! identity (a JWT against the static identity, both wrk; an mTLS proxy
//! listener against the plain one, both oha; new mTLS connections per
//! second, tollgate against Envoy); transparent capture against the
//! explicit proxy, one tollgate serving both in a network namespace of the
//! harness's own (needs root); requests under a task, with and without a
//! budget, tasks kept in memory against tasks kept in Redis; requests held
//! for a person's approval (memory per held request, every verdict
//! answered as given; `Approve` → upstream latency in one process, with
//! one decision service, and across two decision replicas on Redis);
//! Cedar decision latency.

// The section lives beside this file, in a folder of the binary's own:
// a file in `src/bin/` would be taken for a binary of its own.
#[path = "loadbench/transparent.rs"]
mod transparent;

#[path = "loadbench/state.rs"]
mod state;

#[path = "loadbench/approvals.rs"]
mod approvals;

#[path = "loadbench/slowloris.rs"]
mod slowloris;

#[path = "loadbench/failover.rs"]
mod failover;

#[path = "loadbench/mcp.rs"]
mod mcp;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tollgate_benches::handshakes::HandshakeRun;
use tollgate_benches::memory;
use tollgate_benches::oha::OhaRun;
use tollgate_benches::report::*;
use tollgate_benches::tollgate::{Identify, RunOptions, BULK_AUTHORITY};
use tollgate_benches::wrk::{LoadResult, WrkRun};
use tollgate_benches::{
    bulk, envoy, fixtures, handshakes, jwt, noop_authz, pki, process, tollgate, WORKLOAD,
};

const SECTIONS: [&str; 13] = [
    "wrk",
    "mcp",
    "ext_authz",
    "oha",
    "tunnel",
    "memory",
    "identity",
    "transparent",
    "state",
    "approvals",
    "decision",
    "slowloris",
    "failover",
];

struct Options {
    duration: Duration,
    runs: usize,
    /// The tunnel rows' own run length and count, 3 s x 7 by default;
    /// `--duration` and `--runs` set them too. The machine has slow spells
    /// lasting seconds that slow every relay at once, and more, shorter
    /// runs let the median step over them.
    tunnel_plan: (Duration, usize),
    connections: u32,
    pin: bool,
    /// No warm-up, small counts: only check that every participant answers
    /// correctly.
    smoke: bool,
    only: Vec<String>,
    /// Idle keep-alive connections for the memory figure.
    idle_connections: usize,
    /// How many times those are opened and closed again.
    memory_rounds: usize,
    /// In the ext_authz pairs, a second no-op server doing this work
    /// stands in for tollgate decision (see `noop_authz::Work`).
    calibrate: Option<String>,
    /// What the peer no-op server of the ext_authz pairs does (`""`: a
    /// tonic server answering OK).
    noop: String,
    /// Pinned, the state section's Redis runs on the load CPU, beside the
    /// upstream (a server elsewhere, whose CPU is not the proxy's), rather
    /// than on the proxy CPU.
    redis_on_load_cpu: bool,
    /// Gated requests held at once for the memory figure.
    held: usize,
    /// Measured releases per shape for the `Approve` → upstream latency.
    approval_trials: usize,
    /// Slowloris connections held beside the idle ones.
    slowloris_connections: usize,
    /// Top-level configuration for the slowloris section's tollgate.
    slowloris_yaml: String,
    /// Kills and restarts of the decision service.
    failover_trials: usize,
}

impl Options {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

fn options() -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        duration: Duration::from_secs(10),
        runs: 2,
        tunnel_plan: (Duration::from_secs(3), 7),
        connections: 32,
        pin: false,
        smoke: false,
        only: Vec::new(),
        idle_connections: 10_000,
        memory_rounds: 4,
        calibrate: None,
        noop: String::new(),
        redis_on_load_cpu: false,
        held: 1_000,
        approval_trials: 200,
        slowloris_connections: 1_000,
        slowloris_yaml: String::new(),
        failover_trials: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("missing value");
        match arg.as_str() {
            "--duration" => {
                o.duration = Duration::from_secs(value()?.parse()?);
                o.tunnel_plan.0 = o.duration;
            }
            "--runs" => {
                o.runs = value()?.parse()?;
                o.tunnel_plan.1 = o.runs;
            }
            "--connections" => o.connections = value()?.parse()?,
            "--idle-connections" => o.idle_connections = value()?.parse()?,
            "--memory-rounds" => o.memory_rounds = value()?.parse::<usize>()?.max(1),
            "--held" => o.held = value()?.parse::<usize>()?.max(2),
            "--trials" => o.approval_trials = value()?.parse::<usize>()?.max(1),
            "--slowloris" => o.slowloris_connections = value()?.parse()?,
            "--slowloris-yaml" => o.slowloris_yaml = value()?,
            "--failover-trials" => o.failover_trials = value()?.parse::<usize>()?.max(1),
            "--pin" => o.pin = true,
            "--only" => {
                let section = value()?;
                anyhow::ensure!(
                    SECTIONS.contains(&section.as_str()),
                    "--only takes one of {SECTIONS:?}"
                );
                o.only.push(section);
            }
            "--smoke" => {
                o.smoke = true;
                o.duration = Duration::from_secs(1);
                o.runs = 1;
                o.tunnel_plan = (o.duration, o.runs);
                o.connections = 4;
                o.idle_connections = 1_000;
                o.memory_rounds = 2;
                o.held = 20;
                o.approval_trials = 10;
                o.slowloris_connections = 100;
            }
            "--calibrate" => {
                let work = value()?;
                noop_authz::Work::parse(&work)?;
                o.calibrate = Some(work);
            }
            "--redis-cpu" => {
                o.redis_on_load_cpu = match value()?.as_str() {
                    "proxy" => false,
                    "load" => true,
                    other => bail!("--redis-cpu takes proxy or load, not {other}"),
                }
            }
            "--noop" => {
                let work = value()?;
                noop_authz::Work::parse(&work)?;
                o.noop = work;
            }
            // Internal: this binary doubles as the no-op ext_authz server;
            // the argument after it says what work it does per check.
            "--noop-authz" => {
                let work = args.next().unwrap_or_default();
                noop_authz::serve(noop_authz::Work::parse(&work)?)?;
                return Ok(None);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Some(o))
}

/// The median run by throughput; with an even count, the mean of the two
/// middle runs, field by field.
fn median(mut results: Vec<LoadResult>) -> LoadResult {
    results.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    let n = results.len();
    if n % 2 == 1 {
        return results[n / 2];
    }
    let (a, b) = (results[n / 2 - 1], results[n / 2]);
    LoadResult {
        requests_per_sec: (a.requests_per_sec + b.requests_per_sec) / 2.0,
        p50_ms: (a.p50_ms + b.p50_ms) / 2.0,
        p99_ms: (a.p99_ms + b.p99_ms) / 2.0,
        non_2xx: a.non_2xx + b.non_2xx,
        requests: a.requests + b.requests,
    }
}

struct Bench {
    o: Options,
    load_cpu: Option<&'static str>,
    proxy_cpu: Option<&'static str>,
    proxy_script: tempfile::TempDir,
}

impl Bench {
    /// Warm up, then `runs` measured runs; every answer must be 2xx.
    fn measure(
        &self,
        name: &str,
        run: impl Fn(Duration) -> anyhow::Result<LoadResult>,
    ) -> anyhow::Result<LoadResult> {
        if !self.o.smoke {
            run(Duration::from_secs(2))?;
        }
        let mut results = Vec::new();
        for _ in 0..self.o.runs {
            let r = run(self.o.duration)?;
            anyhow::ensure!(r.non_2xx == 0, "{name}: {} non-2xx answers", r.non_2xx);
            anyhow::ensure!(r.requests > 0, "{name}: no request completed");
            eprintln!(
                "  {name}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
                r.requests_per_sec, r.p50_ms, r.p99_ms
            );
            results.push(r);
        }
        Ok(median(results))
    }

    /// wrk. `through_proxy`: absolute-form requests (forward proxy);
    /// otherwise origin-form with `Host: bench.test` (a gateway like Envoy).
    fn wrk(&self, name: &str, url: &str, through_proxy: bool) -> anyhow::Result<LoadResult> {
        self.measure(name, |duration| {
            self.wrk_once(url, through_proxy, &[], duration)
        })
    }

    /// One wrk run, no warm-up, with extra `headers`.
    fn wrk_once(
        &self,
        url: &str,
        through_proxy: bool,
        headers: &[String],
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        let script = self.proxy_script.path().join(if through_proxy {
            "proxy.lua"
        } else {
            "host.lua"
        });
        self.wrk_script(url, &script, headers, duration)
    }

    /// One wrk run, no warm-up, whose requests `script` makes.
    fn wrk_script(
        &self,
        url: &str,
        script: &std::path::Path,
        headers: &[String],
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        WrkRun {
            url,
            connections: self.o.connections,
            duration,
            script: Some(script),
            headers,
            cpu: self.load_cpu,
        }
        .run()
    }

    fn oha(
        &self,
        name: &str,
        url: &str,
        proxy: Option<&str>,
        cacert: Option<&std::path::Path>,
    ) -> anyhow::Result<LoadResult> {
        self.measure(name, |duration| {
            OhaRun {
                url,
                proxy,
                cacert,
                client_cert: None,
                connect_to: None,
                connections: self.o.connections,
                duration,
                cpu: self.load_cpu,
            }
            .run()
        })
    }

    /// Two (or more) rows compared with each other: every participant is
    /// already up, each is warmed up, then their runs take turns, so a slow
    /// spell on the machine falls on all of them. Per row, the median run
    /// and the CPU its proxy spent per request over all measured runs.
    fn alternated(&self, rows: &[Contender]) -> anyhow::Result<Vec<ProxyRow>> {
        // A smoke run only needs answers: the generators that can stop
        // sooner than wrk's shortest run (1 s) do.
        let duration = match self.o.smoke {
            true => Duration::from_millis(300),
            false => {
                for c in rows {
                    (c.run)(Duration::from_secs(2))?;
                }
                self.o.duration
            }
        };
        let mut measured = vec![(Vec::new(), Duration::ZERO); rows.len()];
        for _ in 0..self.o.runs {
            for (c, (results, cpu)) in rows.iter().zip(&mut measured) {
                let before = process::cpu_time(c.pid)?;
                let r = (c.run)(duration)?;
                *cpu += process::cpu_time(c.pid)? - before;
                anyhow::ensure!(r.non_2xx == 0, "{}: {} non-2xx answers", c.name, r.non_2xx);
                anyhow::ensure!(r.requests > 0, "{}: no request completed", c.name);
                eprintln!(
                    "  {}: {:.0}/s p50 {:.3} ms p99 {:.3} ms",
                    c.name, r.requests_per_sec, r.p50_ms, r.p99_ms
                );
                results.push(r);
            }
        }
        Ok(rows
            .iter()
            .zip(measured)
            .map(|(c, (results, cpu))| {
                let requests: u64 = results.iter().map(|r| r.requests).sum();
                ProxyRow {
                    name: c.name,
                    load: median(results),
                    proxy_cpu_us: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
                }
            })
            .collect())
    }
}

/// One row of [`Bench::alternated`]: the proxy's process and one run of
/// the load against it for a given time.
struct Contender<'a> {
    name: &'static str,
    pid: u32,
    run: Box<dyn Fn(Duration) -> anyhow::Result<LoadResult> + 'a>,
}

fn require(tool: &str, hint: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(found, "{tool} is missing: {hint}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let Some(o) = options()? else {
        return Ok(());
    };
    // Other work on the machine skews every row: say how busy it was.
    let load_before = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let wrk_sections = ["wrk", "mcp", "identity", "transparent", "state"];
    if wrk_sections.iter().any(|s| o.wants(s)) {
        require("wrk", "apt-get install -y wrk (scripts/bench installs it)")?;
    }
    if o.wants("state") || o.wants("approvals") {
        anyhow::ensure!(
            tollgate_benches::redis::binary().is_some(),
            "redis-server is missing: apt-get install -y redis-server (scripts/setup-test-env installs it)"
        );
    }
    if o.wants("transparent") {
        tollgate_benches::netns::require_root()?;
        require("ip", "apt-get install -y iproute2")?;
        require("iptables", "apt-get install -y iptables")?;
        require("setpriv", "apt-get install -y util-linux")?;
    }
    if o.wants("oha") || o.wants("identity") || o.wants("transparent") {
        anyhow::ensure!(
            tollgate_benches::oha::binary().is_some(),
            "oha is missing: cargo install oha --version 1.16.0 --locked (scripts/bench and scripts/setup-test-env install it)"
        );
    }
    if o.pin {
        require("taskset", "apt-get install -y util-linux")?;
        // This process, and every thread it starts later (upstreams, bulk
        // sender and reader, the memory client).
        process::pin_thread(1)?;
    }
    let (proxy_cpu, load_cpu) = if o.pin {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    if o.wants("memory") || o.wants("slowloris") {
        // Both ends of every idle connection live on this machine, plus
        // what the proxy holds upstream.
        let held = o.idle_connections + o.slowloris_connections;
        let limit = memory::raise_nofile(2 * held as u64 + 1_024)?;
        anyhow::ensure!(
            limit > held as u64 + 256,
            "open-file limit {limit} is too low for {held} connections"
        );
    }
    if o.wants("approvals") {
        // Each held merge has a connection from this process to tollgate,
        // and the approved ones one from tollgate to its upstream here.
        let limit = memory::raise_nofile(3 * o.held as u64 + 1_024)?;
        anyhow::ensure!(
            limit > 2 * o.held as u64 + 256,
            "open-file limit {limit} is too low to hold {} requests",
            o.held
        );
    }
    let proxy_script = tempfile::tempdir()?;
    std::fs::write(
        proxy_script.path().join("proxy.lua"),
        "wrk.path = \"http://bench.test/v1/items/42\"\nwrk.headers[\"Host\"] = \"bench.test\"\n",
    )?;
    std::fs::write(
        proxy_script.path().join("host.lua"),
        "wrk.headers[\"Host\"] = \"bench.test\"\n",
    )?;
    let layout = if o.pin {
        "each proxy (tollgate 1 worker / Envoy --concurrency 1) and its authorization server pinned to CPU 0; load generators, upstreams and the harness on CPU 1"
    } else {
        "unpinned; tollgate 1 worker, Envoy --concurrency 1, authorization servers 1 thread, wrk 1 thread, oha 1 runtime thread, the new-connection generator 1 thread"
    };
    let plan = format!(
        "{} s x {} runs per row (tunnel rows {} s x {})",
        o.duration.as_secs(),
        o.runs,
        o.tunnel_plan.0.as_secs(),
        o.tunnel_plan.1
    );
    eprintln!("loadbench: {} connections, {plan}, {layout}", o.connections);
    let bench = Bench {
        o,
        load_cpu,
        proxy_cpu,
        proxy_script,
    };
    let upstream = tollgate_benches::upstream::start()?;
    let mut report = Report::default();
    if bench.o.wants("wrk") {
        wrk_rows(&bench, upstream, &mut report)?;
    }
    if bench.o.wants("mcp") {
        report.mcp = mcp::mcp(&bench)?;
    }
    if bench.o.wants("ext_authz") {
        report.ext_authz = ext_authz_pairs(&bench, upstream)?;
    }
    if bench.o.wants("oha") {
        oha_rows(&bench, upstream, &mut report)?;
    }
    if bench.o.wants("tunnel") {
        report.tunnel = tunnel(&bench, upstream)?;
    }
    if bench.o.wants("memory") {
        report.memory = Some(memory(&bench, upstream)?);
    }
    if bench.o.wants("identity") {
        identity(&bench, upstream, &mut report)?;
    }
    if bench.o.wants("transparent") {
        transparent::transparent(&bench, &mut report)?;
    }
    if bench.o.wants("state") {
        state::state(&bench, upstream, &mut report)?;
    }
    if bench.o.wants("approvals") {
        approvals::approvals(&bench, &mut report)?;
    }
    if bench.o.wants("decision") {
        report.decisions = decisions(bench.o.smoke);
    }
    if bench.o.wants("slowloris") {
        report.slowloris = slowloris::slowloris(&bench, upstream)?;
    }
    if bench.o.wants("failover") {
        report.failover = Some(failover::failover(&bench, upstream)?);
    }
    let o = &bench.o;
    let halt_poll = process::guest_halt_poll_ns()
        .map(|ns| format!("; guest halt-polling {ns} ns"))
        .unwrap_or_default();
    let redis_cpu = match (o.wants("state") && o.pin, o.redis_on_load_cpu) {
        (false, _) => "",
        (true, false) => "; the state section's Redis on CPU 0",
        (true, true) => "; the state section's Redis on CPU 1",
    };
    let approvals_plan = match (o.wants("approvals"), o.pin) {
        (false, _) => String::new(),
        (true, pinned) => format!(
            "; approvals: {} requests held at once, {} releases per shape after {} to warm up{}",
            o.held,
            o.approval_trials,
            approvals::WARM_TRIALS,
            if pinned {
                ", every tollgate process and their Redis on CPU 0"
            } else {
                ""
            }
        ),
    };
    let mcp_answer = match o.wants("mcp") {
        false => String::new(),
        true => format!(
            " (the mcp section's: {} bytes of JSON)",
            tollgate_benches::mcp::ANSWER.len()
        ),
    };
    report.print(&format!(
        "{} connections, HTTP/1.1 keep-alive, 20-byte body{mcp_answer}, {plan} (medians), {layout}{redis_cpu}{approvals_plan}, {} cores; 1-minute load average before the run {load_before}{halt_poll}",
        o.connections,
        // Not `available_parallelism`: pinned, that counts only our own CPU.
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
    ));
    Ok(())
}

fn wrk_rows(
    bench: &Bench,
    upstream: std::net::SocketAddr,
    report: &mut Report,
) -> anyhow::Result<()> {
    let proxy_cpu = bench.proxy_cpu;
    let envoy_url = |p: &process::Participant| format!("http://{}/v1/items/42", p.addr);
    let proxy_url = |p: &process::Participant| format!("http://{}/", p.addr);
    let rows = &mut report.rows;
    rows.push((
        DIRECT,
        bench.wrk(DIRECT, &format!("http://{upstream}/v1/items/42"), false)?,
    ));
    // Each participant lives only for its own row, so rows never share
    // the CPU.
    match envoy::binary() {
        Some(bin) => {
            let e = envoy::start(&bin, upstream, None, proxy_cpu)?;
            rows.push((ENVOY, bench.wrk(ENVOY, &envoy_url(&e), false)?));
            drop(e);

            let noop = noop_authz(proxy_cpu, "")?;
            let e = envoy::start(&bin, upstream, Some(noop.addr), proxy_cpu)?;
            rows.push((ENVOY_NOOP, bench.wrk(ENVOY_NOOP, &envoy_url(&e), false)?));
            drop((e, noop));

            let decision = tollgate::decision(proxy_cpu)?;
            let e = envoy::start(&bin, upstream, Some(decision.addr), proxy_cpu)?;
            rows.push((
                ENVOY_TOLLGATE,
                bench.wrk(ENVOY_TOLLGATE, &envoy_url(&e), false)?,
            ));
        }
        None => eprintln!(
            "  envoy not found (scripts/bench installs it into .venv): Envoy rows skipped"
        ),
    }
    for (name, cache) in [(TOLLGATE, 10_000), (TOLLGATE_NO_CACHE, 0)] {
        let t = tollgate::run(
            &RunOptions {
                cache_size: cache,
                ..RunOptions::plain(upstream)
            },
            proxy_cpu,
        )?;
        rows.push((name, bench.wrk(name, &proxy_url(&t), true)?));
    }
    let decision = tollgate::decision(proxy_cpu)?;
    let t = tollgate::run(
        &RunOptions {
            decision_endpoint: Some(decision.addr),
            ..RunOptions::plain(upstream)
        },
        proxy_cpu,
    )?;
    rows.push((
        TOLLGATE_REMOTE,
        bench.wrk(TOLLGATE_REMOTE, &proxy_url(&t), true)?,
    ));
    Ok(())
}

/// This binary as the no-op ext_authz server, doing `work` per check.
fn noop_authz(cpu: Option<&str>, work: &str) -> anyhow::Result<process::Participant> {
    let mut cmd = process::command(&std::env::current_exe()?, cpu);
    cmd.args(["--noop-authz", work]);
    process::Participant::from_log(cmd, "noop-authz listening", None)
}

/// The two ext_authz rows once more, their runs alternated, so drift on
/// the machine (another process, the CPU's clock) falls on both alike; and
/// the CPU Envoy and its authorization server each spend per request,
/// which varies less from run to run than req/s.
///
/// Every pair starts both stacks afresh. An Envoy's CPU per request stays
/// near one level for the life of the process, and that level differs
/// from one process to the next: 77 to 95 µs here, with either
/// authorization server. Pairs of one set of processes would all share
/// one draw.
fn ext_authz_pairs(bench: &Bench, upstream: std::net::SocketAddr) -> anyhow::Result<Vec<AuthzRun>> {
    let Some(bin) = envoy::binary() else {
        eprintln!(
            "  envoy not found (scripts/bench installs it into .venv): ext_authz pairs skipped"
        );
        return Ok(Vec::new());
    };
    let cpu = bench.proxy_cpu;
    if !bench.o.noop.is_empty() {
        eprintln!("  the no-op ext_authz server does: {}", bench.o.noop);
    }
    let mut runs = Vec::new();
    for _ in 0..bench.o.runs {
        let noop = noop_authz(cpu, &bench.o.noop)?;
        let noop_envoy = envoy::start(&bin, upstream, Some(noop.addr), cpu)?;
        let (second, row) = match &bench.o.calibrate {
            Some(work) => (noop_authz(cpu, work)?, ENVOY_CALIBRATION),
            None => (tollgate::decision(cpu)?, ENVOY_TOLLGATE),
        };
        let second_envoy = envoy::start(&bin, upstream, Some(second.addr), cpu)?;
        let stacks = [
            (ENVOY_NOOP, &noop_envoy, &noop),
            (row, &second_envoy, &second),
        ];
        let wrk = |envoy: &process::Participant, duration| {
            bench.wrk_once(
                &format!("http://{}/v1/items/42", envoy.addr),
                false,
                &[],
                duration,
            )
        };
        if !bench.o.smoke {
            for (_, envoy, _) in &stacks {
                wrk(envoy, Duration::from_secs(2))?;
            }
        }
        for (row, envoy, authz) in &stacks {
            let cpu = || -> anyhow::Result<_> {
                Ok((
                    process::cpu_time(envoy.pid())?,
                    process::cpu_time(authz.pid())?,
                ))
            };
            let before = cpu()?;
            let load = wrk(envoy, bench.o.duration)?;
            let after = cpu()?;
            anyhow::ensure!(load.non_2xx == 0, "{row}: {} non-2xx answers", load.non_2xx);
            anyhow::ensure!(load.requests > 0, "{row}: no request completed");
            let per_request =
                |a: Duration, b: Duration| (a - b).as_secs_f64() * 1e6 / load.requests as f64;
            let run = AuthzRun {
                row,
                load,
                envoy_us: per_request(after.0, before.0),
                authz_us: per_request(after.1, before.1),
            };
            eprintln!(
                "  {row} (alternated): {:.0} req/s, CPU per request: Envoy {:.1} µs, authz {:.1} µs",
                load.requests_per_sec, run.envoy_us, run.authz_us
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Plain HTTP and intercepted HTTPS through the same tollgate
/// configuration, driven by the same generator.
fn oha_rows(
    bench: &Bench,
    upstream: std::net::SocketAddr,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pki = pki::BenchPki::new()?;
    let tls_upstream = tollgate_benches::upstream::start_tls(pki.server_config("bench.test")?)?;
    let options = RunOptions {
        tls: Some((tls_upstream, pki.ca_dir())),
        ..RunOptions::plain(upstream)
    };
    let rows = &mut report.oha_rows;
    rows.push((
        OHA_DIRECT,
        bench.oha(
            OHA_DIRECT,
            &format!("http://{upstream}/v1/items/42"),
            None,
            None,
        )?,
    ));
    let t = tollgate::run(&options, bench.proxy_cpu)?;
    let proxy = format!("http://{}", t.addr);
    rows.push((
        OHA_PLAIN,
        bench.oha(
            OHA_PLAIN,
            "http://bench.test/v1/items/42",
            Some(&proxy),
            None,
        )?,
    ));
    drop(t);
    let t = tollgate::run(&options, bench.proxy_cpu)?;
    let proxy = format!("http://{}", t.addr);
    rows.push((
        MITM,
        bench.oha(
            MITM,
            "https://bench.test/v1/items/42",
            Some(&proxy),
            Some(&pki.ca_cert()),
        )?,
    ));
    // The upstream trusts the same CA, so a blind tunnel would answer too:
    // make sure the requests were read and decided inside the TLS.
    std::thread::sleep(Duration::from_millis(100));
    let audit = std::fs::read_to_string(t.dir().context("config dir")?.join("audit.log"))?;
    anyhow::ensure!(
        audit.contains("\"mode\":\"intercept\""),
        "{MITM}: no intercepted request in the audit log"
    );
    Ok(())
}

/// Bytes per second of one download: straight from the sender, from a
/// sender on the proxy CPU (pinned: what handing the bytes from one CPU to
/// the other costs by itself, measured beside every proxy run), through
/// the minimal relay, through Envoy's `CONNECT` tunnel (when Envoy is
/// here) and through a blind tollgate tunnel, each proxy on the proxy CPU.
fn tunnel(bench: &Bench, upstream: std::net::SocketAddr) -> anyhow::Result<Vec<BulkRow>> {
    let proxy_cpu = bench.proxy_cpu.map(|c| c.parse()).transpose()?;
    let sender = bulk::start(None)?;
    let relay = bulk::start_relay(sender, proxy_cpu)?;
    let envoy = envoy::binary()
        .map(|bin| envoy::start_connect(&bin, sender, bench.proxy_cpu))
        .transpose()?;
    let t = tollgate::run(
        &RunOptions {
            bulk: Some(sender),
            ..RunOptions::plain(upstream)
        },
        bench.proxy_cpu,
    )?;
    let mut routes = vec![(BULK_DIRECT, bulk::Route::Direct(sender))];
    if let Some(cpu) = proxy_cpu {
        routes.push((BULK_ACROSS, bulk::Route::Direct(bulk::start(Some(cpu))?)));
    }
    routes.push((BULK_RELAY, bulk::Route::Direct(relay)));
    match &envoy {
        Some(e) => routes.push((BULK_ENVOY, bulk::Route::Connect(e.addr, BULK_AUTHORITY))),
        None => eprintln!(
            "  envoy not found (scripts/bench installs it into .venv): its tunnel row skipped"
        ),
    }
    routes.push((BULK_TOLLGATE, bulk::Route::Connect(t.addr, BULK_AUTHORITY)));
    bulk_alternated(bench, &routes)
}

/// One download per route, warmed up, then runs that alternate between
/// the routes, all of them up throughout: from one run to the next the
/// direct figure alone can move by half, and whatever moves it should
/// fall on every route alike. Per route, the medians over its runs.
fn bulk_alternated(
    bench: &Bench,
    routes: &[(&'static str, bulk::Route<'_>)],
) -> anyhow::Result<Vec<BulkRow>> {
    if !bench.o.smoke {
        for (_, route) in routes {
            bulk::read_for(*route, Duration::from_secs(1))?;
        }
    }
    let mut measured = vec![Vec::<bulk::BulkRun>::new(); routes.len()];
    let (duration, count) = bench.o.tunnel_plan;
    for _ in 0..count {
        for ((name, route), runs) in routes.iter().zip(&mut measured) {
            let run = bulk::read_for(*route, duration)?;
            let shown: Vec<String> = run
                .busy
                .iter()
                .map(|b| format!("{:.0}", b * 100.0))
                .collect();
            eprintln!(
                "  bulk, {name}: {:.0} MiB/s, CPUs busy {} %, reader queue {:.1} MiB",
                run.bytes_per_second / MIB,
                shown.join(" / "),
                run.reader_queue / MIB
            );
            runs.push(run);
        }
    }
    routes
        .iter()
        .zip(measured)
        .map(|((name, _), runs)| {
            let cpus = runs.first().map_or(0, |r| r.busy.len());
            Ok(BulkRow {
                name,
                bytes_per_second: median_f64(runs.iter().map(|r| r.bytes_per_second).collect())
                    .context("no bulk run")?,
                reader_queue: median_f64(runs.iter().map(|r| r.reader_queue).collect())
                    .context("no bulk run")?,
                busy: (0..cpus)
                    .filter_map(|c| median_f64(runs.iter().map(|r| r.busy[c]).collect()))
                    .collect(),
            })
        })
        .collect()
}

fn memory(bench: &Bench, upstream: std::net::SocketAddr) -> anyhow::Result<Memory> {
    let count = bench.o.idle_connections;
    let t = tollgate::run(&RunOptions::plain(upstream), bench.proxy_cpu)?;
    let settle = || std::thread::sleep(Duration::from_millis(500));
    settle();
    let idle_kib = memory::rss_kib(t.pid())?;
    drop(memory::open_idle(t.addr, 1)?);
    settle();
    let warm_kib = memory::rss_kib(t.pid())?;
    let mut rounds = Vec::new();
    for _ in 0..bench.o.memory_rounds {
        let streams = memory::open_idle(t.addr, count)?;
        settle();
        let open_kib = memory::rss_kib(t.pid())?;
        let closed = memory::closed(&streams);
        anyhow::ensure!(
            closed == 0,
            "{closed} of {count} idle connections were closed by tollgate"
        );
        drop(streams);
        // tollgate looks for an ended burst once a second, then trims.
        std::thread::sleep(Duration::from_secs(2));
        rounds.push((open_kib, memory::rss_kib(t.pid())?));
    }
    let m = Memory {
        idle_kib,
        warm_kib,
        connections: count,
        rounds,
    };
    eprintln!(
        "  memory: idle {} KiB, {count} connections {} KiB, {:.1} KiB each",
        m.idle_kib,
        m.rounds[0].0,
        m.per_connection_kib()
    );
    Ok(m)
}

/// Workload identity, three comparisons, each pair's runs alternated:
/// * the static listener against one that takes only a JWT (ES256, minted
///   here, verified once and then answered from tollgate's cache), both
///   driven by wrk with the same absolute-form requests, the JWT in `-H
///   Proxy-Authorization: Bearer`;
/// * the plain listener against an HTTPS one taking only X.509-SVIDs, both
///   driven by oha (`-x http://` and `-x https://` with `--cert`), each
///   connection handshaking once and then kept alive;
/// * new connections per second, each a full mTLS handshake (ECDSA P-256
///   certificates on both sides), one request and a close, against
///   tollgate's mTLS listener (the request decided and forwarded to the
///   upstream) and against Envoy with `require_client_certificate` (the
///   request routed to the same upstream).
///
/// Every listener knows its callers as the bench workload, so the same
/// policies decide every request.
fn identity(
    bench: &Bench,
    upstream: std::net::SocketAddr,
    report: &mut Report,
) -> anyhow::Result<()> {
    let cpu = bench.proxy_cpu;
    let files_dir = tempfile::tempdir()?;

    // A JWT against the static identity.
    let key = jwt::SigningKey::es256("bench-1")?;
    let jwks = files_dir.path().join("jwks.json");
    std::fs::write(&jwks, key.jwks().to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let token = key.mint(&serde_json::json!({
        "iss": tollgate::JWT_ISSUER,
        "sub": WORKLOAD,
        "aud": tollgate::JWT_AUDIENCE,
        "exp": now.as_secs() + 3600,
    }))?;
    let bearer = [format!("Proxy-Authorization: Bearer {token}")];
    let by_static = tollgate::run(&RunOptions::plain(upstream), cpu)?;
    let by_jwt = tollgate::run(
        &RunOptions {
            identify: Identify::Jwt { jwks: &jwks },
            ..RunOptions::plain(upstream)
        },
        cpu,
    )?;
    let url = |p: &process::Participant| format!("http://{}/", p.addr);
    report.identity.extend(bench.alternated(&[
        Contender {
            name: ID_STATIC,
            pid: by_static.pid(),
            run: Box::new(|d| bench.wrk_once(&url(&by_static), true, &[], d)),
        },
        Contender {
            name: ID_JWT,
            pid: by_jwt.pid(),
            run: Box::new(|d| bench.wrk_once(&url(&by_jwt), true, &bearer, d)),
        },
    ])?);
    expect_audited(&by_jwt, ID_JWT, "jwt")?;
    drop((by_static, by_jwt));

    // An mTLS proxy listener against the plain one.
    let pki = pki::BenchPki::new()?;
    let files = pki.svid_files(WORKLOAD)?;
    let plain = tollgate::run(&RunOptions::plain(upstream), cpu)?;
    let mtls_options = RunOptions {
        identify: Identify::Mtls(&files),
        ..RunOptions::plain(upstream)
    };
    let mtls = tollgate::run(&mtls_options, cpu)?;
    let oha = |proxy: &str, client_cert, duration| {
        OhaRun {
            url: "http://bench.test/v1/items/42",
            proxy: Some(proxy),
            cacert: Some(&files.ca),
            client_cert,
            connect_to: None,
            connections: bench.o.connections,
            duration,
            cpu: bench.load_cpu,
        }
        .run()
    };
    let (plain_proxy, mtls_proxy) = (
        format!("http://{}", plain.addr),
        format!("https://{}", mtls.addr),
    );
    let svid = Some((files.client_cert.as_path(), files.client_key.as_path()));
    report.identity.extend(bench.alternated(&[
        Contender {
            name: ID_PLAIN,
            pid: plain.pid(),
            run: Box::new(|d| oha(&plain_proxy, None, d)),
        },
        Contender {
            name: ID_MTLS,
            pid: mtls.pid(),
            run: Box::new(|d| oha(&mtls_proxy, svid, d)),
        },
    ])?);
    expect_audited(&mtls, ID_MTLS, "mtls")?;
    drop((plain, mtls));

    // New mTLS connections: tollgate against Envoy.
    let client = handshakes::client_config(files.client_identity())?;
    let new_connections = |addr, request: &str, duration| {
        HandshakeRun {
            addr,
            tls: client.clone(),
            request,
            connections: bench.o.connections,
            duration,
        }
        .run()
    };
    let gate = tollgate::run(&mtls_options, cpu)?;
    let envoy = match envoy::binary() {
        Some(bin) => Some(envoy::start_mtls(&bin, upstream, &files, cpu)?),
        None => {
            eprintln!(
                "  envoy not found (scripts/bench installs it into .venv): its mTLS row skipped"
            );
            None
        }
    };
    // The same request to each: absolute-form to the forward proxy,
    // origin-form to Envoy's route.
    let mut contenders = vec![Contender {
        name: HANDSHAKE_TOLLGATE,
        pid: gate.pid(),
        run: Box::new(|d| {
            let request = "GET http://bench.test/v1/items/42 HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n";
            new_connections(gate.addr, request, d)
        }),
    }];
    if let Some(e) = &envoy {
        contenders.push(Contender {
            name: HANDSHAKE_ENVOY,
            pid: e.pid(),
            run: Box::new(|d| {
                let request =
                    "GET /v1/items/42 HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n";
                new_connections(e.addr, request, d)
            }),
        });
    }
    report.handshakes = bench.alternated(&contenders)?;
    expect_audited(&gate, HANDSHAKE_TOLLGATE, "mtls")?;
    Ok(())
}

/// The requests `row` sent were identified by `source`: the listener took
/// the proof the row is about, not some fallback.
fn expect_audited(t: &process::Participant, row: &str, source: &str) -> anyhow::Result<()> {
    std::thread::sleep(Duration::from_millis(100));
    let audit = std::fs::read_to_string(t.dir().context("config dir")?.join("audit.log"))?;
    let expected = format!("\"identity_source\":\"{source}\"");
    anyhow::ensure!(
        audit.contains(&expected),
        "{row}: no request identified by {source} in the audit log"
    );
    Ok(())
}

/// Single-call Cedar latency with the bench catalog, 10 and 1,000 policies.
fn decisions(smoke: bool) -> Vec<(usize, fixtures::Percentiles, fixtures::Percentiles)> {
    let calls = if smoke { 2_000 } else { 100_000 };
    let catalog = fixtures::catalog();
    let requests = fixtures::requests(&catalog, 1_000);
    let n = requests.len();
    [10, 1_000]
        .into_iter()
        .map(|policies| {
            let engine = fixtures::engine(&catalog, policies);
            let cache = ::tollgate::decision::DecisionCache::new(10_000);
            for r in &requests {
                cache.decide(&engine, r);
            }
            let miss = fixtures::percentiles(calls, |i| {
                std::hint::black_box(engine.evaluate(&requests[i % n]));
            });
            let hit = fixtures::percentiles(calls, |i| {
                std::hint::black_box(cache.decide(&engine, &requests[i % n]));
            });
            eprintln!(
                "  decision, {policies} policies: miss p99 {:.2} µs, hit p99 {:.2} µs",
                miss.p99, hit.p99
            );
            (policies, miss, hit)
        })
        .collect()
}

/// The last whole line of `t`'s audit log, once the audit writer's batch
/// is out: what the last request a row sent was decided as.
fn last_audit_line(t: &process::Participant) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    std::thread::sleep(Duration::from_millis(100));
    let path = t.dir().context("config dir")?.join("audit.log");
    let mut file = std::fs::File::open(&path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(16 * 1024)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let tail = String::from_utf8_lossy(&tail);
    // The last whole line: a batch may be half written.
    let whole = &tail[..tail.rfind('\n').unwrap_or(0)];
    Ok(whole.rsplit('\n').next().unwrap_or_default().to_string())
}
