//! Requests an approval gate stops, held by the proxy until a person
//! decides (`benches/src/approvals.rs` has the gate, the merges and the
//! approver). Two measurements:
//!
//! * Memory. One `tollgate run` deciding in-process (tasks and approvals in
//!   its memory) holds `--held` merges at once, each with a body of its own
//!   and so an approval of its own. Its RSS warm with nothing held, then
//!   with every one held (all listed pending by `ListApprovals`, then a
//!   settle), gives the memory per held request, less its body. Then half
//!   are approved and half denied, the verdicts sent together: every
//!   approved merge must be answered 200 by the upstream, which must see it
//!   exactly once; every denied one 403 `approval_denied`, and never reach
//!   the upstream.
//! * Release latency. `--trials` merges one after another, each held and
//!   approved once the approver's `WatchApprovals` shows it: the time from
//!   `Approve` returning to the upstream (in this process) reading the
//!   request's head. Three shapes, each with processes of its own: one
//!   process; a proxy asking one decision service; a proxy asking replica
//!   A of two sharing a Redis server, the verdict given on replica B, so
//!   it travels B → Redis → A → proxy.
//!
//! Pinned, every tollgate process (and Redis) runs on the proxy CPU; this
//! harness, its upstream and its clients on the other.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::tollgate::decision::proto::pb;
use anyhow::Context;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tollgate_benches::approvals::{self, Answer, Approver, Gate};
use tollgate_benches::report::*;
use tollgate_benches::tollgate::{self, RunOptions, Tasks};
use tollgate_benches::upstream::Arrival;
use tollgate_benches::{memory, redis, tasks, WORKLOAD};

use super::Bench;

/// Longer than the section runs: a hold that ran out would answer 428 and
/// end the measurement, not slow it.
const HOLD: Duration = Duration::from_secs(600);

/// Connections opened, and verdicts sent, at once: more would only queue
/// in the listener's backlog and the gRPC connection's streams.
const IN_FLIGHT: usize = 64;

/// Held and released before the memory is read, so what serving held
/// requests allocates once (buffers, pools, the verdict channel's slots)
/// is not counted per request.
const WARM_BATCH: usize = 32;

/// Release trials before the measured ones, for the same reason.
pub(super) const WARM_TRIALS: usize = 5;

/// From an approval showing pending to its `Approve`: by then the proxy
/// waits on the verdict stream rather than still asking.
const SETTLE: Duration = Duration::from_millis(20);

/// How long an approval may take to show on the approver's side.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

type Arrivals = UnboundedReceiver<Arrival>;

