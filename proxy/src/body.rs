//! Body types shared by the listener, the pipeline and the error answers.
//! Bodies stream frame by frame; nothing here buffers a whole body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// Counts the data bytes that pass through a body, for the audit line;
/// with a cap, ends it with an error once more than `limit` bytes passed
/// (and says so in `over`), so a request body is cut off at its limit
/// rather than sent whole.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    cap: Option<(u64, Arc<AtomicBool>)>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            count,
            cap: None,
        }
    }

    pub fn capped(mut self, limit: u64, over: Arc<AtomicBool>) -> Self {
        self.cap = Some((limit, over));
        self
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                let total = self.count.fetch_add(len, Ordering::Relaxed) + len;
                if let Some((limit, over)) = &self.cap {
                    if total > *limit {
                        over.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(OverLimit))));
                    }
                }
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs a callback once, when the body ends, fails, or is dropped unfinished
/// (the client went away). The audit line is written from here so it can
/// carry the byte counts.
pub struct OnFinish<B: Body, F: FnOnce(Finish)> {
    inner: B,
    on_finish: Option<F>,
}

/// How a body stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Complete,
    /// The body's source failed (an upstream reset it), with its error.
    Failed(String),
    Abandoned,
}

impl<B: Body, F: FnOnce(Finish)> OnFinish<B, F> {
    pub fn new(inner: B, on_finish: F) -> Self {
        OnFinish {
            inner,
            on_finish: Some(on_finish),
        }
    }

    fn finish(&mut self, how: Finish) {
        if let Some(f) = self.on_finish.take() {
            f(how);
        }
    }
}

impl<B: Body, F: FnOnce(Finish)> Drop for OnFinish<B, F> {
    fn drop(&mut self) {
        self.finish_if_ended();
        self.finish(Finish::Abandoned);
    }
}

impl<B: Body, F: FnOnce(Finish)> OnFinish<B, F> {
    /// Servers stop polling once a body reports its end, so the end is
    /// seen here as often as in `poll_frame`.
    fn finish_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            self.finish(Finish::Complete);
        }
    }
}

impl<B, F> Body for OnFinish<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: AsRef<dyn std::error::Error + Send + Sync>,
    F: FnOnce(Finish) + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(Finish::Complete),
            Poll::Ready(Some(Err(e))) => {
                let message = error_chain(e.as_ref());
                self.finish(Finish::Failed(message))
            }
            Poll::Ready(Some(Ok(_))) => self.finish_if_ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the body is over its size limit")]
pub struct OverLimit;

/// An error and its causes, `: `-joined: hyper's own message alone says
/// only which step failed, its source what happened (a reset, say).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
