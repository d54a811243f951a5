//! The audit writer thread: takes lines off the channel and writes them in
//! batches, and survives an output that stops taking them.
//!
//! A write that fails (a full disk, a pipe whose reader went away) keeps
//! its lines in memory and marks the output as failing; the thread keeps
//! draining the channel, so whoever emits a line never waits on a broken
//! output, and tries the held lines again every [`RETRY_EVERY`] until a
//! write goes through. A pipe whose reader left is opened again by name,
//! so a new reader picks the lines up where the old one stopped. Lines are
//! held up to [`HELD_MAX_BYTES`]; beyond that, new lines are dropped and
//! counted. Whoever reads [`Health`] decides what a failing output means
//! for requests (`audit.on_failure`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::telemetry;

/// How long the writer lets lines gather while lines keep coming. Under
/// load it sleeps and drains instead of waiting on the channel, so senders
/// find nobody parked and wake no one: no context switch per request, one
/// write per batch. Idle, it waits on the channel and the first line wakes
/// it.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// How often a failing output is tried again. Requests refused meanwhile
/// (`on_failure: refuse`) are served again at most this long after the
/// output recovers.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Lines held while the output fails: about 16,000 typical lines. Memory
/// is bounded; what does not fit is lost, and counted.
pub const HELD_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Whether the audit output is taking lines, shared by the writer (who
/// finds out) and the request path (who acts on it).
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
}

impl Health {
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// Where the lines go, and how to open it again.
pub struct Output {
    pub writer: Box<dyn Write + Send>,
    /// The file or pipe's path; `None` for standard output, which cannot
    /// be opened again.
    pub path: Option<PathBuf>,
    /// `audit.on_failure: forward`, for what the log says is happening.
    pub forwarding: bool,
}

struct Writer {
    output: Output,
    health: Arc<Health>,
    /// Bytes not written yet: whole lines, except that the first may have
    /// lost its head to a write that went through only in part.
    held: Vec<u8>,
    /// Whether `held` starts at the beginning of a line.
    at_line_start: bool,
    dropped_lines: u64,
}

pub fn run(rx: Receiver<Vec<u8>>, output: Output, health: Arc<Health>) {
    let mut writer = Writer {
        output,
        health,
        held: Vec::with_capacity(64 * 1024),
        at_line_start: true,
        dropped_lines: 0,
    };
    loop {
        // Wait for lines; while failing, only until the next retry.
        let first = if writer.held.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else if writer.health.failing() {
            rx.recv_timeout(RETRY_EVERY)
        } else {
            Err(RecvTimeoutError::Timeout)
        };
        match first {
            Ok(line) => writer.hold(line),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                writer.write();
                return;
            }
        }
        let mut open = writer.drain(&rx);
        writer.write();
        // Let the next batch gather while lines keep coming.
        while open && !writer.health.failing() {
            std::thread::sleep(BATCH_WINDOW);
            match rx.try_recv() {
                Ok(line) => writer.hold(line),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
            open &= writer.drain(&rx);
            writer.write();
        }
        if !open {
            return;
        }
    }
}

impl Writer {
    /// Everything waiting on the channel; false once it is closed.
    fn drain(&mut self, rx: &Receiver<Vec<u8>>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(line) => self.hold(line),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn hold(&mut self, line: Vec<u8>) {
        if self.held.len() + line.len() <= HELD_MAX_BYTES {
            self.held.extend_from_slice(&line);
            return;
        }
        if self.dropped_lines == 0 {
            tracing::error!(
                held_bytes = self.held.len(),
                "audit output still failing and the lines held for it are at their limit: audit lines are being lost"
            );
        }
        self.dropped_lines += 1;
        metrics::counter!(telemetry::AUDIT_LINES_DROPPED).increment(1);
    }

    /// Write what is held; on failure keep what did not go out.
    fn write(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let reopened = match self.write_held() {
            Ok(()) => return self.recovered(),
            Err(e) => self.failed(e),
        };
        // Opened again (a new reader on the pipe): try it at once.
        if reopened {
            match self.write_held() {
                Ok(()) => self.recovered(),
                Err(e) => {
                    self.failed(e);
                }
            }
        }
    }

    fn write_held(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.held.len() {
                break self.output.writer.flush();
            }
            match self.output.writer.write(&self.held[written..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if written > 0 {
            self.at_line_start = self.held[written - 1] == b'\n';
            self.held.drain(..written);
        }
        result
    }

    fn recovered(&mut self) {
        if self.health.failing() {
            tracing::warn!(
                lost_lines = self.dropped_lines,
                "audit output writable again; the lines held meanwhile are written"
            );
            self.health.failing.store(false, Ordering::Relaxed);
        }
        self.dropped_lines = 0;
    }

    /// Count and say it; true when the output was opened again.
    fn failed(&mut self, error: std::io::Error) -> bool {
        metrics::counter!(telemetry::AUDIT_WRITE_FAILURES).increment(1);
        if !self.health.failing() {
            self.health.failing.store(true, Ordering::Relaxed);
            if self.output.forwarding {
                tracing::error!(
                    %error,
                    "audit output failed to write: requests are forwarded without their audit lines being written (audit.on_failure: forward); audit lines are being lost unless it recovers (up to {HELD_MAX_BYTES} bytes of them are held for a retry)"
                );
            } else {
                tracing::error!(
                    %error,
                    "audit output failed to write: requests are refused until it recovers (audit.on_failure: refuse); up to {HELD_MAX_BYTES} bytes of lines are held for a retry"
                );
            }
        }
        // A reader that went away never comes back on this descriptor: a
        // new one opens the pipe by its name.
        error.kind() == std::io::ErrorKind::BrokenPipe && self.reopen()
    }

    fn reopen(&mut self) -> bool {
        let Some(path) = &self.output.path else {
            return false;
        };
        match open(path, false) {
            Ok(file) => {
                tracing::info!(path = %path.display(), "audit output opened again");
                self.output.writer = Box::new(file);
                // The old reader took the head of this line: the new one
                // must not get its tail as if it were a line.
                if !self.at_line_start {
                    let end = self.held.iter().position(|b| *b == b'\n');
                    self.held.drain(..end.map_or(self.held.len(), |e| e + 1));
                    self.at_line_start = true;
                    self.dropped_lines += 1;
                    metrics::counter!(telemetry::AUDIT_LINES_DROPPED).increment(1);
                }
                true
            }
            // No reader yet (ENXIO), or the path is gone: try next time.
            Err(e) => {
                tracing::debug!(error = %e, "audit output cannot be opened again yet");
                false
            }
        }
    }
}

/// Open the audit file (appending), or a named pipe. A pipe is opened
/// without waiting for a reader: without one, opening fails (ENXIO)
/// rather than blocking, and the open is tried again later. `create`: a
/// missing file is created (at start; never later, when a pipe that went
/// away must not become a regular file under its name).
pub fn open(path: &std::path::Path, create: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(create)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Writes block as usual (a slow reader slows the writer, it does not
    // lose lines); only the open had to not wait.
    // SAFETY: F_GETFL/F_SETFL on a descriptor this function owns.
    unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(file)
}
