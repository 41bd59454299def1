//! What the requests of one client connection share: built once per connection, so that a
//! keep-alive request pays for none of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::{Instant, Sleep};

use crate::Proxy;
use crate::upstream::Affinity;

use super::headers;

/// A client connection's context, shared by its requests (one `Arc` clone per request).
#[derive(Debug)]
pub(crate) struct Downstream {
    pub(crate) proxy: Proxy,
    pub(crate) listener: Arc<str>,
    pub(crate) client: SocketAddr,
    /// Whether the client connection is TLS (X-Forwarded-Proto).
    pub(crate) secure: bool,
    /// The upstream connection this connection's requests reuse.
    pub(crate) affinity: Affinity,
    /// X-Forwarded-For for a request that carries none: the client's address, formatted once.
    pub(crate) forwarded_for: HeaderValue,
    /// The request timer, kept between requests: resetting a registered tokio timer to a later
    /// deadline is one atomic store, where a new `timeout` per request registered and removed
    /// an entry of the timer wheel each time (callgrind: ~1,000 instructions per request).
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Downstream {
    pub(crate) fn new(proxy: Proxy, listener: Arc<str>, client: SocketAddr, secure: bool) -> Self {
        Self {
            proxy,
            listener,
            client,
            secure,
            affinity: Affinity::default(),
            forwarded_for: headers::ip_value(client.ip()),
            timer: Mutex::new(None),
        }
    }

    /// `future`'s output, or `None` if `limit` passed first. `future` is `Unpin` (boxed) so
    /// that the returned future stays a few words: request futures are moved whole.
    pub(crate) fn within<F: Future + Unpin>(&self, limit: Duration, future: F) -> Within<'_, F> {
        let deadline = Instant::now() + limit;
        // Taken, not borrowed: HTTP/2 requests of one connection run concurrently, and all but
        // one of them then make their own timer.
        let taken = self
            .timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let timer = match taken {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Within {
            future,
            timer: Some(timer),
            slot: &self.timer,
        }
    }
}

/// See [`Downstream::within`]; the timer goes back to its connection when this is dropped.
#[derive(Debug)]
pub(crate) struct Within<'a, F> {
    future: F,
    timer: Option<Pin<Box<Sleep>>>,
    slot: &'a Mutex<Option<Pin<Box<Sleep>>>>,
}

impl<F: Future + Unpin> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Some(output));
        }
        match &mut this.timer {
            Some(timer) => timer.as_mut().poll(cx).map(|()| None),
            // Only after `drop`.
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for Within<'_, F> {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = self.timer.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream() -> Downstream {
        let config: crate::config::Config = serde_yaml_ng::from_str("{}").unwrap();
        let proxy = Proxy::new(config).unwrap();
        Downstream::new(proxy, "l".into(), "10.0.0.1:5000".parse().unwrap(), false)
    }

    #[tokio::test(start_paused = true)]
    async fn timer_reused_and_still_fires() {
        let downstream = downstream();
        assert_eq!(downstream.forwarded_for, "10.0.0.1");
        for _ in 0..3 {
            let quick = downstream
                .within(Duration::from_secs(5), Box::pin(async { 7 }))
                .await;
            assert_eq!(quick, Some(7));
        }
        // A reused timer reset to a later deadline, whose first deadline has passed meanwhile.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let slow = downstream.within(
            Duration::from_secs(1),
            Box::pin(tokio::time::sleep(Duration::from_secs(3))),
        );
        assert_eq!(slow.await, None);
        let quick = downstream.within(
            Duration::from_secs(5),
            Box::pin(tokio::time::sleep(Duration::from_secs(4))),
        );
        assert_eq!(quick.await, Some(()));
        let slow = downstream.within(
            Duration::from_secs(2),
            Box::pin(std::future::pending::<()>()),
        );
        assert_eq!(slow.await, None);
    }
}
