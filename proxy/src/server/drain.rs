//! Graceful shutdown of a listener's connections, for any kind of hyper connection.
//!
//! hyper-util's `GracefulShutdown` only watches the connection types it knows, and hyper's
//! own HTTP/1 connection with upgrades is not among them; this does the same for any
//! connection that has a `graceful_shutdown`.

use std::future::Future;

use tokio::sync::watch;

/// Tells a listener's connections to finish, then waits for them.
#[derive(Debug)]
pub(crate) struct Drain {
    signal: watch::Sender<()>,
}

/// A connection's end of a [`Drain`]; dropped when the connection ends.
pub(crate) type Watcher = watch::Receiver<()>;

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            signal: watch::channel(()).0,
        }
    }

    pub(crate) fn watcher(&self) -> Watcher {
        self.signal.subscribe()
    }

    /// Connections still open.
    pub(crate) fn count(&self) -> usize {
        self.signal.receiver_count()
    }

    /// Asks every connection to finish (in-flight requests complete, idle connections close)
    /// and waits until all have ended.
    pub(crate) async fn shutdown(self) {
        // No receivers: nothing to drain.
        let _ = self.signal.send(());
        self.signal.closed().await;
    }
}

/// Runs `connection` to its end; when the drain starts (or its [`Drain`] is dropped), calls
/// `graceful` once and keeps running it until it finishes. `connection` is `Unpin` (boxed by
/// the caller where it was made) so that this future stays small.
pub(crate) async fn serve<C: Future + Unpin>(
    mut connection: C,
    mut watcher: Watcher,
    graceful: impl FnOnce(&mut C),
) -> C::Output {
    tokio::select! {
        biased;
        output = &mut connection => return output,
        _ = watcher.changed() => {}
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

    use super::*;

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
    async fn a_connection_that_ends_is_not_asked() {
        let drain = Drain::new();
        let output = serve(Box::pin(async { 5 }), drain.watcher(), |_| panic!("asked")).await;
        assert_eq!(output, 5);
        assert_eq!(drain.count(), 0);
        drain.shutdown().await;
    }
}
