//! Blind tunnels: bytes both ways between the agent and an upstream the
//! policy allowed by host:port, counted for the audit line.
//!
//! When one side closes, the other gets `half_close` to finish. Without
//! that bound, an upstream that never answers a half-close (HTTP/2 servers
//! commonly wait for the client) would hold the tunnel, and its upstream
//! connection, for ever after the agent has gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes moved each way and how the tunnel ended.
#[derive(Debug, Default)]
pub struct Spliced {
    pub from_agent: u64,
    pub from_upstream: u64,
    pub error: Option<String>,
}

async fn pump<R, W>(mut from: R, mut to: W, count: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on, so the peer sees end of input.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Run both directions; once one ends, the other gets `half_close` to
/// finish. The error that ended the tunnel, if one did.
async fn both_ways(
    up: impl std::future::Future<Output = std::io::Result<()>>,
    down: impl std::future::Future<Output = std::io::Result<()>>,
    half_close: Duration,
) -> Option<String> {
    tokio::pin!(up, down);
    let (first, second) = tokio::select! {
        r = &mut up => (r, tokio::time::timeout(half_close, &mut down).await),
        r = &mut down => (r, tokio::time::timeout(half_close, &mut up).await),
    };
    match (first, second) {
        (Err(e), _) | (_, Ok(Err(e))) => Some(format!("tunnel ended: {e}")),
        _ => None,
    }
}

pub async fn splice<A, U>(agent: A, upstream: U, half_close: Duration) -> Spliced
where
    A: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (agent_read, agent_write) = tokio::io::split(agent);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (from_agent, from_upstream) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(agent_read, upstream_write, &from_agent);
    let down = pump(upstream_read, agent_write, &from_upstream);
    let error = both_ways(up, down, half_close).await;
    Spliced {
        from_agent: from_agent.load(Ordering::Relaxed),
        from_upstream: from_upstream.load(Ordering::Relaxed),
        error,
    }
}

/// Splice an upgraded CONNECT to `upstream`: in the kernel when the agent's
/// side is a plain TCP socket (the explicit proxy listener), else through
/// user space.
pub async fn splice_upgraded(
    upgraded: hyper::upgrade::Upgraded,
    upstream: tokio::net::TcpStream,
    half_close: Duration,
) -> Spliced {
    use hyper_util::rt::TokioIo;
    #[cfg(target_os = "linux")]
    let upgraded = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => {
            return splice_tcp(parts.io.into_inner(), parts.read_buf, upstream, half_close).await
        }
        Err(upgraded) => upgraded,
    };
    splice(TokioIo::new(upgraded), upstream, half_close).await
}

/// The same between two TCP sockets, without copying through user space:
/// splice(2) moves bytes socket → pipe → socket inside the kernel. A blind
/// tunnel is pure byte moving, so this is most of its cost. `early` holds
/// bytes the agent sent that the HTTP layer had already read.
#[cfg(target_os = "linux")]
pub async fn splice_tcp(
    agent: tokio::net::TcpStream,
    early: bytes::Bytes,
    mut upstream: tokio::net::TcpStream,
    half_close: Duration,
) -> Spliced {
    let (from_agent, from_upstream) = (AtomicU64::new(early.len() as u64), AtomicU64::new(0));
    if !early.is_empty() {
        if let Err(e) = upstream.write_all(&early).await {
            return Spliced {
                from_agent: 0,
                from_upstream: 0,
                error: Some(format!("tunnel ended: {e}")),
            };
        }
    }
    let up = kernel::pump(&agent, &upstream, &from_agent);
    let down = kernel::pump(&upstream, &agent, &from_upstream);
    let error = both_ways(up, down, half_close).await;
    Spliced {
        from_agent: from_agent.load(Ordering::Relaxed),
        from_upstream: from_upstream.load(Ordering::Relaxed),
        error,
    }
}

#[cfg(target_os = "linux")]
mod kernel {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    const CHUNK: usize = 1024 * 1024;

    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here only.
        let pipe = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A bigger pipe moves more per system call; the default (64 KiB)
        // is kept if the system refuses.
        // SAFETY: F_SETPIPE_SZ on a pipe we own.
        unsafe { libc::fcntl(pipe.1.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Ok(pipe)
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain descriptors, no offsets, no user memory involved.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// `from` → `to` until `from` ends, then pass the half-close on.
    pub async fn pump(from: &TcpStream, to: &TcpStream, count: &AtomicU64) -> io::Result<()> {
        let (pipe_out, pipe_in) = pipe()?;
        loop {
            // The socket's readiness is cleared only on EAGAIN, so tokio
            // wakes again when more arrives.
            let n = loop {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    splice(from.as_raw_fd(), pipe_in.as_raw_fd(), CHUNK)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // SAFETY: shutting down the write side of a socket we hold.
                unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
                return Ok(());
            }
            let mut left = n;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe_out.as_raw_fd(), to.as_raw_fd(), left)
                }) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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

    #[tokio::test]
    async fn bytes_flow_both_ways_and_are_counted() {
        let (agent, mut agent_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let tunnel = tokio::spawn(splice(agent, upstream, Duration::from_secs(5)));
        agent_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_peer.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        agent_peer.read_exact(&mut got).await.unwrap();
        drop(agent_peer);
        drop(upstream_peer);
        let spliced = tunnel.await.unwrap();
        assert_eq!((spliced.from_agent, spliced.from_upstream), (5, 2));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn kernel_splice_moves_early_bytes_then_both_ways_and_passes_half_close_on() {
        use tokio::net::{TcpListener, TcpStream};
        async fn pair() -> (TcpStream, TcpStream) {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            (c, l.accept().await.unwrap().0)
        }
        let (mut agent_peer, agent) = pair().await;
        let (upstream, mut upstream_peer) = pair().await;
        let tunnel = tokio::spawn(splice_tcp(
            agent,
            bytes::Bytes::from_static(b"early "),
            upstream,
            Duration::from_secs(5),
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
        let spliced = tunnel.await.unwrap();
        assert_eq!(
            (spliced.from_agent, spliced.from_upstream),
            (6 + big.len() as u64, 4)
        );
        assert_eq!(spliced.error, None);
    }

    #[tokio::test]
    async fn a_silent_upstream_cannot_hold_a_closed_tunnel() {
        let (agent, agent_peer) = tokio::io::duplex(1024);
        let (upstream, _upstream_peer_kept_open) = tokio::io::duplex(1024);
        drop(agent_peer);
        // Completes although the upstream never closes.
        let spliced = splice(agent, upstream, Duration::from_millis(50)).await;
        assert_eq!(spliced.from_agent, 0);
    }
}
