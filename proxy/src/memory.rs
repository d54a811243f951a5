//! Giving memory back after a burst of agent connections.
//!
//! glibc's allocator keeps what closed connections freed for later
//! allocations instead of returning it to the system. Measured on
//! `tollgate run` after 10,000 idle keep-alive connections had opened and
//! closed: 220 MB resident, of which 2 MB in use and 231 MB free inside the
//! heap (`mallinfo2`); `malloc_trim(0)` brought it to 21 MB. In a pod with a
//! memory limit that is memory the node never gets back, and repeated
//! bursts fragment the heap further (it levelled off near 240 MB after
//! four). So when many connections have closed since the last peak, a
//! blocking thread trims the heap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static OPEN: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Fewer closed connections than this are not worth a trim: 1,000 idle
/// connections hold about 15 MB.
const TRIM_AFTER_CLOSED: usize = 1_000;
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One open agent connection, counted for `tollgate_open_connections` and
/// for the trim, while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> OpenConnection {
        metrics::gauge!(crate::telemetry::OPEN_CONNECTIONS).increment(1.0);
        let open = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK.fetch_max(open, Ordering::Relaxed);
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::OPEN_CONNECTIONS).decrement(1.0);
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At least `TRIM_AFTER_CLOSED` and at least half of the peak have closed:
/// a burst ended. A steady number of connections coming and going does
/// not trim.
fn burst_ended(peak: usize, open: usize) -> bool {
    let closed = peak.saturating_sub(open);
    closed >= TRIM_AFTER_CLOSED && open <= peak / 2
}

/// Runs for the life of the process.
pub async fn return_freed_memory() {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (peak, open) = (PEAK.load(Ordering::Relaxed), OPEN.load(Ordering::Relaxed));
        if !burst_ended(peak, open) {
            continue;
        }
        PEAK.store(open, Ordering::Relaxed);
        let started = Instant::now();
        if tokio::task::spawn_blocking(trim).await.is_ok() {
            tracing::debug!(peak, open, took = ?started.elapsed(), "returned freed heap memory");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free pages; it takes the allocator's
    // own locks and leaves every live allocation where it is.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, for one) return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_that_ended_is_trimmed_steady_traffic_is_not() {
        assert!(burst_ended(10_000, 0));
        assert!(burst_ended(10_000, 5_000));
        // Half closed, but too few to matter.
        assert!(!burst_ended(900, 0));
        // Many closed, but most are still open: steady churn.
        assert!(!burst_ended(20_000, 18_000));
        assert!(!burst_ended(0, 0));
    }
}
