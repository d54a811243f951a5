//! Revocation propagation: how long after `EndTask` returns does each proxy
//! refuse the task's token?
//!
//!     target/release/revocation [--trials N]
//!
//! One `tollgate decision` (tasks on) and two `tollgate run` in remote mode,
//! each with a warm decision cache for the task (so without the revocation
//! push they would keep allowing for the cache TTL, 10 minutes here). For
//! every trial a task is started, one client per proxy sends GETs with the
//! task token back to back over keep-alive, `EndTask` is called, and the
//! time from `EndTask` returning to the first refused (401) response on each
//! proxy is recorded. Prints p50/p99/max over all trials and proxies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tollgate::decision::proto::pb;
use tollgate::decision::proto::pb::decision_service_client::DecisionServiceClient;
use tollgate_benches::process::{command, Participant};
use tollgate_benches::tollgate as participant;
use tollgate_benches::WORKLOAD;

const ADMIN_TOKEN: &str = "revocation-bench-admin";

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

fn decision() -> anyhow::Result<Participant> {
    let (dir, path) = prepare(
        "decision_service: { address: 127.0.0.1:0, admin: 127.0.0.1:0 }\n\
         tasks: { admin_token: { env: TOLLGATE_ADMIN_TOKEN } }",
    )?;
    let mut cmd = command(&participant::binary()?, None);
    cmd.args(["decision", "--workers", "1", "--config"])
        .arg(path)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
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

type Admin = DecisionServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn admin_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {ADMIN_TOKEN}")
        .parse()
        .map_err(|_| tonic::Status::internal("header"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
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

fn main() -> anyhow::Result<()> {
    let mut trials = 30usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => trials = args.next().context("--trials N")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let upstream = tollgate_benches::upstream::start()?;
    let decision = decision()?;
    let proxies = [
        proxy(upstream, decision.addr)?,
        proxy(upstream, decision.addr)?,
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let samples = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", decision.addr))?
            .connect()
            .await?;
        let mut admin: Admin = DecisionServiceClient::with_interceptor(channel, admin_header as _);
        // Let both proxies subscribe to revocations (their caches are off
        // until they do).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut samples = Vec::new();
        for trial in 0..trials {
            let started = admin
                .start_task(pb::StartTaskRequest {
                    workload: WORKLOAD.into(),
                    purpose: format!("revocation trial {trial}"),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let id = started.task.context("task")?.task_id;
            let mut loads = Vec::new();
            let mut warm = Vec::new();
            for p in &proxies {
                let w = Arc::new(AtomicBool::new(false));
                warm.push(w.clone());
                loads.push(tokio::spawn(load(p.addr, started.token.clone(), w)));
            }
            // Both proxies answering from a warm cache, then a little load.
            while !warm.iter().all(|w| w.load(Ordering::Acquire)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            admin.end_task(pb::EndTaskRequest { task_id: id }).await?;
            let returned = Instant::now();
            for l in loads {
                // A proxy may refuse before the admin client has read the
                // answer (the push leaves first): that counts as 0.
                samples.push(l.await??.saturating_duration_since(returned));
            }
        }
        anyhow::Ok(samples)
    })?;
    drop(proxies);
    let mut sorted = samples.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "revocation propagation, {} trials x 2 proxies ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 50 ms)",
        trials,
        sorted.len(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(*sorted.last().context("no samples")?),
    );
    Ok(())
}
