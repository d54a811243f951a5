//! Requests under a task, with tasks kept in memory and in Redis. Two
//! `tollgate run` deciding in-process, the same but for `state:`: one keeps
//! its tasks in memory, the other in a Redis server of the section's own.
//! Pinned, that server runs on the proxy CPU by default, so the figures
//! charge the proxy for its store's CPU as one core running the whole
//! decision plane would; `--redis-cpu load` puts it beside the upstream
//! instead, as a server elsewhere. On each tollgate, one task with a
//! budget for the bench route's risk class and one without; wrk presents
//! the task's token as an SDK would, in `Authorization: Bearer`. All rows
//! alternate their runs, so a slow spell falls on every one.
//!
//! A request under a budgeted task is admitted (the task read from the
//! store and its unit of budget taken, one script in Redis) and decided by
//! Cedar without the decision cache (policies see the budget's use): one
//! round trip to Redis. Without budgets the decision may come from the
//! cache, but the task is still read for admission: one round trip too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tollgate_benches::process::{self, Participant};
use tollgate_benches::report::*;
use tollgate_benches::tollgate::{self, RunOptions, Tasks};
use tollgate_benches::{redis, tasks, WORKLOAD};

use super::{Bench, Contender};

/// Far beyond what any run can use (a budget is a u32: at most
/// 4,294,967,295), so no row ever meets `budget_exhausted`.
const BUDGET: u32 = 4_000_000_000;

/// What the Redis server did for one row over all its runs, warm-ups
/// included.
#[derive(Default)]
struct RedisUse {
    cpu: Duration,
    requests: u64,
    commands: BTreeMap<String, (u64, u64)>,
}

/// The Redis server's CPU time and command counts so far.
type RedisNow = (Duration, BTreeMap<String, (u64, u64)>);

fn redis_now(server: &Participant) -> anyhow::Result<RedisNow> {
    Ok((
        process::cpu_time(server.pid())?,
        redis::command_stats(server.addr)?,
    ))
}

impl RedisUse {
    /// A run of `requests` between `before` and `after`.
    fn add(&mut self, before: &RedisNow, after: &RedisNow, requests: u64) {
        self.cpu += after.0 - before.0;
        self.requests += requests;
        for (command, (calls, usec)) in &after.1 {
            let (calls0, usec0) = before.1.get(command).copied().unwrap_or_default();
            let sum = self.commands.entry(command.clone()).or_default();
            sum.0 += calls - calls0;
            sum.1 += usec - usec0;
        }
    }
}

