//! Load benchmark: the same wrk load against a direct connection to a local
//! upstream and through tollgate with full authorization (classify + Cedar +
//! audit line), in one run on one machine. Prints a Markdown table.
//!
//!     scripts/bench                       # 10 s per run, 2 runs per row
//!     scripts/bench --duration 3 --runs 1 # quicker
//!     scripts/bench --pin                 # wrk and the upstream on CPU 1, tollgate on CPU 0

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tollgate_benches::wrk::{WrkResult, WrkRun};

struct Options {
    duration: Duration,
    runs: usize,
    connections: u32,
    pin: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        duration: Duration::from_secs(10),
        runs: 2,
        connections: 32,
        pin: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("missing value");
        match arg.as_str() {
            "--duration" => o.duration = Duration::from_secs(value()?.parse()?),
            "--runs" => o.runs = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--pin" => o.pin = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const CATALOG: &str = r#"
tool: bench
description: benchmark upstream
endpoints:
  - hosts: [bench.test]
    routes:
      - { method: GET, path: "/v1/items/{id}", action: items.get, risk: read, resource: "items/{id}" }
"#;

const POLICY: &str = r#"
@id("bench-read")
permit (principal == Workload::"spiffe://cluster.local/ns/bench/sa/load", action in Action::"read", resource in Target::"bench");
"#;

struct Tollgate {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tollgate(
    upstream: SocketAddr,
    cpu: Option<&str>,
    cache_size: usize,
) -> anyhow::Result<Tollgate> {
    let dir = tempfile::tempdir()?;
    let catalog = dir.path().join("catalog");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&catalog)?;
    std::fs::create_dir_all(&policies)?;
    std::fs::write(catalog.join("bench.yaml"), CATALOG)?;
    // The shipped guardrails stay on: a realistic policy set, not one rule.
    std::fs::copy(
        repo_root().join("config/policies/guardrails.cedar"),
        policies.join("guardrails.cedar"),
    )?;
    std::fs::write(policies.join("bench.cedar"), POLICY)?;
    let config = format!(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    identity: {{ static: \"spiffe://cluster.local/ns/bench/sa/load\" }}\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         tls: {{ ca_dir: no-ca, system_roots: false }}\n\
         forward:\n  allow_networks: [127.0.0.0/8]\n  resolve: {{ \"bench.test:80\": \"{upstream}\" }}\n\
         decision: {{ cache_size: {cache_size} }}\n\
         audit: {{ output: {} }}\n",
        dir.path().join("audit.log").display()
    );
    let config_path = dir.path().join("tollgate.yaml");
    std::fs::write(&config_path, config)?;

    let bin = repo_root().join("target/release/tollgate");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins`",
        bin.display()
    );
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut child = cmd
        .args(["run", "--workers", "1", "--config"])
        .arg(&config_path)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in stderr.lines() {
        let line = line?;
        if line.contains(" listening") && line.contains("listener=bench") {
            let addr = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("address="))
                .context("address in listening line")?
                .parse()?;
            return Ok(Tollgate {
                child,
                addr,
                _dir: dir,
            });
        }
        anyhow::ensure!(Instant::now() < deadline, "tollgate did not start");
    }
    bail!("tollgate exited before listening")
}

/// Envoy with one worker routing every request to the upstream: the peer a
/// user would otherwise put on the egress path.
struct Envoy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envoy_bin() -> Option<PathBuf> {
    let venv = repo_root().join(".venv/bin/envoy");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("envoy"))
            .find(|p| p.exists())
    })
}

fn start_envoy(bin: &Path, upstream: SocketAddr, cpu: Option<&str>) -> anyhow::Result<Envoy> {
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let config = format!(
        r#"static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: upstream }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}] }}]
"#,
        upstream.ip(),
        upstream.port()
    );
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config)?;
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "-l", "error", "--base-id"])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "envoy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Envoy {
        child,
        addr,
        _dir: dir,
    })
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

fn measure(
    name: &str,
    url: &str,
    script: Option<&Path>,
    o: &Options,
    cpu: Option<&str>,
) -> anyhow::Result<WrkResult> {
    // Warm-up: pools, caches and the branch predictor.
    WrkRun {
        url,
        connections: o.connections,
        duration: Duration::from_secs(2),
        script,
        cpu,
    }
    .run()?;
    let mut results = Vec::new();
    for _ in 0..o.runs {
        let r = WrkRun {
            url,
            connections: o.connections,
            duration: o.duration,
            script,
            cpu,
        }
        .run()?;
        anyhow::ensure!(r.non_2xx == 0, "{name}: {} non-2xx answers", r.non_2xx);
        eprintln!(
            "  {name}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
            r.requests_per_sec, r.p50_ms, r.p99_ms
        );
        results.push(r);
    }
    Ok(median(results))
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    for tool in ["wrk"]
        .iter()
        .chain(if o.pin { &["taskset"][..] } else { &[][..] })
    {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .code()
            != Some(0)
        {
            bail!("{tool} is missing: apt-get install -y wrk util-linux");
        }
    }
    let (proxy_cpu, load_cpu) = if o.pin {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };
    let upstream = tollgate_benches::upstream::start()?;
    let script_dir = tempfile::tempdir()?;
    let script = script_dir.path().join("proxy.lua");
    std::fs::write(
        &script,
        "wrk.path = \"http://bench.test/v1/items/42\"\nwrk.headers[\"Host\"] = \"bench.test\"\n",
    )?;

    let layout = if o.pin {
        "proxy (tollgate 1 worker / Envoy --concurrency 1) pinned to CPU 0; wrk and the upstream on CPU 1"
    } else {
        "unpinned; tollgate 1 worker, Envoy --concurrency 1, wrk 1 thread"
    };
    eprintln!(
        "loadbench: {} connections, {} s x {} runs per row, {layout}",
        o.connections,
        o.duration.as_secs(),
        o.runs
    );
    let direct = measure(
        "direct",
        &format!("http://{upstream}/v1/items/42"),
        None,
        &o,
        load_cpu,
    )?;
    let mut rows = vec![("direct", direct)];
    match envoy_bin() {
        Some(bin) => {
            let envoy = start_envoy(&bin, upstream, proxy_cpu)?;
            let url = format!("http://{}/v1/items/42", envoy.addr);
            rows.push((
                "Envoy bare route",
                measure("envoy", &url, None, &o, load_cpu)?,
            ));
        }
        None => eprintln!("  envoy not found (scripts/bench installs it into .venv): row skipped"),
    }
    // Each tollgate row runs alone, so rows never share the CPU.
    for (name, cache_size) in [
        ("tollgate full authz", 10_000),
        ("tollgate full authz, no decision cache", 0),
    ] {
        let tollgate = start_tollgate(upstream, proxy_cpu, cache_size)?;
        let url = format!("http://{}/", tollgate.addr);
        rows.push((name, measure(name, &url, Some(&script), &o, load_cpu)?));
    }

    let envoy = rows
        .iter()
        .find(|(n, _)| n.starts_with("Envoy"))
        .map(|(_, r)| *r);
    println!("| row | req/s | p50 ms | p99 ms | req/s vs direct | req/s vs Envoy | p99 vs Envoy |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &rows {
        let vs_envoy =
            |a: f64, b: f64| envoy.map_or("–".to_string(), |_| format!("{:.2}", a / b));
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.2} | {} | {} |",
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.requests_per_sec / direct.requests_per_sec,
            vs_envoy(
                r.requests_per_sec,
                envoy.map_or(1.0, |e| e.requests_per_sec)
            ),
            vs_envoy(r.p99_ms, envoy.map_or(1.0, |e| e.p99_ms)),
        );
    }
    println!(
        "\n{} connections, HTTP/1.1 keep-alive, 20-byte body, {} s x {} runs (median), {layout}, {} cores",
        o.connections,
        o.duration.as_secs(),
        o.runs,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    Ok(())
}
