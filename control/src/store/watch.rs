//! Watch streams over the store's history.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::api::Object;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the object as it was, with the deletion revision).
    Deleted,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the change.
    pub revision: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Arc<Object>,
    /// The event as a watch stream sends it, encoded once for every watcher.
    #[serde(skip)]
    encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl Event {
    /// A new event.
    pub fn new(revision: u64, kind: EventType, object: Arc<Object>) -> Self {
        Event {
            revision,
            kind,
            object,
            encoded: std::sync::OnceLock::new(),
        }
    }

    /// The wire form of this event: `encode` runs for the first watcher only, and every other
    /// watcher shares its bytes, so fan-out to many watchers costs one serialisation.
    pub fn encoded(&self, encode: impl FnOnce(&Event) -> bytes::Bytes) -> bytes::Bytes {
        self.encoded.get_or_init(|| encode(self)).clone()
    }
}

/// A stream of every change after a revision.
pub struct Watcher {
    store: Store,
    next_after: u64,
    latest: tokio::sync::watch::Receiver<u64>,
}

impl Watcher {
    pub(super) fn new(store: Store, from: u64, latest: tokio::sync::watch::Receiver<u64>) -> Self {
        Watcher {
            store,
            next_after: from,
            latest,
        }
    }

    /// The revision this watcher has delivered up to.
    pub fn revision(&self) -> u64 {
        self.next_after
    }

    /// Waits for the next changes and returns them in revision order. Fails with `TooOld` if
    /// the watcher fell behind the kept history.
    pub async fn next(&mut self) -> Result<Vec<Arc<Event>>, StoreError> {
        loop {
            // Mark the current value seen *before* reading history, so that a commit that lands
            // in between wakes us again rather than being missed.
            self.latest.borrow_and_update();
            let events = self.store.events_after(self.next_after)?;
            if let Some(last) = events.last() {
                self.next_after = last.revision;
                return Ok(events);
            }
            if self.latest.changed().await.is_err() {
                // The store is gone: no more events will come.
                std::future::pending::<()>().await;
            }
        }
    }
}
