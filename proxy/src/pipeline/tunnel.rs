//! Blind tunnels: bytes both ways between the agent and an upstream the
//! policy allowed by host:port, counted for the audit line.
//!
//! When one side closes, the other direction goes on for as long as it
//! moves bytes, and ends after `half_close` without one. Without that
//! bound, an upstream that never answers a half-close (HTTP/2 servers
//! commonly wait for the client) would hold the tunnel, and its upstream
//! connection, for ever after the agent has gone; with a bound on the
//! whole rest, a download that follows an upload's end would be cut off.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes moved each way and how the tunnel ended.
#[derive(Debug, Default)]
pub struct Relayed {
    pub from_agent: u64,
    pub from_upstream: u64,
    pub error: Option<String>,
}

async fn pump<R, W>(mut from: R, mut to: W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Held for the stream's life, idle or not (a WebSocket mostly is), so
    // small: its messages are, and a TLS record holds at most 16 KiB.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            // A TLS peer that closed its socket without a close_notify
            // (Python's `ssl`, many HTTP clients) is done, not failed: what
            // the tunnel carries has endings of its own.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            read => read?,
        };
        if n == 0 {
            // Pass the half-close on, so the peer sees end of input.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Run both directions, each counting what it moves; once one ends, the
/// other runs until it ends or stays still for `half_close`. The error
/// that ended the tunnel, if one did.
async fn both_ways(
    (up, up_count): (impl Future<Output = io::Result<()>>, &AtomicU64),
    (down, down_count): (impl Future<Output = io::Result<()>>, &AtomicU64),
    half_close: Duration,
) -> Option<String> {
    tokio::pin!(up, down);
    let (first, second) = tokio::select! {
        r = &mut up => (r, while_moving(&mut down, down_count, half_close).await),
        r = &mut down => (r, while_moving(&mut up, up_count, half_close).await),
    };
    match (first, second) {
        (Err(e), _) | (_, Some(Err(e))) => Some(format!("tunnel ended: {e}")),
        _ => None,
    }
}

/// `direction` to its end, or `None` once `count` stood still for `still`.
async fn while_moving(
    mut direction: impl Future<Output = io::Result<()>> + Unpin,
    count: &AtomicU64,
    still: Duration,
) -> Option<io::Result<()>> {
    let mut seen = count.load(Ordering::Relaxed);
    loop {
        if let Ok(ended) = tokio::time::timeout(still, &mut direction).await {
            return Some(ended);
        }
        let now = count.load(Ordering::Relaxed);
        if now == seen {
            return None;
        }
        seen = now;
    }
}

/// Relay between any two byte streams, through a buffer per direction,
/// until both directions end or `stop` gives the reason to close.
pub async fn relay<A, U>(
    agent: A,
    upstream: U,
    half_close: Duration,
    stop: impl Future<Output = String>,
) -> Relayed
where
    A: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (agent_read, agent_write) = tokio::io::split(agent);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (from_agent, from_upstream) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(agent_read, upstream_write, &from_agent);
    let down = pump(upstream_read, agent_write, &from_upstream);
    let moved = both_ways((up, &from_agent), (down, &from_upstream), half_close);
    until_stopped(moved, stop, (&from_agent, &from_upstream)).await
}

/// `moved` to its end unless `stop` comes first; either way, the bytes
/// counted so far.
async fn until_stopped(
    moved: impl Future<Output = Option<String>>,
    stop: impl Future<Output = String>,
    (from_agent, from_upstream): (&AtomicU64, &AtomicU64),
) -> Relayed {
    let error = tokio::select! {
        error = moved => error,
        why = stop => Some(why),
    };
    Relayed {
        from_agent: from_agent.load(Ordering::Relaxed),
        from_upstream: from_upstream.load(Ordering::Relaxed),
        error,
    }
}