pub(super) fn approvals(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let (upstream, mut arrivals) = tollgate_benches::upstream::start_recording()?;
    let gate = Gate {
        upstream,
        hold: HOLD,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (held, trials) = (bench.o.held, bench.o.approval_trials);
    // Every merge of the section has a body of its own, whichever process
    // holds it.
    let mut first = 0;
    let mut numbers = |count: usize| {
        let start = first;
        first += count;
        start
    };
    let memory = runtime.block_on(hold_many(
        bench,
        gate,
        &mut arrivals,
        numbers(WARM_BATCH + held),
    ))?;
    eprintln!(
        "  approvals: {held} held, {:.1} KiB each without the body; released in {:.0} ms",
        memory.per_request_kib(),
        memory.release.as_secs_f64() * 1000.0
    );
    report.held = Some(memory);
    let per_shape = WARM_TRIALS + trials + 1;
    let shapes: [(&'static str, Shape); 3] = [
        (RELEASE_EMBEDDED, Shape::Embedded),
        (RELEASE_SERVICE, Shape::Service),
        (RELEASE_REPLICAS, Shape::Replicas),
    ];
    for (name, shape) in shapes {
        let from = numbers(per_shape);
        let measured = runtime.block_on(release_trials(bench, gate, shape, &mut arrivals, from))?;
        let release = ReleaseLatency {
            shape: name,
            trials: measured,
        };
        match (release.summary(), &release.trials) {
            (Some(s), _) => eprintln!(
                "  approvals, {name}: Approve → upstream p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                s.p50, s.p99, s.max
            ),
            (None, Err(why)) => eprintln!("  approvals, {name}: not measured: {why}"),
            (None, Ok(_)) => {}
        }
        report.release.push(release);
    }
    Ok(())
}

/// A task for the bench workload from the decision API at `api` (merges
/// are writes, and the guardrails let writes through only under a task):
/// its token.
async fn task_token(api: SocketAddr) -> anyhow::Result<String> {
    let mut admin = tasks::admin(api).await?;
    tasks::wait_ready(&mut admin).await?;
    let ttl = Duration::from_secs(3600);
    Ok(tasks::start(&mut admin, WORKLOAD, "bench merges", ttl, &[])
        .await?
        .token)
}

/// Merges sent at once and not answered yet, every one held for its
/// approval.
struct Batch {
    /// By merge number: its answer to come.
    answers: Vec<(usize, JoinHandle<anyhow::Result<Answer>>)>,
    /// By merge number: its approval.
    approvals: HashMap<usize, String>,
    /// Body digest → merge number.
    bodies: HashMap<String, usize>,
}

/// Merges `first..first + count` sent through `proxy` at once; returns
/// when every one has an approval pending, none answered.
async fn hold(
    proxy: SocketAddr,
    token: &str,
    approver: &mut Approver,
    first: usize,
    count: usize,
) -> anyhow::Result<Batch> {
    let opening = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut answers = Vec::with_capacity(count);
    let mut bodies = HashMap::with_capacity(count);
    for n in first..first + count {
        let body = approvals::body(n);
        bodies.insert(approvals::sha256_hex(body.as_bytes()), n);
        let permit = opening.clone().acquire_owned().await?;
        let token = token.to_string();
        answers.push((
            n,
            tokio::spawn(async move {
                let sent = approvals::send(proxy, &token, &body).await;
                drop(permit);
                approvals::answer(sent?).await
            }),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30) + count as u32 * SETTLE;
    loop {
        let pending = approvals::pending(approver).await?;
        let ours: HashMap<usize, String> = pending
            .into_iter()
            .filter_map(|a| Some((*bodies.get(&a.body_sha256)?, a.approval_id)))
            .collect();
        answered_none(&mut answers).await?;
        if ours.len() == count {
            return Ok(Batch {
                answers,
                approvals: ours,
                bodies,
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {count} held merges have a pending approval",
            ours.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails with the first answer given before any verdict: a held request
/// must wait.
async fn answered_none(
    answers: &mut Vec<(usize, JoinHandle<anyhow::Result<Answer>>)>,
) -> anyhow::Result<()> {
    let Some(i) = answers.iter().position(|(_, a)| a.is_finished()) else {
        return Ok(());
    };
    let (n, early) = answers.swap_remove(i);
    match early.await? {
        Ok(a) => anyhow::bail!("merge {n} was answered while held: {} {}", a.status, a.text),
        Err(e) => Err(e.context(format!("merge {n} failed while held"))),
    }
}

/// Approve the even merges of `batch` and deny the odd ones, the verdicts
/// sent together; every answer and every arrival at the upstream must be
/// the verdict's. The approved and denied counts, and the time from the
/// first verdict sent to the last answer read.
async fn release(
    batch: Batch,
    approver: &Approver,
    arrivals: &mut Arrivals,
) -> anyhow::Result<(usize, usize, Duration)> {
    let started = Instant::now();
    let sending = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut verdicts = Vec::with_capacity(batch.approvals.len());
    for (&n, id) in &batch.approvals {
        let permit = sending.clone().acquire_owned().await?;
        let (mut approver, id) = (approver.clone(), id.clone());
        verdicts.push(tokio::spawn(async move {
            let decided = approvals::decide(&mut approver, &id, n % 2 == 0).await;
            drop(permit);
            decided
        }));
    }
    for v in verdicts {
        v.await??;
    }
    let upstream_body = std::str::from_utf8(tollgate_benches::upstream::BODY)?;
    let (mut approved, mut denied) = (0, 0);
    for (n, answer) in batch.answers {
        let a = answer.await?.with_context(|| format!("merge {n}"))?;
        if n % 2 == 0 {
            anyhow::ensure!(
                a.status == 200 && a.text.ends_with(upstream_body),
                "approved merge {n} was answered {} {}",
                a.status,
                a.text
            );
            approved += 1;
        } else {
            anyhow::ensure!(
                a.status == 403
                    && a.text.contains("\"approval_denied\"")
                    && a.text.contains(&batch.approvals[&n]),
                "denied merge {n} was answered {} {}",
                a.status,
                a.text
            );
            denied += 1;
        }
    }
    let took = started.elapsed();
    // The upstream reports a request before answering it, so every one
    // that reached it is in the channel by now.
    let mut seen = HashSet::new();
    while let Ok(arrival) = arrivals.try_recv() {
        let digest = approvals::sha256_hex(&arrival.body);
        let n = *batch
            .bodies
            .get(&digest)
            .context("the upstream received a merge this batch never sent")?;
        anyhow::ensure!(n % 2 == 0, "denied merge {n} reached the upstream");
        anyhow::ensure!(seen.insert(n), "merge {n} reached the upstream twice");
    }
    anyhow::ensure!(
        seen.len() == approved,
        "{} of {approved} approved merges reached the upstream",
        seen.len()
    );
    Ok((approved, denied, took))
}

/// The memory measurement: `--held` merges held at once by one process,
/// then released.
async fn hold_many(
    bench: &Bench,
    gate: Gate,
    arrivals: &mut Arrivals,
    first: usize,
) -> anyhow::Result<HeldRequests> {
    let count = bench.o.held;
    let t = tollgate::run(
        &RunOptions {
            tasks: Some(Tasks::InMemory),
            gate: Some(gate),
            ..RunOptions::plain(gate.upstream)
        },
        bench.proxy_cpu,
    )?;
    let api = t.listener("decision").context("no decision API listener")?;
    let token = task_token(api).await?;
    let mut approver = approvals::approver(api).await?;
    // tollgate trims its heap once a burst is over (it looks once a
    // second): read the RSS after that.
    let after_burst = || tokio::time::sleep(Duration::from_secs(2));

    let warm = hold(t.addr, &token, &mut approver, first, WARM_BATCH).await?;
    release(warm, &approver, arrivals).await?;
    after_burst().await;
    let before_kib = memory::rss_kib(t.pid())?;

    let mut batch = hold(t.addr, &token, &mut approver, first + WARM_BATCH, count).await?;
    // The last ones listed may still be between asking and waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    answered_none(&mut batch.answers).await?;
    let holding_kib = memory::rss_kib(t.pid())?;
    let (approved, denied, release) = release(batch, &approver, arrivals).await?;
    after_burst().await;
    let after_kib = memory::rss_kib(t.pid())?;

    // Measured after the held requests, never before them: what the idle
    // connections free might be reused by the held ones and make them look
    // cheaper; this way round, if anything, the connections look cheaper.
    let proxy = t.addr;
    let idle = tokio::task::spawn_blocking(move || memory::open_idle(proxy, count)).await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = memory::rss_kib(t.pid())?;
    anyhow::ensure!(
        memory::closed(&idle) == 0,
        "tollgate closed idle connections"
    );
    drop(idle);
    // Their GETs went to the same upstream: not merges, not for later.
    while arrivals.try_recv().is_ok() {}
    Ok(HeldRequests {
        held: count,
        body_bytes: approvals::body(first).len(),
        before_kib,
        holding_kib,
        after_kib,
        idle_kib,
        approved,
        denied,
        in_flight: IN_FLIGHT,
        release,
    })
}

#[derive(Clone, Copy)]
enum Shape {
    Embedded,
    Service,
    Replicas,
}

/// The release latency in one shape, its processes started here and gone
/// when it returns; `Err` with the reason when the shape cannot work with
/// this build.
async fn release_trials(
    bench: &Bench,
    gate: Gate,
    shape: Shape,
    arrivals: &mut Arrivals,
    first: usize,
) -> anyhow::Result<Result<Vec<Release>, String>> {
    let cpu = bench.proxy_cpu;
    let count = bench.o.approval_trials;
    let remote = |decision: SocketAddr| {
        tollgate::run(
            &RunOptions {
                decision_endpoint: Some(decision),
                gate: Some(gate),
                ..RunOptions::plain(gate.upstream)
            },
            cpu,
        )
    };
    match shape {
        Shape::Embedded => {
            let t = tollgate::run(
                &RunOptions {
                    tasks: Some(Tasks::InMemory),
                    gate: Some(gate),
                    ..RunOptions::plain(gate.upstream)
                },
                cpu,
            )?;
            let api = t.listener("decision").context("no decision API listener")?;
            let token = task_token(api).await?;
            let mut approver = approvals::approver(api).await?;
            let m = trials(t.addr, &token, &mut approver, arrivals, first, count).await?;
            Ok(Ok(m))
        }
        Shape::Service => {
            let d = tollgate::gated_decision(Tasks::InMemory, HOLD, cpu)?;
            let t = remote(d.addr)?;
            let token = task_token(d.addr).await?;
            let mut approver = approvals::approver(d.addr).await?;
            let m = trials(t.addr, &token, &mut approver, arrivals, first, count).await?;
            Ok(Ok(m))
        }
        Shape::Replicas => {
            let server = redis::start(cpu)?;
            let a = tollgate::gated_decision(Tasks::InRedis(server.addr), HOLD, cpu)?;
            let b = tollgate::gated_decision(Tasks::InRedis(server.addr), HOLD, cpu)?;
            // Both on the store before the proxy asks A.
            tasks::wait_ready(&mut tasks::admin(b.addr).await?).await?;
            let token = task_token(a.addr).await?;
            let t = remote(a.addr)?;
            let mut on_a = approvals::approver(a.addr).await?;
            let mut on_b = approvals::approver(b.addr).await?;
            if let Some(why) = shared(t.addr, &token, &mut on_a, &mut on_b, arrivals, first).await?
            {
                return Ok(Err(why));
            }
            let m = trials(t.addr, &token, &mut on_b, arrivals, first + 1, count).await?;
            Ok(Ok(m))
        }
    }
}

/// The approval a merge whose body's digest is `digest` asks for, as
/// `watch` shows it pending; `None` if it has not within `within`.
async fn requested(
    watch: &mut tonic::Streaming<pb::ApprovalEvent>,
    digest: &str,
    within: Duration,
) -> anyhow::Result<Option<String>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let Ok(event) = tokio::time::timeout_at(deadline, watch.message()).await else {
            return Ok(None);
        };
        let event = event?.context("the approver's watch ended")?;
        let Some(approval) = event.approval else {
            continue;
        };
        let asked = matches!(event.kind.as_str(), "requested" | "snapshot");
        if asked && approval.state == "pending" && approval.body_sha256 == digest {
            return Ok(Some(approval.approval_id));
        }
    }
}

/// Fails if merge `n` was answered before its verdict: a held request
/// must wait for one.
async fn still_held(
    answer: &mut JoinHandle<anyhow::Result<Answer>>,
    n: usize,
) -> anyhow::Result<()> {
    if !answer.is_finished() {
        return Ok(());
    }
    match answer.await? {
        Ok(a) => anyhow::bail!(
            "merge {n} was answered before any verdict: {} {}",
            a.status,
            a.text
        ),
        Err(e) => Err(e.context(format!("merge {n} failed while held"))),
    }
}

/// Does an approval a proxy asks replica A for show on replica B? A probe
/// merge, approved on B when it does (`None`); denied on A when it does
/// not, with the reason the shape cannot be measured.
async fn shared(
    proxy: SocketAddr,
    token: &str,
    on_a: &mut Approver,
    on_b: &mut Approver,
    arrivals: &mut Arrivals,
    n: usize,
) -> anyhow::Result<Option<String>> {
    let mut watch = on_b
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await?
        .into_inner();
    let body = approvals::body(n);
    let digest = approvals::sha256_hex(body.as_bytes());
    let mut answer = tokio::spawn(approvals::answer(
        approvals::send(proxy, token, &body).await?,
    ));
    if let Some(id) = requested(&mut watch, &digest, SEEN_WITHIN).await? {
        tokio::time::sleep(SETTLE).await;
        still_held(&mut answer, n).await?;
        approvals::decide(on_b, &id, true).await?;
        let a = answer.await??;
        anyhow::ensure!(a.status == 200, "the probe merge: {} {}", a.status, a.text);
        arrivals.recv().await.context("the upstream is gone")?;
        return Ok(None);
    }
    let on_a_only = approvals::pending(on_a)
        .await?
        .into_iter()
        .find(|a| a.body_sha256 == digest)
        .context("the probe merge was never held, on A either")?;
    approvals::decide(on_a, &on_a_only.approval_id, false).await?;
    let a = answer.await??;
    anyhow::ensure!(a.status == 403, "the probe merge: {} {}", a.status, a.text);
    Ok(Some(format!(
        "replica B never showed the approval pending on A ({} s): approvals are not shared through Redis in this build",
        SEEN_WITHIN.as_secs()
    )))
}

/// Merges `first..` through `proxy` one after another, each approved by
/// `approver` once its watch shows it pending: after [`WARM_TRIALS`], the
/// time to the upstream for `count` of them.
async fn trials(
    proxy: SocketAddr,
    token: &str,
    approver: &mut Approver,
    arrivals: &mut Arrivals,
    first: usize,
    count: usize,
) -> anyhow::Result<Vec<Release>> {
    let mut watch = approver
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await?
        .into_inner();
    let mut measured = Vec::with_capacity(count);
    for n in first..first + WARM_TRIALS + count {
        let body = approvals::body(n);
        let digest = approvals::sha256_hex(body.as_bytes());
        let mut answer = tokio::spawn(approvals::answer(
            approvals::send(proxy, token, &body).await?,
        ));
        let id = requested(&mut watch, &digest, SEEN_WITHIN)
            .await?
            .with_context(|| format!("merge {n}: no approval on the approver's watch"))?;
        tokio::time::sleep(SETTLE).await;
        still_held(&mut answer, n).await?;
        let sent = Instant::now();
        approvals::decide(approver, &id, true).await?;
        let returned = Instant::now();
        let Ok(arrival) = tokio::time::timeout(SEEN_WITHIN, arrivals.recv()).await else {
            // What the agent got instead says where it stopped.
            let got = match tokio::time::timeout(Duration::from_secs(1), answer).await {
                Ok(a) => format!("it was answered {:?}", a??),
                Err(_) => "it is still held".to_string(),
            };
            anyhow::bail!(
                "approved merge {n} (approval {id}) never reached the upstream in {} s: {got}",
                SEEN_WITHIN.as_secs()
            );
        };
        let arrival = arrival.context("the upstream is gone")?;
        anyhow::ensure!(
            arrival.body == body.as_bytes(),
            "the upstream received another merge than {n}"
        );
        let a = answer.await??;
        anyhow::ensure!(
            a.status == 200,
            "approved merge {n}: {} {}",
            a.status,
            a.text
        );
        if n >= first + WARM_TRIALS {
            // The proxy may be released before the approver has read the
            // answer to `Approve` (the verdict is announced first): 0.
            measured.push(Release {
                after_return: arrival.at.saturating_duration_since(returned),
                after_sent: arrival.at.saturating_duration_since(sent),
            });
        }
    }
    Ok(measured)
}
