//! Normal traffic while a proxy holds many idle keep-alive connections and
//! slowloris connections: wrk's p99 before and during, for tollgate and
//! for Envoy's bare route beside it. The idle connections have each
//! carried one request; the slowloris ones send the start of a request head
//! and a byte every few seconds, a new one replacing each the proxy closes.
//! The section reports what the proxy did with them: closed (after how
//! long, with which answer) or held.
//!
//! tollgate runs with the bench configuration; `--slowloris-yaml TEXT`
//! appends top-level configuration (a `limits:` section, say) to try
//! settings without editing this file.

use std::time::Duration;

use tollgate_benches::report::{SlowlorisRow, ENVOY};
use tollgate_benches::slowloris::Slowloris;
use tollgate_benches::tollgate::{self, RunOptions};
use tollgate_benches::{envoy, memory};

use super::Bench;

/// Between two bytes of a slowloris head.
const EVERY: Duration = Duration::from_secs(3);

/// The slowloris connections are held at least this long, loaded runs
/// included: past tollgate's 30 s header-read timeout, so the report says
/// what a proxy does about them, not only that it was still waiting.
const HOLD_AT_LEAST: Duration = Duration::from_secs(40);

/// One participant: unloaded runs, then the same runs with the idle and
/// slowloris connections held.
fn measure(
    bench: &Bench,
    name: &'static str,
    addr: std::net::SocketAddr,
    url: &str,
    proxy_form: bool,
) -> anyhow::Result<SlowlorisRow> {
    let unloaded = bench.wrk(name, url, proxy_form)?;
    let idle_count = bench.o.idle_connections;
    let slow_count = bench.o.slowloris_connections;
    let idle = if proxy_form {
        memory::open_idle(addr, idle_count)?
    } else {
        memory::open_idle_origin_form(addr, idle_count)?
    };
    let slow = Slowloris::start(addr, slow_count, EVERY, proxy_form)?;
    let held_since = std::time::Instant::now();
    // Every slowloris connection open and a few bytes in (a smoke run
    // only checks that the rows come out).
    std::thread::sleep(if bench.o.smoke { EVERY / 3 } else { EVERY * 2 });
    let loaded = bench.wrk(name, url, proxy_form)?;
    if !bench.o.smoke {
        std::thread::sleep(HOLD_AT_LEAST.saturating_sub(held_since.elapsed()));
    }
    let idle_closed = memory::closed(&idle);
    let slow = slow.stop();
    drop(idle);
    let row = SlowlorisRow {
        name,
        unloaded,
        loaded,
        idle: idle_count,
        idle_closed,
        slowloris: slow_count,
        slow,
    };
    eprintln!(
        "  {name}: p99 {:.3} ms unloaded, {:.3} ms loaded ({:.2}x); slowloris opened {}, closed {} (median after {:.1} s, answers {:?}); idle closed {idle_closed}",
        unloaded.p99_ms,
        loaded.p99_ms,
        loaded.p99_ms / unloaded.p99_ms,
        row.slow.opened,
        row.slow.closed,
        row.slow.median_lifetime().unwrap_or(0.0),
        row.slow.answers,
    );
    Ok(row)
}

pub(super) fn slowloris(
    bench: &Bench,
    upstream: std::net::SocketAddr,
) -> anyhow::Result<Vec<SlowlorisRow>> {
    let mut rows = Vec::new();
    let t = tollgate::run(
        &RunOptions {
            extra_yaml: &bench.o.slowloris_yaml,
            ..RunOptions::plain(upstream)
        },
        bench.proxy_cpu,
    )?;
    let url = format!("http://{}/", t.addr);
    rows.push(measure(bench, "tollgate", t.addr, &url, true)?);
    drop(t);
    match envoy::binary() {
        Some(bin) => {
            let e = envoy::start(&bin, upstream, None, bench.proxy_cpu)?;
            let url = format!("http://{}/v1/items/42", e.addr);
            rows.push(measure(bench, ENVOY, e.addr, &url, false)?);
        }
        None => eprintln!("  envoy not found: its slowloris row skipped"),
    }
    Ok(rows)
}
