//! Slowloris connections: each sends the start of a request head, then one
//! more byte every few seconds, never finishing it; when the proxy closes
//! one (or answers it), another takes its place. They run on a thread of
//! their own until stopped, and say what the proxy did with them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The head every slowloris connection begins, absolute-form as through a
/// forward proxy, and origin-form with the same `Host` for a gateway.
const START_PROXY: &[u8] =
    b"GET http://bench.test/v1/items/42 HTTP/1.1\r\nHost: bench.test\r\nX-Slow: ";
const START_GATEWAY: &[u8] = b"GET /v1/items/42 HTTP/1.1\r\nHost: bench.test\r\nX-Slow: ";

/// What the proxy did with the slowloris connections.
#[derive(Debug, Clone, Default)]
pub struct SlowStats {
    /// Connections opened, first ones and replacements.
    pub opened: u64,
    /// Closed by the proxy (with or without an answer).
    pub closed: u64,
    /// Answers they got before the close, by status line's code.
    pub answers: BTreeMap<u16, u64>,
    /// How long each closed one had been open, seconds.
    pub lifetimes: Vec<f64>,
    /// Connections that could not be opened at all.
    pub connect_failures: u64,
}

impl SlowStats {
    /// The median time a closed connection had lived, seconds.
    pub fn median_lifetime(&self) -> Option<f64> {
        let mut l = self.lifetimes.clone();
        l.sort_by(f64::total_cmp);
        l.get(l.len() / 2).copied()
    }
}

/// Running slowloris connections; [`Slowloris::stop`] ends them.
pub struct Slowloris {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SlowStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Slowloris {
    /// `count` connections to `proxy`, a byte every `every`; `proxy_form`:
    /// absolute-form request targets (a forward proxy) or origin-form (a
    /// gateway). The first ones are spread over one `every`.
    pub fn start(
        proxy: SocketAddr,
        count: usize,
        every: Duration,
        proxy_form: bool,
    ) -> anyhow::Result<Slowloris> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(SlowStats::default()));
        let start = if proxy_form {
            START_PROXY
        } else {
            START_GATEWAY
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("slowloris".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let tasks: Vec<_> = (0..count)
                        .map(|i| {
                            let delay = every.mul_f64(i as f64 / count.max(1) as f64);
                            tokio::spawn(one(proxy, start, every, delay, s.clone(), st.clone()))
                        })
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                })
            })?;
        Ok(Slowloris {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// What happened so far.
    pub fn stats(&self) -> SlowStats {
        self.stats.lock().unwrap().clone()
    }

    /// Close every connection; what happened.
    pub fn stop(mut self) -> SlowStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats()
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One slowloris slot: a connection, and a new one whenever it is closed.
async fn one(
    proxy: SocketAddr,
    start: &'static [u8],
    every: Duration,
    delay: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SlowStats>>,
) {
    tokio::time::sleep(delay).await;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(proxy).await else {
            stats.lock().unwrap().connect_failures += 1;
            tokio::time::sleep(every).await;
            continue;
        };
        stats.lock().unwrap().opened += 1;
        let opened = Instant::now();
        if stream.write_all(start).await.is_err() {
            closed(&stats, opened, None);
            continue;
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // Checked often enough that stopping is quick.
        let mut check = tokio::time::interval(Duration::from_millis(200));
        let ended = loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick() => {
                    if stream.write_all(b"a").await.is_err() {
                        break true;
                    }
                }
                _ = check.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        break false;
                    }
                }
            }
        };
        if ended {
            closed(&stats, opened, status_of(&answer));
        }
    }
}

fn closed(stats: &Mutex<SlowStats>, opened: Instant, status: Option<u16>) {
    let mut s = stats.lock().unwrap();
    s.closed += 1;
    s.lifetimes.push(opened.elapsed().as_secs_f64());
    if let Some(status) = status {
        *s.answers.entry(status).or_default() += 1;
    }
}

/// `HTTP/1.1 408 …` → 408.
fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}
