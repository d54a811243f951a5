//! The decision service killed (SIGKILL) and started again on the same
//! address, a proxy deciding through it: how long until the proxy allows
//! requests again. One agent sends requests back to back on a keep-alive
//! connection the whole time; each trial kills the service, waits until
//! the proxy refuses (`503 decision_unavailable`), starts the service and
//! times the first `200` from the moment the new process logged that it
//! listens, and from the moment it was spawned.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use tollgate_benches::report::Failover;
use tollgate_benches::tollgate::{self, RunOptions};

use super::Bench;

/// One GET through the proxy on `stream`: the status.
fn get(stream: &mut TcpStream) -> anyhow::Result<u16> {
    stream.write_all(b"GET http://bench.test/v1/items/42 HTTP/1.1\r\nHost: bench.test\r\n\r\n")?;
    let mut got = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        anyhow::ensure!(n > 0, "proxy closed the connection");
        got.extend_from_slice(&buf[..n]);
        if let Some((head, _)) = tollgate_benches::whole_answer(&got)? {
            return head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line");
        }
    }
}

/// Requests until one gets `want`, within `limit`: when it came.
fn until(stream: &mut TcpStream, want: u16, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let status = get(stream)?;
        if status == want {
            return Ok(Instant::now());
        }
        anyhow::ensure!(status == 200 || status == 503, "unexpected status {status}");
        anyhow::ensure!(Instant::now() < deadline, "no {want} within {limit:?}");
    }
}

pub(super) fn failover(bench: &Bench, upstream: SocketAddr) -> anyhow::Result<Failover> {
    let cpu = bench.proxy_cpu;
    let mut service = tollgate::decision(cpu)?;
    let address = service.addr;
    let proxy = tollgate::run(
        &RunOptions {
            decision_endpoint: Some(address),
            ..RunOptions::plain(upstream)
        },
        cpu,
    )?;
    let mut agent = TcpStream::connect(proxy.addr)?;
    agent.set_nodelay(true)?;
    until(&mut agent, 200, Duration::from_secs(10))?;
    let trials = if bench.o.smoke {
        2
    } else {
        bench.o.failover_trials
    };
    let (mut from_listening, mut from_spawn) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        drop(service);
        until(&mut agent, 503, Duration::from_secs(10))?;
        let spawned = Instant::now();
        service = tollgate::decision_at(address, cpu)?;
        let listening = Instant::now();
        let served = until(&mut agent, 200, Duration::from_secs(30))?;
        from_listening.push((served - listening).as_secs_f64() * 1e3);
        from_spawn.push((served - spawned).as_secs_f64() * 1e3);
        // Its revocation stream back too before the next kill.
        std::thread::sleep(Duration::from_millis(1_500));
    }
    let failover = Failover {
        from_listening,
        from_spawn,
    };
    eprintln!(
        "  failover: first 200 after listening median {:.1} ms max {:.1} ms; after spawn median {:.1} ms max {:.1} ms ({trials} trials)",
        Failover::median(&failover.from_listening),
        Failover::max(&failover.from_listening),
        Failover::median(&failover.from_spawn),
        Failover::max(&failover.from_spawn),
    );
    Ok(failover)
}
