//! The timer hyper's HTTP/1 server bounds each request head with (`header_read_timeout`), one
//! per connection.
//!
//! hyper asks its timer for a new sleep for every request head and drops it when the head is
//! in: with hyper-util's `TokioTimer` each request allocated a tokio timer, put it in the
//! runtime's timer wheel and took it out again. Keep-alive requests ran ~4% faster
//! (`bench/proxy.sh` keepalive) with no head timeout at all. Here the sleeps of one connection
//! share one tokio timer, moved back when a sleep wants an earlier deadline and forward only
//! when it fires early (about once per timeout on a busy connection, which then wakes once for
//! nothing), so that a request head costs a clock read and a lock, not two trips through the
//! wheel. What hyper does on a timeout is unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// One connection's timer; give each connection its own (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectionTimer {
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(SharedSleep {
            deadline: deadline.into(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// tokio's clock, which tests can pause and advance.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A sleep until `deadline` on its connection's shared timer.
struct SharedSleep {
    deadline: tokio::time::Instant,
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

impl hyper::rt::Sleep for SharedSleep {}

impl Future for SharedSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let timer = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if timer.deadline() >= deadline => return Poll::Ready(()),
                // Fired for an earlier head's deadline: on to this one.
                Poll::Ready(()) => timer.as_mut().reset(deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::rt::Timer;

    use super::*;

    fn poll(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        sleep.as_mut().poll(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn each_sleep_ends_at_its_own_deadline() {
        let timer = ConnectionTimer::default();
        let second = Duration::from_secs(1);
        let mut first = timer.sleep(10 * second);
        assert!(poll(&mut first).is_pending());
        drop(first);

        // A later deadline (the next request head) on the same shared timer.
        tokio::time::advance(5 * second).await;
        let mut later = timer.sleep(10 * second);
        assert!(poll(&mut later).is_pending());
        tokio::time::advance(6 * second).await;
        assert!(
            poll(&mut later).is_pending(),
            "the first deadline is not this one's"
        );
        tokio::time::advance(4 * second).await;
        assert!(poll(&mut later).is_ready());

        // An earlier deadline than the timer's pulls it back.
        let mut long = timer.sleep(60 * second);
        assert!(poll(&mut long).is_pending());
        let mut short = timer.sleep(second);
        assert!(poll(&mut short).is_pending());
        tokio::time::advance(second).await;
        assert!(poll(&mut short).is_ready());
        assert!(poll(&mut long).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_sleep_is_woken_at_its_deadline() {
        let timer = ConnectionTimer::default();
        let started = tokio::time::Instant::now();
        drop(timer.sleep(Duration::from_secs(3)));
        let mut sleep = timer.sleep(Duration::from_secs(1));
        assert!(poll(&mut sleep).is_pending());
        drop(sleep);
        timer.sleep(Duration::from_secs(7)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }
}