/// Relay an upgraded CONNECT to `upstream`: with buffers lent per burst
/// when the agent's side is a plain TCP socket (the explicit proxy
/// listener), else through `relay`.
pub async fn relay_upgraded(
    upgraded: hyper::upgrade::Upgraded,
    upstream: tokio::net::TcpStream,
    half_close: Duration,
    stop: impl Future<Output = String>,
) -> Relayed {
    use super::watch::Watched;
    use hyper_util::rt::TokioIo;
    let upgraded = match upgraded.downcast::<TokioIo<Watched<tokio::net::TcpStream>>>() {
        Ok(parts) => {
            let agent = parts.io.into_inner().into_inner();
            return relay_tcp(agent, parts.read_buf, upstream, half_close, stop).await;
        }
        Err(upgraded) => upgraded,
    };
    relay(TokioIo::new(upgraded), upstream, half_close, stop).await
}

/// The same between two TCP sockets. `early` holds bytes the agent sent
/// that the HTTP layer had already read; they go first.
pub async fn relay_tcp(
    agent: tokio::net::TcpStream,
    early: bytes::Bytes,
    mut upstream: tokio::net::TcpStream,
    half_close: Duration,
    stop: impl Future<Output = String>,
) -> Relayed {
    let (from_agent, from_upstream) = (AtomicU64::new(0), AtomicU64::new(0));
    // `stop` applies from the first byte: an upstream that does not read
    // could hold even the early bytes.
    let moved = async {
        if let Err(e) = upstream.write_all(&early).await {
            return Some(format!("tunnel ended: {e}"));
        }
        from_agent.store(early.len() as u64, Ordering::Relaxed);
        lent::queue_less(&agent);
        lent::queue_less(&upstream);
        let up = lent::pump(&lent::LENDER, &agent, &upstream, &from_agent);
        let down = lent::pump(&lent::LENDER, &upstream, &agent, &from_upstream);
        both_ways((up, &from_agent), (down, &from_upstream), half_close).await
    };
    until_stopped(moved, stop, (&from_agent, &from_upstream)).await
}

/// Copying between TCP sockets through buffers that a direction borrows
/// only while bytes are in it.
///
/// Faster than splice(2) socket → pipe → socket when the reader shares
/// the proxy's machine, as an agent pod on tollgate's node does
/// (`docs/benchmarks/history.md`, "Tunnel: copying through lent buffers"), most
/// likely because the bytes it reads were just written by tollgate and
/// are still in the shared cache, where spliced pages were written by the
/// sender tens of megabytes earlier. It costs tollgate a third more CPU
/// per byte.
///
/// A direction whose source has nothing to read gives its buffer back, so
/// an idle tunnel holds none, as a pipe held no pages; a direction whose
/// reader is backed up keeps one, as a full pipe did.
mod lent {
    use std::io;
    use std::ops::{Deref, DerefMut};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::net::TcpStream;

    /// Big enough that a bulk transfer moves a megabyte per system call.
    const BIG: usize = 1024 * 1024;
    /// What a direction gets once the lender's big ones are all out.
    const SMALL: usize = 64 * 1024;
    /// Unsent bytes a tunnel socket takes before it stops taking more.
    const NOTSENT_LOWAT: libc::c_int = 512 * 1024;

    /// The lender every tunnel borrows from: at most 256 MiB in big
    /// buffers at once, however many tunnels are backed up, and 8 MiB
    /// kept for the next burst.
    pub static LENDER: Lender = Lender::new(256, 8);

    pub struct Lender {
        lent: AtomicUsize,
        lent_max: usize,
        kept: Mutex<Vec<Box<[u8]>>>,
        kept_max: usize,
    }

    impl Lender {
        pub const fn new(lent_max: usize, kept_max: usize) -> Lender {
            Lender {
                lent: AtomicUsize::new(0),
                lent_max,
                kept: Mutex::new(Vec::new()),
                kept_max,
            }
        }

