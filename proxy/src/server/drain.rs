//! Graceful shutdown of a listener's connections, for any kind of hyper connection.
//!
//! hyper-util's `GracefulShutdown` only watches the connection types it knows, and hyper's
//! own HTTP/1 connection with upgrades is not among them; this does the same for any
//! connection that has a `graceful_shutdown`.
//!
//! A connection's task checks one flag each time it runs and is woken through a `Notify` it
//! registered with once. (A `tokio::sync::watch` receiver's `changed()`, polled at every
//! wake-up, cost ~500 instructions per keep-alive request and per new connection, callgrind.)

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use tokio::sync::Notify;

/// Tells a listener's connections to finish, then waits for them. Dropped without
/// [`Drain::shutdown`], it still tells them.
#[derive(Debug)]
pub(crate) struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    draining: AtomicBool,
    /// Wakes the connections when the drain starts.
    started: Notify,
    /// Connections open: their [`Watcher`]s.
    open: AtomicUsize,
    /// Woken when the last connection of a drain ends.
    ended: Notify,
}

impl Shared {
    fn start(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.started.notify_waiters();
        }
    }
}

/// A connection's end of a [`Drain`], counted open until dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    shared: Arc<Shared>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1
            && self.shared.draining.load(Ordering::Acquire)
        {
            self.shared.ended.notify_waiters();
        }
    }
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::default(),
        }
    }

    pub(crate) fn watcher(&self) -> Watcher {
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        Watcher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Connections still open.
    pub(crate) fn count(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Asks every connection to finish (in-flight requests complete, idle connections close)
    /// and waits until all have ended.
    pub(crate) async fn shutdown(self) {
        self.shared.start();
        loop {
            let mut ended = pin!(self.shared.ended.notified());
            // Registered before the count is read: a last connection that ends in between
            // still wakes this.
            ended.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.shared.start();
    }
}

/// Runs `connection` to its end; when the drain starts (or its [`Drain`] is dropped), calls
/// `graceful` once and keeps running it until it finishes. `connection` is `Unpin` (boxed by
/// the caller where it was made) so that this future stays small.
pub(crate) async fn serve<C: Future + Unpin>(
    mut connection: C,
    watcher: Watcher,
    graceful: impl FnOnce(&mut C),
) -> C::Output {
    let shared = Arc::clone(&watcher.shared);
    let mut started = pin!(shared.started.notified());
    let mut registered = false;
    let first = std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = std::pin::Pin::new(&mut connection).poll(cx) {
            return Poll::Ready(Some(output));
        }
        if !registered {
            // Polled once, so that the task's waker is kept: a drain from now on wakes it.
            // The task's waker stays the same, so it is not polled again; the flag, read
            // after this registration, covers a drain that started before it.
            registered = true;
            if started.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        if shared.draining.load(Ordering::Acquire) {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await;
    if let Some(output) = first {
        return output;
    }
    graceful(&mut connection);
    let output = connection.await;
    // Counted open until here.
    drop(watcher);
    output
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// A connection that a graceful shutdown can replace.
    type Connection = std::pin::Pin<Box<dyn Future<Output = Option<()>> + Send>>;

    #[tokio::test]
    async fn shutdown_asks_then_waits() {
        let drain = Drain::new();
        let asked = Arc::new(AtomicBool::new(false));
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let asked = asked.clone();
            let watcher = drain.watcher();
            async move { serve(finished, watcher, |_| asked.store(true, Ordering::SeqCst)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(drain.count(), 1);
        let shutdown = tokio::spawn(drain.shutdown());
        while !asked.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert!(!shutdown.is_finished(), "waits for the connection");
        finish.send(()).unwrap();
        task.await.unwrap().unwrap();
        shutdown.await.unwrap();
    }

    #[tokio::test]
    async fn a_drain_that_started_before_the_first_poll_is_seen() {
        let drain = Drain::new();
        let watcher = drain.watcher();
        let shutdown = tokio::spawn(drain.shutdown());
        tokio::task::yield_now().await;
        // Never ends by itself: only the drain can end it.
        let (_finish, finished) = tokio::sync::oneshot::channel::<()>();
        let mut asked = false;
        let connection: Connection = Box::pin(async move { finished.await.ok() });
        let served = serve(connection, watcher, |c| {
            asked = true;
            // What a graceful shutdown does to an idle connection: it ends.
            *c = Box::pin(async { None });
        });
        let output = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the drain was missed");
        assert!(asked && output.is_none());
        shutdown.await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_drain_asks_its_connections() {
        let drain = Drain::new();
        let watcher = drain.watcher();
        let asked = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let asked = asked.clone();
            async move {
                let (_finish, finished) = tokio::sync::oneshot::channel::<()>();
                let connection: Connection = Box::pin(async move { finished.await.ok() });
                serve(connection, watcher, |c| {
                    asked.store(true, Ordering::SeqCst);
                    *c = Box::pin(async { None });
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        drop(drain);
        assert_eq!(task.await.unwrap(), None);
        assert!(asked.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_connection_that_ends_is_not_asked() {
        let drain = Drain::new();
        let output = serve(Box::pin(async { 5 }), drain.watcher(), |_| panic!("asked")).await;
        assert_eq!(output, 5);
        assert_eq!(drain.count(), 0);
        drain.shutdown().await;
    }
}
