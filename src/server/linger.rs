//! Lingering close for HTTP request bodies a handler did not read to the
//! end (what nginx calls `lingering_close`).
//!
//! A handler refuses a body over `--max-body` from its `Content-Length`
//! without reading it. If the body is then simply dropped, hyper closes the
//! connection with unread bytes in the socket: the kernel answers with a
//! reset, and a client still sending (Python's `urllib`, many others) sees a
//! broken pipe instead of the 413 that says what was wrong. So a body
//! dropped unfinished is read on in the background and thrown away, for at
//! most [`LINGER_BYTES`] and [`LINGER_TIME`], while the response goes out.
//! Nothing is kept: memory stays at one chunk, and a client that sends more
//! than that, or sends it slowly, is cut off as before.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Bytes read and discarded after a handler gave up on a body.
pub const LINGER_BYTES: u64 = 64 << 20;
/// How long a body given up on is read on.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// A request body that is drained in the background when dropped before
/// its end.
pub struct Lingering<B: Body<Data = Bytes> + Send + Unpin + 'static> {
    inner: Option<B>,
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Lingering<B> {
    pub fn new(inner: B) -> Self {
        Self { inner: Some(inner) }
    }
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Body for Lingering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let Some(b) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(b).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // read to its end: nothing left to drain when dropped
            self.inner = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // no runtime (a test dropping a body by hand): nothing to linger for
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(LINGER_TIME, drain(body, LINGER_BYTES)).await;
            });
        }
    }
}

/// Reads `body` and throws it away, up to `limit` bytes; the bytes read.
async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B, limit: u64) -> u64 {
    let mut read = 0u64;
    while read <= limit {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
            // the end, or the client went away
            Some(Err(_)) | None => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::{SinkExt, StreamExt};

    /// A body fed chunk by chunk through a channel.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_next_unpin(cx)
                .map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn a_body_dropped_unfinished_is_read_on_up_to_its_budget() {
        let (mut tx, rx) = mpsc::channel(1);
        drop(Lingering::new(Chunks(rx)));
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        let mut sent = 0u64;
        let stopped = loop {
            if sent > LINGER_BYTES + (8 << 20) {
                break false;
            }
            let send = tx.send(chunk.clone());
            match tokio::time::timeout(Duration::from_secs(10), send).await {
                Ok(Ok(())) => sent += chunk.len() as u64,
                // the drain reached its budget and let the body go
                Ok(Err(_)) => break true,
                Err(_) => panic!("the drain stopped reading after {sent} bytes"),
            }
        };
        assert!(stopped, "the drain read past its budget");
        assert!(sent >= LINGER_BYTES, "only {sent} bytes were drained");
    }

    #[tokio::test]
    async fn a_body_at_its_end_is_not_drained() {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        drop(tx);
        let mut body = Lingering::new(Chunks(rx));
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_none());
        assert!(
            body.inner.is_none(),
            "a body read to its end would be drained"
        );
    }
}
