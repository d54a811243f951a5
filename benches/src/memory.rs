//! Memory of `tollgate run`: resident set idle, and with many idle
//! keep-alive agent connections open, each of which has carried one
//! request (so every per-connection buffer the proxy keeps is allocated).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

/// Raise this process's open-file limit (children inherit it) so that
/// `needed` sockets fit on both ends; as root the hard limit may be raised
/// too. Returns the soft limit now in force.
pub fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0,
            "getrlimit failed"
        );
        let want = needed.max(limit.rlim_cur);
        if limit.rlim_max < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(want);
            }
        }
        limit.rlim_cur = limit.rlim_max;
        anyhow::ensure!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0,
            "setrlimit failed"
        );
    }
    Ok(limit.rlim_cur)
}

/// One absolute-form GET through the proxy; the answer must be 200 with the
/// upstream's body. Reads exactly the answer, so the connection stays
/// usable and idle afterwards.
async fn one_request(stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<()> {
    stream.write_all(request).await?;
    let mut got = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "proxy closed the connection");
        got.extend_from_slice(&buf[..n]);
        if let Some((head, body)) = crate::whole_answer(&got)? {
            anyhow::ensure!(head.starts_with("http/1.1 200"), "answer: {head}");
            anyhow::ensure!(body == crate::upstream::BODY);
            return Ok(());
        }
    }
}

const ABSOLUTE_FORM: &[u8] =
    b"GET http://bench.test/v1/items/42 HTTP/1.1\r\nHost: bench.test\r\n\r\n";
const ORIGIN_FORM: &[u8] = b"GET /v1/items/42 HTTP/1.1\r\nHost: bench.test\r\n\r\n";

/// Open `count` connections to the proxy, one request each, kept open and
/// idle. Drop the returned streams to close them.
pub fn open_idle(proxy: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpStream>> {
    open_idle_with(proxy, count, ABSOLUTE_FORM)
}

/// [`open_idle`] for a gateway (Envoy's route): origin-form requests.
pub fn open_idle_origin_form(
    gateway: SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<std::net::TcpStream>> {
    open_idle_with(gateway, count, ORIGIN_FORM)
}

fn open_idle_with(
    proxy: SocketAddr,
    count: usize,
    request: &'static [u8],
) -> anyhow::Result<Vec<std::net::TcpStream>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Enough in flight to be quick, few enough that tollgate's upstream
        // pool stays small and the figure is about agent connections.
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let permit = gate.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(proxy).await?;
                one_request(&mut stream, request).await?;
                drop(permit);
                anyhow::Ok(stream.into_std()?)
            }));
        }
        let mut streams = Vec::with_capacity(count);
        for task in tasks {
            streams.push(task.await??);
        }
        Ok(streams)
    })
}

/// How many of `streams` the other end has closed.
pub fn closed(streams: &[std::net::TcpStream]) -> usize {
    let mut byte = [0u8; 1];
    streams
        .iter()
        // Non-blocking already (they come from tokio): `WouldBlock` is an
        // open, idle connection; `Ok(0)` an orderly close.
        .filter(|s| match s.peek(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        })
        .count()
}
