//! Load benchmark: the same wrk load against every participant in one run
//! on one machine, one row at a time; prints a Markdown table and the goal
//! ratios.
//!
//!     scripts/bench                       # 10 s per run, 2 runs per row
//!     scripts/bench --duration 3 --runs 1 # quicker
//!     scripts/bench --pin                 # proxies (and their authz) on CPU 0; wrk and upstream on CPU 1
//!     target/release/loadbench --smoke    # 1 s per row: every participant answers 2xx (a test)

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tollgate_benches::wrk::{WrkResult, WrkRun};
use tollgate_benches::{envoy, noop_authz, process, tollgate};

struct Options {
    duration: Duration,
    runs: usize,
    connections: u32,
    pin: bool,
    /// No warm-up: only check that every participant answers correctly.
    smoke: bool,
}

fn options() -> anyhow::Result<Option<Options>> {
    let mut o = Options {
        duration: Duration::from_secs(10),
        runs: 2,
        connections: 32,
        pin: false,
        smoke: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("missing value");
        match arg.as_str() {
            "--duration" => o.duration = Duration::from_secs(value()?.parse()?),
            "--runs" => o.runs = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--pin" => o.pin = true,
            "--smoke" => {
                o.smoke = true;
                o.duration = Duration::from_secs(1);
                o.runs = 1;
                o.connections = 4;
            }
            // Internal: this binary doubles as the no-op ext_authz server.
            "--noop-authz" => {
                noop_authz::serve()?;
                return Ok(None);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Some(o))
}

/// The median run by throughput; with an even count, the mean of the two
/// middle runs, field by field.
fn median(mut results: Vec<WrkResult>) -> WrkResult {
    results.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    let n = results.len();
    if n % 2 == 1 {
        return results[n / 2];
    }
    let (a, b) = (results[n / 2 - 1], results[n / 2]);
    WrkResult {
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
    proxy_script: tempfile::TempDir,
}

impl Bench {
    /// Warm up, then `runs` measured runs; every answer must be 2xx.
    /// `through_proxy`: absolute-form requests (forward proxy); otherwise
    /// origin-form with `Host: bench.test` (a gateway like Envoy).
    fn measure(&self, name: &str, url: &str, through_proxy: bool) -> anyhow::Result<WrkResult> {
        let script = self.proxy_script.path().join(if through_proxy {
            "proxy.lua"
        } else {
            "host.lua"
        });
        let script = Some(script.as_path());
        let run = |duration| WrkRun {
            url,
            connections: self.o.connections,
            duration,
            script,
            cpu: self.load_cpu,
        };
        if !self.o.smoke {
            run(Duration::from_secs(2)).run()?;
        }
        let mut results = Vec::new();
        for _ in 0..self.o.runs {
            let r = run(self.o.duration).run()?;
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

const DIRECT: &str = "direct";
const ENVOY: &str = "Envoy bare route";
const ENVOY_NOOP: &str = "Envoy + no-op ext_authz";
const ENVOY_TOLLGATE: &str = "Envoy + tollgate decision";
const TOLLGATE: &str = "tollgate full authz";
const TOLLGATE_NO_CACHE: &str = "tollgate full authz, no decision cache";
const TOLLGATE_REMOTE: &str = "tollgate, remote decision (warm cache)";

fn main() -> anyhow::Result<()> {
    let Some(o) = options()? else {
        return Ok(());
    };
    require("wrk", "apt-get install -y wrk")?;
    if o.pin {
        require("taskset", "apt-get install -y util-linux")?;
    }
    let (proxy_cpu, load_cpu) = if o.pin {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    let upstream = tollgate_benches::upstream::start()?;
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
        "each proxy (tollgate 1 worker / Envoy --concurrency 1) and its authorization server pinned to CPU 0; wrk and the upstream on CPU 1"
    } else {
        "unpinned; tollgate 1 worker, Envoy --concurrency 1, authorization servers 1 thread, wrk 1 thread"
    };
    eprintln!(
        "loadbench: {} connections, {} s x {} runs per row, {layout}",
        o.connections,
        o.duration.as_secs(),
        o.runs
    );
    let bench = Bench {
        o,
        load_cpu,
        proxy_script,
    };
    let envoy_url = |p: &process::Participant| format!("http://{}/v1/items/42", p.addr);
    let proxy_url = |p: &process::Participant| format!("http://{}/", p.addr);

    let mut rows: Vec<(&str, WrkResult)> = Vec::new();
    rows.push((
        DIRECT,
        bench.measure(DIRECT, &format!("http://{upstream}/v1/items/42"), false)?,
    ));
    // Each participant lives only for its own row, so rows never share
    // the CPU.
    match envoy::binary() {
        Some(bin) => {
            let e = envoy::start(&bin, upstream, None, proxy_cpu)?;
            rows.push((ENVOY, bench.measure(ENVOY, &envoy_url(&e), false)?));
            drop(e);

            let me = std::env::current_exe()?;
            let mut cmd = process::command(&me, proxy_cpu);
            cmd.arg("--noop-authz");
            let noop = process::Participant::from_log(cmd, "noop-authz listening", None)?;
            let e = envoy::start(&bin, upstream, Some(noop.addr), proxy_cpu)?;
            rows.push((
                ENVOY_NOOP,
                bench.measure(ENVOY_NOOP, &envoy_url(&e), false)?,
            ));
            drop((e, noop));

            let decision = tollgate::decision(proxy_cpu)?;
            let e = envoy::start(&bin, upstream, Some(decision.addr), proxy_cpu)?;
            rows.push((
                ENVOY_TOLLGATE,
                bench.measure(ENVOY_TOLLGATE, &envoy_url(&e), false)?,
            ));
        }
        None => eprintln!(
            "  envoy not found (scripts/bench installs it into .venv): Envoy rows skipped"
        ),
    }
    for (name, cache) in [(TOLLGATE, 10_000), (TOLLGATE_NO_CACHE, 0)] {
        let t = tollgate::run(upstream, proxy_cpu, cache, None)?;
        rows.push((name, bench.measure(name, &proxy_url(&t), true)?));
    }
    let decision = tollgate::decision(proxy_cpu)?;
    let t = tollgate::run(upstream, proxy_cpu, 10_000, Some(decision.addr))?;
    rows.push((
        TOLLGATE_REMOTE,
        bench.measure(TOLLGATE_REMOTE, &proxy_url(&t), true)?,
    ));
    drop((t, decision));

    report(&rows, layout, &bench.o);
    Ok(())
}

fn report(rows: &[(&str, WrkResult)], layout: &str, o: &Options) {
    let get = |name: &str| rows.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
    let direct = get(DIRECT).expect("direct row");
    let envoy = get(ENVOY);
    println!("| row | req/s | p50 ms | p99 ms | req/s vs direct | req/s vs Envoy bare | p99 vs Envoy bare |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        let vs = |a: f64, b: Option<f64>| b.map_or("–".to_string(), |b| format!("{:.2}", a / b));
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.2} | {} | {} |",
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.requests_per_sec / direct.requests_per_sec,
            vs(r.requests_per_sec, envoy.map(|e| e.requests_per_sec)),
            vs(r.p99_ms, envoy.map(|e| e.p99_ms)),
        );
    }
    println!("\n| goal | ratio | target |\n|---|---:|---:|");
    let ratio = |a: &str, b: &str, p99: bool| {
        get(a).zip(get(b)).map(|(a, b)| {
            if p99 {
                a.p99_ms / b.p99_ms
            } else {
                a.requests_per_sec / b.requests_per_sec
            }
        })
    };
    for (label, value, target) in [
        (
            "tollgate full authz ÷ Envoy + no-op ext_authz (req/s)",
            ratio(TOLLGATE, ENVOY_NOOP, false),
            "≥ 2.0",
        ),
        (
            "tollgate full authz ÷ Envoy bare (req/s)",
            ratio(TOLLGATE, ENVOY, false),
            "≥ 1.0",
        ),
        (
            "tollgate p99 ÷ Envoy bare p99",
            ratio(TOLLGATE, ENVOY, true),
            "≤ 1.0",
        ),
        (
            "Envoy + tollgate decision ÷ Envoy + no-op ext_authz (req/s)",
            ratio(ENVOY_TOLLGATE, ENVOY_NOOP, false),
            "≥ 0.95",
        ),
        (
            "tollgate remote, warm cache ÷ embedded (req/s)",
            ratio(TOLLGATE_REMOTE, TOLLGATE, false),
            "≥ 0.9",
        ),
    ] {
        let shown = value.map_or("–".to_string(), |v| format!("{v:.2}"));
        println!("| {label} | {shown} | {target} |");
    }
    println!(
        "\n{} connections, HTTP/1.1 keep-alive, 20-byte body, {} s x {} runs (median), {layout}, {} cores",
        o.connections,
        o.duration.as_secs(),
        o.runs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
}
