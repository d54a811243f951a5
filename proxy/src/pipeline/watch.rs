//! Watch: the clock on an agent connection. hyper's own header timeout
//! also runs while a keep-alive connection sits idle, so one number would
//! have to serve both; tollgate keeps two. [`Watched`] wraps the agent's
//! socket and knows, from the bytes it reads and from the requests under
//! way ([`Activity`]), which phase the connection is in:
//!
//! - idle (no request under way, nothing read): closed quietly after
//!   `limits.idle_timeout` (a new connection gets the header timeout);
//! - reading a head (bytes read, no request started yet): `408` and
//!   closed after `limits.header_read_timeout` from its first byte, so a
//!   client trickling a head (slowloris) cannot hold the connection;
//! - busy (a request under way, its response not yet delivered): no clock
//!   here; the decision, upstream and body timeouts cover it.
//!
//! It also reads each HTTP/1 head for framing hyper's parser accepts or
//! tidies away ([`Suspect`]), which [`check_head`](super::limits::check_head)
//! then refuses.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Written, best effort, to a client whose head did not arrive in time;
/// the close ends its body.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\n\r\n{\"error\":\"request_timeout\",\"message\":\"the request head did not arrive in time\"}\n";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What the requests on one connection are doing, shared by its socket's
/// [`Watched`] and its service.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests started whose responses are not yet delivered.
    active: AtomicUsize,
    /// What was suspect about the head read since the last request
    /// started ([`Suspect`] as a number; 0: nothing).
    suspect: AtomicU8,
    /// The connection was handed over (a tunnel, a WebSocket): its bytes
    /// are no longer requests, and the watch stops.
    handed_over: AtomicBool,
    /// The socket's reader, waiting while requests are under way: woken
    /// when the last ends, so the idle clock starts then.
    reader: std::sync::Mutex<Option<Waker>>,
}

impl Activity {
    /// A request has started; it ends when the guard is dropped (with its
    /// response body: see [`Tracked`]).
    pub fn start(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// What was suspect about the framing of the head of the request
    /// just started.
    pub fn take_suspect(&self) -> Option<Suspect> {
        Suspect::from_u8(self.suspect.swap(0, Ordering::Relaxed))
    }

    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }
}

/// A request under way.
#[derive(Debug)]
pub struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let reader = self
                .0
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(reader) = reader {
                reader.wake();
            }
        }
    }
}

/// A response body that keeps its request under way until it is
/// delivered (or dropped).
pub struct Tracked<B> {
    inner: B,
    _active: Active,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, active: Active) -> Tracked<B> {
        Tracked {
            inner,
            _active: active,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy,
}

/// The two clocks.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub header_read: Duration,
    pub idle: Duration,
}

/// An agent's socket, on the clock.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
    clocks: Clocks,
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    /// `None` until the first bytes tell (HTTP/2 begins with its preface).
    http2: Option<bool>,
    head: HeadScan,
    peer: SocketAddr,
}

impl<IO> Watched<IO> {
    /// `http2`: known from ALPN; `None`: told by the first bytes.
    pub fn new(
        io: IO,
        activity: Arc<Activity>,
        clocks: Clocks,
        http2: Option<bool>,
        peer: SocketAddr,
    ) -> Watched<IO> {
        Watched {
            io,
            activity,
            // A new connection has the header timeout to begin its request.
            timer: Box::pin(tokio::time::sleep(clocks.header_read)),
            clocks,
            phase: Phase::Idle,
            http2,
            head: HeadScan::default(),
            peer,
        }
    }

    /// The socket, for a connection handed over whole.
    pub fn into_inner(self) -> IO {
        self.io
    }

    fn restart(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }

