//! Revocation propagation: how long after `EndTask` returns does each proxy
//! refuse the task's token?
//!
//!     target/release/revocation [--trials N] [--only single|replicas]
//!
//! Two shapes, one after the other unless `--only` picks one, so one run
//! sets them side by side:
//! * `single`: one `tollgate decision` (tasks in memory) and two `tollgate
//!   run` in remote mode asking it.
//! * `replicas`: a Redis server of its own and two `tollgate decision`
//!   replicas sharing tasks through it, A and B; one proxy asks A, the
//!   other B. Tasks are started and ended through A, so the proxy on B
//!   measures the way across replicas: A's end announced on Redis, heard
//!   by B, pushed to its proxy.
//!
//! Each proxy keeps a warm decision cache for the task (so without the
//! revocation push it would keep allowing for the cache TTL, 10 minutes
//! here). For every trial a task is started, one client per proxy sends
//! GETs with the task token back to back over keep-alive, `EndTask` is
//! called, and the time from `EndTask` returning to the first refused
//! (401) response on each proxy is recorded. Prints p50/p99/max per shape,
//! and in `replicas` per proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tollgate::decision::proto::pb;
use tollgate_benches::process::{command, Participant};
use tollgate_benches::tasks::{self, Admin};
use tollgate_benches::tollgate as participant;
use tollgate_benches::WORKLOAD;

fn prepare(config: &str) -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("catalog"))?;
    std::fs::create_dir_all(dir.path().join("policies"))?;
    std::fs::write(dir.path().join("catalog/bench.yaml"), participant::CATALOG)?;
    std::fs::write(
        dir.path().join("policies/bench.cedar"),
        format!(
            "permit (principal == Workload::\"{WORKLOAD}\", action in Action::\"read\", resource) when {{ context has task }};\n"
        ),
    )?;
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, format!("{config}\naudit: {{ output: /dev/null }}\n"))?;
    Ok((dir, path))
}

