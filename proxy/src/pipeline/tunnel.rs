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
    tokio::pin!(up, down);
    let (first, second) = tokio::select! {
        r = &mut up => (r, tokio::time::timeout(half_close, &mut down).await),
        r = &mut down => (r, tokio::time::timeout(half_close, &mut up).await),
    };
    let error = match (first, second) {
        (Err(e), _) | (_, Ok(Err(e))) => Some(format!("tunnel ended: {e}")),
        _ => None,
    };
    Spliced {
        from_agent: from_agent.load(Ordering::Relaxed),
        from_upstream: from_upstream.load(Ordering::Relaxed),
        error,
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
