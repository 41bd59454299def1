//! The revisioned, watchable object store.
//!
//! Every committed change bumps a global revision and stamps it on the object. Reads are served
//! from memory; durability comes from redb: a change is acknowledged only after its redb
//! transaction committed (fsync), so it survives a kill -9. Watchers read a bounded in-memory
//! history of events and are woken through a `tokio::sync::watch` of the latest revision, so a
//! writer never waits for a watcher; a watcher that falls behind the history gets
//! [`StoreError::TooOld`] and relists.

mod watch;

pub use watch::{Event, EventType, Watcher};

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::api::{Kind, Object, key};

const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// Default number of events kept for watchers to resume from.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Compare-and-swap failed: the object changed since the revision the caller read.
    #[error("{key} was changed at revision {actual}, not {expected}: read it again")]
    Conflict {
        /// The object.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The object's current revision.
        actual: u64,
    },
    /// A watch asked for history that was compacted away: list again and watch from there.
    #[error("revision {requested} is too old: history starts at {oldest}; list again")]
    TooOld {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still resumable.
        oldest: u64,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored object could not be decoded.
    #[error("stored object {key} is corrupt: {source}")]
    Corrupt {
        /// Its key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What `apply` did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// Its spec or labels changed.
    Configured,
    /// Nothing to do.
    Unchanged,
}

struct State {
    objects: BTreeMap<String, Arc<Object>>,
    revision: u64,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Revision of the first event that may be missing from `history`: a watch from below this
    /// must relist. Starts at the revision found on open (history is not persisted).
    compacted: u64,
}

struct Inner {
    db: redb::Database,
    state: RwLock<State>,
    /// Serialises writers; held across the redb commit, never by readers.
    writer: Mutex<()>,
    latest: tokio::sync::watch::Sender<u64>,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The changes one transaction stages, applied atomically by [`Store::transaction`].
pub struct Txn<'a> {
    state: &'a RwLock<State>,
    staged: BTreeMap<String, Option<Object>>,
}

impl Txn<'_> {
    /// The object as this transaction sees it (staged changes included).
    pub fn get(&self, key: &str) -> Option<Object> {
        if let Some(staged) = self.staged.get(key) {
            return staged.clone();
        }
        read(self.state).objects.get(key).map(|o| (**o).clone())
    }

    /// Every object of a kind as this transaction sees it, in key order.
    pub fn list(&self, kind: Kind) -> Vec<Object> {
        let prefix = format!("{}/", kind.plural());
        let mut out: BTreeMap<String, Object> = read(self.state)
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), (**v).clone()))
            .collect();
        for (k, v) in self
            .staged
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            match v {
                Some(o) => out.insert(k.clone(), o.clone()),
                None => out.remove(k),
            };
        }
        out.into_values().collect()
    }

    /// Creates or replaces an object.
    pub fn put(&mut self, obj: Object) {
        self.staged.insert(obj.key(), Some(obj));
    }

    /// Deletes an object if it exists.
    pub fn delete(&mut self, key: &str) {
        self.staged.insert(key.to_owned(), None);
    }
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    // A panic while holding the lock cannot leave State half-updated: updates happen in
    // `publish`, which only inserts finished values. So a poisoned lock is still consistent.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads every object.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_history(dir, DEFAULT_HISTORY)
    }

    /// Opens the store keeping `history` events for watchers.
    pub fn open_with_history(dir: &Path, history: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(redb::StorageError::Io(e).into()))?;
        let db = redb::Database::create(dir.join("berth.redb"))?;
        {
            // Tables exist from the first open on, so that reads never meet a missing table.
            let tx = db.begin_write()?;
            tx.open_table(OBJECTS)?;
            tx.open_table(META)?;
            tx.commit()?;
        }
        let mut objects = BTreeMap::new();
        let revision;
        {
            let tx = db.begin_read()?;
            let table = tx.open_table(OBJECTS)?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                let obj: Object =
                    serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                        key: k.value().to_owned(),
                        source,
                    })?;
                objects.insert(k.value().to_owned(), Arc::new(obj));
            }
            revision = tx
                .open_table(META)?
                .get(REVISION)?
                .map(|v| v.value())
                .unwrap_or(0);
        }
        let (latest, _) = tokio::sync::watch::channel(revision);
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                state: RwLock::new(State {
                    objects,
                    revision,
                    history: VecDeque::new(),
                    history_cap: history.max(1),
                    compacted: revision,
                }),
                writer: Mutex::new(()),
                latest,
            }),
        })
    }

    /// The revision of the last committed change.
    pub fn revision(&self) -> u64 {
        read(&self.inner.state).revision
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        read(&self.inner.state)
            .objects
            .get(&key(kind, namespace, name))
            .cloned()
    }

    /// Every object of a kind, in one namespace or all, with the revision they are current at.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> (Vec<Arc<Object>>, u64) {
        let prefix = match namespace {
            Some(ns) => format!("{}/{}/", kind.plural(), ns),
            None => format!("{}/", kind.plural()),
        };
        let state = read(&self.inner.state);
        let items = state
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, state.revision)
    }

    /// Every object of these kinds, read at one revision (under one lock), and that revision:
    /// a consistent starting point for a watch from it.
    pub fn snapshot(&self, kinds: &[Kind]) -> (Vec<Arc<Object>>, u64) {
        let state = read(&self.inner.state);
        let mut items = Vec::new();
        for kind in kinds {
            let prefix = format!("{}/", kind.plural());
            items.extend(
                state
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone()),
            );
        }
        (items, state.revision)
    }

    /// Runs `f` over a transaction and commits what it staged atomically: all of it is durable
    /// and visible, or none. `f` may abort with an error.
    pub fn transaction<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.transaction_with_revisions(f).map(|(r, _)| r)
    }

    /// [`Store::transaction`], also returning the revisions its writes got (`None` when it
    /// wrote nothing): a writer that also watches can tell its own events.
    pub fn transaction_with_revisions<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<(R, Option<std::ops::RangeInclusive<u64>>), StoreError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = Txn {
            state: &self.inner.state,
            staged: BTreeMap::new(),
        };
        let result = f(&mut txn)?;
        let staged = txn.staged;
        if staged.is_empty() {
            return Ok((result, None));
        }
        let (mut revision, current) = {
            let state = read(&self.inner.state);
            let current: BTreeMap<String, Option<Arc<Object>>> = staged
                .keys()
                .map(|k| (k.clone(), state.objects.get(k).cloned()))
                .collect();
            (state.revision, current)
        };
        let now = now_secs();
        let mut events = Vec::with_capacity(staged.len());
        let tx = self.inner.db.begin_write()?;
        {
            let mut table = tx.open_table(OBJECTS)?;
            for (k, change) in staged {
                let old = current.get(&k).cloned().flatten();
                match (change, old) {
                    (Some(mut obj), old) => {
                        revision += 1;
                        let m = obj.meta_mut();
                        m.revision = revision;
                        match &old {
                            Some(o) => {
                                m.created_revision = o.meta().created_revision;
                                m.created_at = o.meta().created_at;
                            }
                            None => {
                                m.created_revision = revision;
                                m.created_at = now;
                            }
                        }
                        let bytes =
                            serde_json::to_vec(&obj).map_err(|source| StoreError::Corrupt {
                                key: k.clone(),
                                source,
                            })?;
                        table.insert(k.as_str(), bytes.as_slice())?;
                        let kind = if old.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        };
                        events.push(Event::new(revision, kind, Arc::new(obj)));
                    }
                    (None, Some(old)) => {
                        revision += 1;
                        table.remove(k.as_str())?;
                        let mut obj = (*old).clone();
                        obj.meta_mut().revision = revision;
                        events.push(Event::new(revision, EventType::Deleted, Arc::new(obj)));
                    }
                    (None, None) => {}
                }
            }
            tx.open_table(META)?.insert(REVISION, revision)?;
        }
        tx.commit()?;
        let first = events.first().map(|e| e.revision);
        self.publish(revision, events);
        Ok((result, first.map(|first| first..=revision)))
    }

    /// Makes committed events visible to readers and watchers.
    fn publish(&self, revision: u64, events: Vec<Event>) {
        {
            let mut state = write(&self.inner.state);
            for e in events {
                let e = Arc::new(e);
                match e.kind {
                    EventType::Deleted => {
                        state.objects.remove(&e.object.key());
                    }
                    _ => {
                        state.objects.insert(e.object.key(), e.object.clone());
                    }
                }
                state.history.push_back(e);
            }
            while state.history.len() > state.history_cap {
                if let Some(old) = state.history.pop_front() {
                    state.compacted = old.revision;
                }
            }
            state.revision = revision;
        }
        self.inner.latest.send_replace(revision);
    }

    /// Creates or updates each declared object atomically: all or none. An update takes the new
    /// spec and labels and keeps the status; an object equal to the stored one is left alone.
    pub fn apply(&self, objects: Vec<Object>) -> Result<Vec<(Object, Outcome)>, StoreError> {
        self.transaction(|tx| {
            let mut out = Vec::with_capacity(objects.len());
            for obj in objects {
                match tx.get(&obj.key()) {
                    None => {
                        tx.put(obj.clone());
                        out.push((obj, Outcome::Created));
                    }
                    Some(cur) if cur.same_spec(&obj) => out.push((cur, Outcome::Unchanged)),
                    Some(mut cur) => {
                        cur.take_spec(obj);
                        tx.put(cur.clone());
                        out.push((cur, Outcome::Configured));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Creates an object that must not exist yet.
    #[cfg(test)]
    pub(crate) fn create(&self, obj: Object) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let k = obj.key();
            if tx.get(&k).is_some() {
                return Err(StoreError::AlreadyExists(k));
            }
            tx.put(obj);
            Ok(())
        })
    }

    /// Takes the declared part (spec, labels) of `obj`, keeping the status, if the stored object
    /// is still at revision `expected` (compare-and-swap); returns the object as stored.
    pub fn update(&self, obj: Object, expected: u64) -> Result<Object, StoreError> {
        self.transaction(|tx| {
            let k = obj.key();
            let mut cur = tx.get(&k).ok_or_else(|| StoreError::NotFound(k.clone()))?;
            let actual = cur.meta().revision;
            if actual != expected {
                return Err(StoreError::Conflict {
                    key: k,
                    expected,
                    actual,
                });
            }
            cur.take_spec(obj);
            tx.put(cur.clone());
            Ok(cur)
        })
    }

    /// Read-modify-write of one object; `f` returns whether it changed anything.
    pub fn modify(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Object) -> bool,
    ) -> Result<Object, StoreError> {
        self.transaction(|tx| {
            let k = key(kind, namespace, name);
            let mut obj = tx.get(&k).ok_or_else(|| StoreError::NotFound(k.clone()))?;
            if f(&mut obj) {
                tx.put(obj.clone());
            }
            Ok(obj)
        })
    }

    /// Deletes an object; returns it, or `None` if it did not exist.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        self.transaction(|tx| {
            let k = key(kind, namespace, name);
            let old = tx.get(&k);
            if old.is_some() {
                tx.delete(&k);
            }
            Ok(old)
        })
    }

    /// Watches every change after revision `from`.
    pub fn watch(&self, from: u64) -> Result<Watcher, StoreError> {
        let state = read(&self.inner.state);
        if from < state.compacted {
            return Err(StoreError::TooOld {
                requested: from,
                oldest: state.compacted,
            });
        }
        Ok(Watcher::new(
            self.clone(),
            from,
            self.inner.latest.subscribe(),
        ))
    }

    /// Events after `from`, or `TooOld` if some of them were dropped from the history.
    fn events_after(&self, from: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        let state = read(&self.inner.state);
        if from < state.compacted {
            return Err(StoreError::TooOld {
                requested: from,
                oldest: state.compacted,
            });
        }
        // History is sorted by revision: binary search for the first event after `from`.
        let start = state.history.partition_point(|e| e.revision <= from);
        Ok(state.history.range(start..).cloned().collect())
    }
}

#[cfg(test)]
mod tests;