/// A decision service with tasks, kept in the Redis at `redis` if given.
fn decision(redis: Option<SocketAddr>) -> anyhow::Result<Participant> {
    let state = redis
        .map(tollgate_benches::redis::state_yaml)
        .unwrap_or_default();
    let (dir, path) = prepare(&format!(
        "decision_service: {{ address: 127.0.0.1:0, admin: 127.0.0.1:0 }}\n{}{state}",
        tasks::TASKS_YAML
    ))?;
    let mut cmd = command(&participant::binary()?, None);
    cmd.args(["decision", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_ADMIN_TOKEN", tasks::ADMIN_TOKEN)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=\"decision\"", Some(dir))
}

fn proxy(upstream: SocketAddr, decision: SocketAddr) -> anyhow::Result<Participant> {
    let (dir, path) = prepare(&format!(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    identity: {{ static: \"{WORKLOAD}\" }}\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         tls: {{ ca_dir: no-ca, system_roots: false }}\n\
         forward:\n  allow_networks: [127.0.0.0/8]\n  resolve: {{ \"bench.test:80\": \"{upstream}\" }}\n\
         decision: {{ endpoint: \"http://{decision}\", cache_ttl: 10m }}"
    ))?;
    let mut cmd = command(&participant::binary()?, None);
    cmd.args(["run", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_LOG", "warn,tollgate::cli=info");
    Participant::from_log(cmd, "listener=bench", Some(dir))
}

/// Send GETs through `proxy` with `token`, back to back on one keep-alive
/// connection, until one is refused; returns when that refusal arrived.
async fn load(proxy: SocketAddr, token: String, warm: Arc<AtomicBool>) -> anyhow::Result<Instant> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    loop {
        // Absolute-form: the low-level client sends the URI as given.
        let request = http::Request::get("http://bench.test/v1/items/1")
            .header("host", "bench.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())?;
        let response = send
            .send_request(request)
            .await
            .context("request through the proxy")?;
        let status = response.status();
        response.into_body().collect().await?;
        match status.as_u16() {
            200 => warm.store(true, Ordering::Release),
            401 => return Ok(Instant::now()),
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `trials` tasks started and ended through `admin`, each used through
/// every proxy until ended: per proxy, the time from `EndTask` returning
/// to its first refusal, one sample per trial.
async fn trials(
    admin: &mut Admin,
    proxies: &[SocketAddr],
    trials: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    // Let the proxies subscribe to revocations (their caches are off
    // until they do).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = vec![Vec::new(); proxies.len()];
    for trial in 0..trials {
        let purpose = format!("revocation trial {trial}");
        let task = tasks::start(admin, WORKLOAD, &purpose, Duration::ZERO, &[]).await?;
        let mut loads = Vec::new();
        let mut warm = Vec::new();
        for p in proxies {
            let w = Arc::new(AtomicBool::new(false));
            warm.push(w.clone());
            loads.push(tokio::spawn(load(*p, task.token.clone(), w)));
        }
        // Every proxy answering from a warm cache, then a little load.
        while !warm.iter().all(|w| w.load(Ordering::Acquire)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        admin
            .end_task(pb::EndTaskRequest { task_id: task.id })
            .await?;
        let returned = Instant::now();
        for (l, samples) in loads.into_iter().zip(&mut samples) {
            // A proxy may refuse before the admin client has read the
            // answer (the push leaves first): that counts as 0.
            samples.push(l.await??.saturating_duration_since(returned));
        }
    }
    Ok(samples)
}

/// One decision service, two proxies asking it: all samples together.
async fn single(upstream: SocketAddr, count: usize) -> anyhow::Result<Vec<Duration>> {
    let decision = decision(None)?;
    let proxies = [
        proxy(upstream, decision.addr)?,
        proxy(upstream, decision.addr)?,
    ];
    let mut admin = tasks::admin(decision.addr).await?;
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    Ok(trials(&mut admin, &addrs, count).await?.concat())
}

/// Two replicas on one Redis, a proxy on each, tasks ended through A: the
/// samples of the proxy on A, then of the proxy on B.
async fn replicas(
    upstream: SocketAddr,
    count: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let server = tollgate_benches::redis::start(None)?;
    let (a, b) = (decision(Some(server.addr))?, decision(Some(server.addr))?);
    let mut admin = tasks::admin(a.addr).await?;
    // Both replicas on the store before the proxies subscribe: a replica
    // without it refuses the stream, and the proxy would back off.
    tasks::wait_ready(&mut admin).await?;
    tasks::wait_ready(&mut tasks::admin(b.addr).await?).await?;
    let proxies = [proxy(upstream, a.addr)?, proxy(upstream, b.addr)?];
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
    let mut samples = trials(&mut admin, &addrs, count).await?.into_iter();
    let on_a = samples.next().context("proxy on A")?;
    let on_b = samples.next().context("proxy on B")?;
    Ok((on_a, on_b))
}

/// `what (N samples): p50 …, p99 …, max …`.
fn summary(what: &str, samples: &[Duration]) -> anyhow::Result<String> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(format!(
        "{what} ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 50 ms)",
        sorted.len(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(*sorted.last().context("no samples")?),
    ))
}

fn main() -> anyhow::Result<()> {
    let mut count = 30usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => count = args.next().context("--trials N")?.parse()?,
            "--only" => {
                let shape = args.next().context("--only single|replicas")?;
                anyhow::ensure!(
                    ["single", "replicas"].contains(&shape.as_str()),
                    "--only takes single or replicas"
                );
                only = Some(shape);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let wants = |shape: &str| only.as_deref().is_none_or(|o| o == shape);
    if wants("replicas") {
        anyhow::ensure!(
            tollgate_benches::redis::binary().is_some(),
            "redis-server is missing (apt-get install -y redis-server), or run --only single"
        );
    }
    let upstream = tollgate_benches::upstream::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Each shape's processes end with it, so the two never share the CPUs.
    if wants("single") {
        let samples = runtime.block_on(single(upstream, count))?;
        let what =
            format!("revocation propagation, one decision service, {count} trials x 2 proxies");
        println!("{}", summary(&what, &samples)?);
    }
    if wants("replicas") {
        let (on_a, on_b) = runtime.block_on(replicas(upstream, count))?;
        let what = "revocation propagation, two decision replicas sharing Redis, EndTask on A";
        println!("{}", summary(&format!("{what}, proxy asking A"), &on_a)?);
        println!(
            "{}",
            summary(&format!("{what}, proxy asking B (across replicas)"), &on_b)?
        );
    }
    Ok(())
}