        pub fn lend(&self) -> Buffer<'_> {
            if self.lent.fetch_add(1, Ordering::Relaxed) < self.lent_max {
                let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let bytes = kept.unwrap_or_else(|| vec![0; BIG].into_boxed_slice());
                return Buffer {
                    bytes,
                    lender: self,
                };
            }
            self.lent.fetch_sub(1, Ordering::Relaxed);
            Buffer {
                bytes: vec![0; SMALL].into_boxed_slice(),
                lender: self,
            }
        }

        /// Big buffers out now.
        #[cfg(test)]
        pub fn lent(&self) -> usize {
            self.lent.load(Ordering::Relaxed)
        }
    }

    pub struct Buffer<'a> {
        bytes: Box<[u8]>,
        lender: &'a Lender,
    }

    impl Drop for Buffer<'_> {
        fn drop(&mut self) {
            if self.bytes.len() != BIG {
                return;
            }
            self.lender.lent.fetch_sub(1, Ordering::Relaxed);
            let mut kept = self.lender.kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < self.lender.kept_max {
                kept.push(std::mem::take(&mut self.bytes));
            }
        }
    }

    impl Deref for Buffer<'_> {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl DerefMut for Buffer<'_> {
        fn deref_mut(&mut self) -> &mut [u8] {
            &mut self.bytes
        }
    }

    /// Keep at most `NOTSENT_LOWAT` unsent in the socket: the rest of a
    /// burst waits in the lent buffer, and the source's own window holds
    /// back what follows. Bytes then leave in tollgate's own write, on
    /// tollgate's CPU, rather than when the reader's acknowledgements
    /// arrive, on the reader's (`docs/benchmarks/history.md`, "Tunnel: copying
    /// through lent buffers"). Bytes in flight are not limited, so a long
    /// round trip does not cap a tunnel.
    pub fn queue_less(socket: &TcpStream) {
        // SAFETY: setting an integer option on a socket we hold; a kernel
        // without the option leaves the socket as it was.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&NOTSENT_LOWAT as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    /// `from` → `to` until `from` ends, then pass the half-close on.
    pub async fn pump(
        lender: &Lender,
        from: &TcpStream,
        to: &TcpStream,
        count: &AtomicU64,
    ) -> io::Result<()> {
        let mut buffer = None;
        loop {
            // A read that finds nothing clears the socket's readiness, so
            // tokio wakes this direction again when more arrives; until
            // then the buffer is back with the lender.
            let n = loop {
                match from.try_read(buffer.get_or_insert_with(|| lender.lend())) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        buffer = None;
                        from.readable().await?;
                    }
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // Pass the half-close on. A peer that has gone already
                // needs no telling.
                // SAFETY: shutting down the write side of a socket we hold.
                unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
                return Ok(());
            }
            let bytes = &buffer.as_deref().expect("a read filled it")[..n];
            let mut sent = 0;
            while sent < n {
                match to.try_write(&bytes[sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => sent += m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn never() -> String {
        std::future::pending().await
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_are_counted() {
        let (agent, mut agent_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(relay(agent, upstream, Duration::from_secs(5), never()));
        agent_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_peer.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        agent_peer.read_exact(&mut got).await.unwrap();
        drop(agent_peer);
        drop(upstream_peer);
        let relayed = tunnel.await.unwrap();
        assert_eq!((relayed.from_agent, relayed.from_upstream), (5, 2));
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        (c, l.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn tcp_tunnel_moves_early_bytes_then_both_ways_and_passes_half_close_on() {
        let (mut agent_peer, agent) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let tunnel = tokio::spawn(relay_tcp(
            agent,
            bytes::Bytes::from_static(b"early "),
            upstream,
            Duration::from_secs(5),
            never(),
        ));
        let big = vec![7u8; 3 * 1024 * 1024];
        agent_peer.write_all(&big).await.unwrap();
        let mut got = vec![0u8; 6 + big.len()];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..6], b"early ");
        assert!(got[6..].iter().all(|b| *b == 7));
        upstream_peer.write_all(b"pong").await.unwrap();
        let mut pong = [0u8; 4];
        agent_peer.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        // The agent closes its side: the upstream sees end of input.
        agent_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        upstream_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        drop(upstream_peer);
        let relayed = tunnel.await.unwrap();
        assert_eq!(
            (relayed.from_agent, relayed.from_upstream),
            (6 + big.len() as u64, 4)
        );
        assert_eq!(relayed.error, None);
    }

    #[tokio::test]
    async fn after_the_agent_closes_a_download_goes_on_while_it_moves() {
        let (agent, mut agent_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        // The grace is a third of the time the download takes, fifty
        // times the gap between its pieces.
        let tunnel = tokio::spawn(relay(agent, upstream, Duration::from_millis(500), never()));
        agent_peer.shutdown().await.unwrap();
        let trickle = tokio::spawn(async move {
            for _ in 0..150 {
                upstream_peer.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut got = [0u8; 150];
        agent_peer.read_exact(&mut got).await.unwrap();
        trickle.await.unwrap();
        drop(agent_peer);
        let relayed = tunnel.await.unwrap();
        assert_eq!(relayed.from_upstream, 150);
    }

    #[tokio::test]
    async fn a_silent_upstream_cannot_hold_a_closed_tunnel() {
        let (agent, agent_peer) = tokio::io::duplex(1024);
        let (upstream, _upstream_peer_kept_open) = tokio::io::duplex(1024);
        drop(agent_peer);
        // Completes although the upstream never closes.
        let relayed = relay(agent, upstream, Duration::from_millis(50), never()).await;
        assert_eq!(relayed.from_agent, 0);
    }

    #[test]
    fn a_lender_lends_small_once_its_big_buffers_are_out_and_keeps_few() {
        let lender = lent::Lender::new(2, 1);
        let (a, b, c) = (lender.lend(), lender.lend(), lender.lend());
        assert_eq!(
            (a.len(), b.len(), c.len()),
            (1024 * 1024, 1024 * 1024, 64 * 1024)
        );
        assert_eq!(lender.lent(), 2);
        drop(c);
        assert_eq!(lender.lent(), 2);
        let a_at = a.as_ptr();
        drop(a);
        drop(b);
        assert_eq!(lender.lent(), 0);
        // The first back is kept and lent again; the second was freed.
        let again = lender.lend();
        assert_eq!(again.as_ptr(), a_at);
        assert_eq!(lender.lent(), 1);
    }

    #[tokio::test]
    async fn a_direction_holds_a_buffer_only_while_its_reader_is_behind() {
        static LENDER: lent::Lender = lent::Lender::new(4, 1);
        let (mut writer, from) = pair().await;
        let (to, mut reader) = pair().await;
        let count = std::sync::Arc::new(AtomicU64::new(0));
        let pumped = count.clone();
        let pump = tokio::spawn(async move { lent::pump(&LENDER, &from, &to, &pumped).await });

        writer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Nothing more to read: the buffer goes back.
        wait_until(|| LENDER.lent() == 0).await;

        // The reader stops reading: once both sockets are full the pump
        // waits to write with a buffer in hand.
        let feed = tokio::spawn(async move {
            let chunk = vec![1u8; 256 * 1024];
            for _ in 0..256 {
                writer.write_all(&chunk).await.unwrap();
            }
            writer
        });
        wait_until(|| LENDER.lent() == 1).await;
        let mut total = 0;
        let mut buf = vec![0u8; 256 * 1024];
        while total < 64 * 1024 * 1024 {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(buf[..n].iter().all(|b| *b == 1));
            total += n;
        }
        let writer = feed.await.unwrap();
        wait_until(|| LENDER.lent() == 0).await;
        assert_eq!(count.load(Ordering::Relaxed), 4 + 64 * 1024 * 1024);
        drop(writer);
        pump.await.unwrap().unwrap();
    }

    /// Poll for a state the pump reaches on its own within milliseconds;
    /// the bound only keeps a broken pump from hanging the suite.
    async fn wait_until(done: impl Fn() -> bool) {
        let polled = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), polled)
            .await
            .expect("the lender never got to the expected count");
    }
}