pub(super) fn state(
    bench: &Bench,
    upstream: SocketAddr,
    report: &mut Report,
) -> anyhow::Result<()> {
    let cpu = bench.proxy_cpu;
    let server = redis::start(match bench.o.redis_on_load_cpu {
        true => bench.load_cpu,
        false => cpu,
    })?;
    let in_memory = tollgate::run(
        &RunOptions {
            tasks: Some(Tasks::InMemory),
            ..RunOptions::plain(upstream)
        },
        cpu,
    )?;
    let in_redis = tollgate::run(
        &RunOptions {
            tasks: Some(Tasks::InRedis(server.addr)),
            ..RunOptions::plain(upstream)
        },
        cpu,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Per store: a task with a budget, then one without.
    let (started, mut admins) = runtime.block_on(async {
        let (mut started, mut admins) = (Vec::new(), Vec::new());
        for t in [&in_memory, &in_redis] {
            let api = t.listener("decision").context("no decision API listener")?;
            let mut admin = tasks::admin(api).await?;
            tasks::wait_ready(&mut admin).await?;
            let ttl = Duration::from_secs(3600);
            let budgeted = [("read", BUDGET)];
            started.push((
                tasks::start(&mut admin, WORKLOAD, "bench, budgeted", ttl, &budgeted).await?,
                tasks::start(&mut admin, WORKLOAD, "bench", ttl, &[]).await?,
            ));
            admins.push(admin);
        }
        anyhow::Ok((started, admins))
    })?;
    let [(memory_budgeted, memory_plain), (redis_budgeted, redis_plain)] = &started[..] else {
        anyhow::bail!("a task per store and kind");
    };
    let rows = [
        (STATE_NO_TASK, &in_memory, None, false),
        (
            STATE_MEMORY_BUDGET,
            &in_memory,
            Some(memory_budgeted),
            false,
        ),
        (STATE_REDIS_BUDGET, &in_redis, Some(redis_budgeted), true),
        (STATE_MEMORY, &in_memory, Some(memory_plain), false),
        (STATE_REDIS, &in_redis, Some(redis_plain), true),
    ];
    let used: Vec<RefCell<RedisUse>> = rows.iter().map(|_| RefCell::default()).collect();
    let server = &server;
    let contenders: Vec<Contender> = rows
        .iter()
        .zip(&used)
        .map(|(&(name, t, task, through_redis), used)| Contender {
            name,
            pid: t.pid(),
            run: Box::new(move |duration| {
                let headers: Vec<String> = task
                    .map(|task| format!("Authorization: Bearer {}", task.token))
                    .into_iter()
                    .collect();
                let url = format!("http://{}/", t.addr);
                let before = through_redis.then(|| redis_now(server)).transpose()?;
                let r = bench.wrk_once(&url, true, &headers, duration)?;
                if let Some(before) = before {
                    used.borrow_mut()
                        .add(&before, &redis_now(server)?, r.requests);
                }
                expect_task(t, name, task)?;
                Ok(r)
            }),
        })
        .collect();
    let measured = bench.alternated(&contenders)?;
    // The budgeted rows went through the budget, in either store.
    runtime.block_on(async {
        for ((task, _), admin) in started.iter().zip(&mut admins) {
            let used = tasks::used(admin, &task.id).await?;
            let read = used.get("read").copied().unwrap_or(0);
            anyhow::ensure!(read > 0, "task {}: no request used its budget", task.id);
            eprintln!("  {}: {read} requests counted against its budget", task.id);
        }
        anyhow::Ok(())
    })?;
    for ((row, used), (name, ..)) in measured.into_iter().zip(&used).zip(&rows) {
        let used = used.borrow();
        let per_request = |v: f64| v / used.requests.max(1) as f64;
        let redis = (used.requests > 0).then(|| {
            // INFO itself, twice per run, is the section's, not the row's.
            let commands: u64 = used
                .commands
                .iter()
                .filter(|(c, _)| c.as_str() != "info")
                .map(|(_, (calls, _))| calls)
                .sum();
            let shown: Vec<String> = used
                .commands
                .iter()
                .filter(|(c, (calls, _))| c.as_str() != "info" && *calls > 0)
                .map(|(c, (calls, usec))| {
                    format!(
                        "{c} {:.2}/req ({:.1} µs each)",
                        per_request(*calls as f64),
                        *usec as f64 / (*calls).max(1) as f64
                    )
                })
                .collect();
            eprintln!("  {name}: Redis ran {}", shown.join(", "));
            RedisShare {
                cpu_us: per_request(used.cpu.as_secs_f64() * 1e6),
                commands: per_request(commands as f64),
            }
        });
        report.state.push(StateRow { row, redis });
    }
    Ok(())
}

/// The last requests `row` sent were made under `task` (or under none):
/// the token was taken as a task token, not stripped as some credential.
fn expect_task(t: &Participant, row: &str, task: Option<&tasks::Started>) -> anyhow::Result<()> {
    let last = super::last_audit_line(t)?;
    match task {
        Some(task) => anyhow::ensure!(
            last.contains(&format!("\"task\":\"{}\"", task.id)),
            "{row}: the last audit line names no task {}: {last}",
            task.id
        ),
        None => anyhow::ensure!(
            !last.contains("\"task\":\"task_"),
            "{row}: the last audit line names a task: {last}"
        ),
    }
    Ok(())
}