    /// Bytes were read.
    fn saw(&mut self, bytes: &[u8]) {
        let http2 = *self.http2.get_or_insert_with(|| {
            let n = bytes.len().min(H2_PREFACE.len());
            bytes[..n] == H2_PREFACE[..n]
        });
        // HTTP/2 frames (pings, settings) are not requests: only the idle
        // clock applies.
        if http2 || self.activity.busy() {
            return;
        }
        if self.phase != Phase::Head {
            self.phase = Phase::Head;
            self.head = HeadScan::default();
            self.restart(self.clocks.header_read);
        }
        if let Some(suspect) = self.head.feed(bytes) {
            self.activity
                .suspect
                .store(suspect as u8, Ordering::Relaxed);
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Watched<IO> {
    /// Nothing to read now: is a clock running out?
    fn poll_clock(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.busy() {
            self.phase = Phase::Busy;
            *self
                .activity
                .reader
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The last request may have ended meanwhile, before the waker
            // was there to be woken.
            if self.activity.busy() {
                return Poll::Pending;
            }
        }
        if self.phase == Phase::Busy {
            self.phase = Phase::Idle;
            self.restart(self.clocks.idle);
        }
        ready!(self.timer.as_mut().poll(cx));
        if self.phase == Phase::Head && self.http2 != Some(true) {
            tracing::info!(peer = %self.peer, timeout = ?self.clocks.header_read, "request head not received in time; 408 and closed");
            // Best effort: a client that stopped reading gets the close.
            let _ = Pin::new(&mut self.io).poll_write(cx, REQUEST_TIMEOUT);
            let _ = Pin::new(&mut self.io).poll_flush(cx);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time",
            )));
        }
        if self.http2.is_none() {
            tracing::info!(peer = %self.peer, timeout = ?self.clocks.header_read, "agent connection sent nothing in time; closed");
        } else {
            tracing::debug!(peer = %self.peer, "idle agent connection closed");
        }
        // An end of stream: hyper closes the connection quietly.
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.handed_over.load(Ordering::Relaxed) {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.saw(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_clock(cx),
            failed => failed,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Reads one HTTP/1 head, across reads, up to its blank line, for what
/// hyper's parser takes in its stride or tidies away before tollgate sees
/// the request: bare LF line endings, a `Content-Length` beside a
/// `Transfer-Encoding` (hyper drops the length), repeated equal lengths
/// (hyper keeps one).
#[derive(Debug)]
struct HeadScan {
    previous: u8,
    /// The bytes since the last LF were all CRs (or none).
    line_empty: bool,
    /// A line has ended (the blank line before it does not end the head).
    started: bool,
    done: bool,
    /// The current line's first bytes, lower-cased: enough to name the
    /// two framing fields.
    name: [u8; NAME_PREFIX],
    name_len: usize,
    lengths: u8,
    codings: u8,
    bare_lf: bool,
}

const NAME_PREFIX: usize = b"transfer-encoding:".len();

/// What a head's framing was found to be, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    BareLf = 1,
    LengthAndCoding = 2,
    RepeatedLength = 3,
}

impl Suspect {
    fn from_u8(value: u8) -> Option<Suspect> {
        match value {
            1 => Some(Suspect::BareLf),
            2 => Some(Suspect::LengthAndCoding),
            3 => Some(Suspect::RepeatedLength),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Suspect::BareLf => "a line of the request head ends in a bare LF, not CRLF",
            Suspect::LengthAndCoding => "both Content-Length and Transfer-Encoding",
            Suspect::RepeatedLength => "more than one Content-Length",
        }
    }
}

impl Default for HeadScan {
    fn default() -> HeadScan {
        HeadScan {
            previous: 0,
            line_empty: true,
            started: false,
            done: false,
            name: [0; NAME_PREFIX],
            name_len: 0,
            lengths: 0,
            codings: 0,
            bare_lf: false,
        }
    }
}

impl HeadScan {
    /// Read more of the head; once it has ended, what is suspect about it.
    fn feed(&mut self, bytes: &[u8]) -> Option<Suspect> {
        for &b in bytes {
            if self.done {
                break;
            }
            match b {
                b'\n' => {
                    self.bare_lf |= self.previous != b'\r';
                    self.end_line();
                }
                b'\r' => {}
                _ => {
                    self.line_empty = false;
                    if self.name_len < NAME_PREFIX {
                        self.name[self.name_len] = b.to_ascii_lowercase();
                        self.name_len += 1;
                    }
                }
            }
            self.previous = b;
        }
        if !self.done {
            return None;
        }
        if self.bare_lf {
            Some(Suspect::BareLf)
        } else if self.lengths > 0 && self.codings > 0 {
            Some(Suspect::LengthAndCoding)
        } else if self.lengths > 1 {
            Some(Suspect::RepeatedLength)
        } else {
            None
        }
    }

    fn end_line(&mut self) {
        // RFC 9112 §2.2: empty lines before a request line are ignored;
        // the blank line after a head ends it.
        if self.line_empty && self.started {
            self.done = true;
        }
        let name = &self.name[..self.name_len];
        if name.starts_with(b"content-length:") {
            self.lengths = self.lengths.saturating_add(1);
        } else if name == b"transfer-encoding:" {
            self.codings = self.codings.saturating_add(1);
        }
        self.started |= !self.line_empty;
        self.line_empty = true;
        self.name_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Option<Suspect> {
        let mut scan = HeadScan::default();
        chunks.iter().find_map(|c| scan.feed(c))
    }

    #[test]
    fn heads_are_read_across_reads_for_suspect_framing() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), None);
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r", b"\nHost: a\r\n\r", b"\n"]),
            None
        );
        let bare = Some(Suspect::BareLf);
        assert_eq!(scan(&[b"GET / HTTP/1.1\nHost: a\r\n\r\n"]), bare);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\n\n"]), bare);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nX: a\r\n", b"\n"]), bare);
        // Leading empty lines are ignored, a body after the head is not read.
        assert_eq!(scan(&[b"\r\nGET / HTTP/1.1\r\n\r\nbody\nwith\nlf"]), None);
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-",
                b"encoding: chunked\r\n\r\n"
            ]),
            Some(Suspect::LengthAndCoding)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\ncontent-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n"]),
            Some(Suspect::RepeatedLength)
        );
        assert_eq!(
            scan(&[
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nX-Transfer-Encoding: chunked\r\n\r\n"
            ]),
            None
        );
    }
}
