//! Request body that can be taken back when the upstream connection was never made.
//!
//! A connect failure is always safe to retry, but by then the client has consumed the request.
//! The body therefore sits in a shared slot until it is first polled, which only happens once
//! a connection exists; [`Reclaim::take`] gets it back for a retry if that never happened.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The body of a request sent upstream.
#[derive(Debug)]
pub(crate) struct RequestBody {
    state: State,
    /// Copied from the incoming body before the first poll, so that the client frames the
    /// request (content-length, chunked, none) as the downstream did.
    end_stream: bool,
    size_hint: SizeHint,
}

#[derive(Debug)]
enum State {
    /// Nothing to send; nothing to reclaim.
    Empty,
    /// Not polled yet: still reclaimable.
    Parked(Arc<Mutex<Option<Incoming>>>),
    /// Polled at least once: no longer reclaimable.
    Streaming(Incoming),
}

/// The other handle on a parked body.
#[derive(Debug)]
pub(crate) struct Reclaim {
    slot: Option<Arc<Mutex<Option<Incoming>>>>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl RequestBody {
    /// Parks `incoming` and returns the body to send and the handle to take it back with.
    pub(crate) fn park(incoming: Incoming) -> (Self, Reclaim) {
        let end_stream = incoming.is_end_stream();
        let size_hint = incoming.size_hint();
        let slot = (!end_stream).then(|| Arc::new(Mutex::new(Some(incoming))));
        let reclaim = Reclaim {
            slot: slot.clone(),
            end_stream,
            size_hint,
        };
        let state = slot.map_or(State::Empty, State::Parked);
        (
            Self {
                state,
                end_stream,
                size_hint,
            },
            reclaim,
        )
    }
}

impl RequestBody {
    /// A body with nothing to send.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Self {
            state: State::Empty,
            end_stream: true,
            size_hint: SizeHint::with_exact(0),
        }
    }
}

impl Reclaim {
    /// The body again, if it was never polled; the returned body parks it anew.
    pub(crate) fn take(&self) -> Option<RequestBody> {
        let state = match &self.slot {
            None => State::Empty,
            Some(slot) => {
                if slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none()
                {
                    return None;
                }
                State::Parked(slot.clone())
            }
        };
        Some(RequestBody {
            state,
            end_stream: self.end_stream,
            size_hint: self.size_hint,
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let State::Parked(slot) = &this.state {
            let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            this.state = match taken {
                Some(incoming) => State::Streaming(incoming),
                // Reclaimed for a retry while this request was still being polled: cannot
                // happen (a retry starts after this request is dropped); end the body.
                None => State::Empty,
            };
        }
        match &mut this.state {
            State::Streaming(incoming) => Pin::new(incoming).poll_frame(cx),
            State::Empty | State::Parked(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Streaming(incoming) => incoming.is_end_stream(),
            State::Empty => true,
            State::Parked(_) => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Streaming(incoming) => incoming.size_hint(),
            State::Empty => SizeHint::with_exact(0),
            State::Parked(_) => self.size_hint,
        }
    }
}
