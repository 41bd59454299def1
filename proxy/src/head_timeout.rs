//! 408 for clients too slow to send a request head, as HAProxy's `timeout http-request`.
//!
//! hyper bounds the time to read an HTTP/1 head (`header_read_timeout`) but then just drops
//! the connection, and its protocol detection (HTTP/1 or h2 prior knowledge) waits for the
//! first bytes with no bound at all. [`Watched`] wraps a client connection to close both gaps:
//! it fails the first read if nothing arrives within the timeout, notes whether bytes of an
//! unanswered head were read, and when the connection ends on a head timeout it hands the
//! socket back so that [`answer`] can write the 408. A connection idle between keep-alive
//! requests is closed without an answer (a client may be sending its next request at that
//! very moment; a 408 would race it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

/// The answer, complete: the connection closes after it.
const RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 16\r\n\
connection: close\r\n\
\r\n\
request timeout\n";

/// Time allowed to write the 408 to a client that may not be reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the first read failed: nothing arrived within the head timeout.
#[derive(Debug, thiserror::Error)]
#[error("no request within the header read timeout")]
struct FirstByteTimeout;

/// A client connection watched for head timeouts.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    io: Option<S>,
    /// Bytes read from `io` before it was wrapped (to tell the protocol), read again first.
    first: Bytes,
    /// Armed until the first byte arrives.
    first_byte: Option<Pin<Box<Sleep>>>,
    /// Bytes were read and no response byte written since: a head is under way.
    partial: bool,
    /// Nothing was ever read.
    fresh: bool,
    /// The first-byte deadline passed: on a new connection, hyper's HTTP/1 server takes the
    /// failed read for a client closing an idle connection and ends without an error.
    expired: bool,
    reclaim: Option<oneshot::Sender<(S, bool)>>,
}

/// Gets the socket back from a [`Watched`] connection when a 408 is due.
#[derive(Debug)]
pub(crate) struct Reclaim<S>(oneshot::Receiver<(S, bool)>);

/// Wraps `io`; the first read fails after `timeout` without a byte.
pub(crate) fn watch<S>(io: S, timeout: Duration) -> (Watched<S>, Reclaim<S>) {
    let (send, receive) = oneshot::channel();
    let watched = Watched {
        io: Some(io),
        first: Bytes::new(),
        first_byte: Some(Box::pin(tokio::time::sleep(timeout))),
        partial: false,
        fresh: true,
        expired: false,
        reclaim: Some(send),
    };
    (watched, Reclaim(receive))
}

/// Wraps `io` whose `first` bytes were read from it already; they are read again first. No
/// first-byte timer.
pub(crate) fn watch_arrived<S>(io: S, first: Bytes) -> (Watched<S>, Reclaim<S>) {
    let (send, receive) = oneshot::channel();
    let watched = Watched {
        io: Some(io),
        first,
        first_byte: None,
        partial: false,
        fresh: false,
        expired: false,
        reclaim: Some(send),
    };
    (watched, Reclaim(receive))
}

/// Whether a connection's error says a request head did not arrive in time.
pub(crate) fn is_head_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_timeout()
        {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<FirstByteTimeout>())
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Writes the 408 if the connection ended on a head timeout while a head was under way (or
/// none had started on a new connection), then closes it. Call it after the connection
/// future has completed and been dropped.
pub(crate) async fn answer<S: AsyncWrite + Unpin>(timed_out: bool, reclaim: Reclaim<S>) -> bool {
    let Reclaim(mut receive) = reclaim;
    // Sent on drop only when a 408 is due.
    let Ok((io, expired)) = receive.try_recv() else {
        return false;
    };
    if !(timed_out || expired) {
        return false;
    }
    answer_now(io).await
}

/// Writes the 408 and closes: for a new connection that sent nothing in time.
pub(crate) async fn answer_now<S: AsyncWrite + Unpin>(mut io: S) -> bool {
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        io.write_all(RESPONSE).await?;
        io.shutdown().await
    })
    .await;
    matches!(written, Ok(Ok(())))
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if (self.partial || self.fresh)
            && let (Some(io), Some(reclaim)) = (self.io.take(), self.reclaim.take())
        {
            // No receiver: nobody wants a 408 any more; the socket just closes.
            let _ = reclaim.send((io, self.expired));
        }
    }
}

impl<S> Watched<S> {
    fn io(&mut self) -> io::Result<&mut S> {
        // Taken only in drop.
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::other("connection already closed"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.first.is_empty() {
            let n = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..n]);
            this.first.advance(n);
            this.fresh = false;
            this.partial = true;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(this.io()?).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.first_byte = None;
                this.fresh = false;
                this.partial = true;
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.first_byte
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    this.first_byte = None;
                    this.expired = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        FirstByteTimeout,
                    )));
                }
            }
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(this.io()?).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.partial = false;
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(this.io()?).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.partial = false;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            // hyper closes the connection it thinks the client left; the 408 comes first
            // ([`answer`] shuts the connection down after it).
            return Poll::Ready(Ok(()));
        }
        Pin::new(this.io()?).poll_shutdown(cx)
    }
}
