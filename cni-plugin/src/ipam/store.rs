//! The reservation table of one network on disk: `<dataDir>/<network>/state.json`, guarded by
//! an exclusive `flock` on `<dataDir>/<network>/lock` across concurrent plugin processes, and
//! replaced by write-to-temp then rename, so that a process killed at any instant leaves either
//! the old or the new table, never a torn one.
//!
//! No fsync: measured by `bench/cni.sh`, an fsync per commit cost ~8 ms on this machine's disk,
//! more than the rest of an ADD. Durability across a power loss buys nothing here: every
//! attachment dies with the machine, and the runtime's GC after boot frees what the table still
//! holds (ext4 and XFS also flush a file replaced by rename before the rename commits).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::State;

/// How long an invocation waits for the lock before answering "try again" (code 11).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The filesystem refused an operation.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another invocation held the lock for longer than the wait allowed.
    #[error("lock {0} held by another invocation for too long")]
    Busy(PathBuf),
    /// The table does not decode (written by something else).
    #[error("reservation table {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The store of one network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The table, read under the lock; dropping it without [`Locked::commit`] changes nothing.
#[derive(Debug)]
pub struct Locked {
    _lock: Flock<File>,
    dir: PathBuf,
    /// The table as read.
    pub state: State,
}

impl Store {
    /// The store of `network` under `data_dir` (the network name is already validated to be a
    /// single path component).
    pub fn new(data_dir: &Path, network: &str) -> Store {
        Store {
            dir: data_dir.join(network),
        }
    }

    /// The directory holding the lock and the table.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the lock (waiting up to [`LOCK_TIMEOUT`]) and reads the table.
    pub fn lock(&self) -> Result<Locked, StoreError> {
        self.lock_within(LOCK_TIMEOUT)
    }

    /// Takes the lock, waiting up to `timeout`, and reads the table.
    pub fn lock_within(&self, timeout: Duration) -> Result<Locked, StoreError> {
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let lock_path = self.dir.join("lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Busy(lock_path));
                    }
                    // Holders keep the lock for well under a millisecond: poll fast at first.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                    file = f;
                }
                Err((_, errno)) => {
                    return Err(StoreError::Io {
                        what: "locking",
                        path: lock_path,
                        source: errno.into(),
                    });
                }
            }
        };
        let path = self.dir.join("state.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source })?,
            Err(e) if e.kind() == ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        Ok(Locked {
            _lock: lock,
            dir: self.dir.clone(),
            state,
        })
    }
}

impl Locked {
    /// Writes the table atomically and durably, then releases the lock.
    pub fn commit(self) -> Result<(), StoreError> {
        let tmp = self.dir.join("state.json.tmp");
        let path = self.dir.join("state.json");
        // State holds only strings and addresses: serialising it cannot fail.
        let bytes = serde_json::to_vec(&self.state).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&bytes).map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("renaming into", &path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Range, RangeSet};

    #[test]
    fn commit_persists_and_drop_discards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "net");
        let sets = [RangeSet::new(vec![
            Range::new("10.0.0.0/24".parse().unwrap(), None, None, None).unwrap(),
        ])
        .unwrap()];
        let mut l = store.lock().unwrap();
        l.state.allocate(&sets, "a", "eth0", &[]).unwrap();
        l.commit().unwrap();
        let mut l = store.lock().unwrap();
        assert_eq!(l.state.reservations.len(), 1);
        l.state.release("a", "eth0");
        drop(l);
        assert_eq!(store.lock().unwrap().state.reservations.len(), 1);
    }

    #[test]
    fn concurrent_threads_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let sets = [RangeSet::new(vec![
            Range::new("10.0.0.0/24".parse().unwrap(), None, None, None).unwrap(),
        ])
        .unwrap()];
        std::thread::scope(|s| {
            for t in 0..8 {
                let sets = &sets;
                let store = Store::new(dir.path(), "net");
                s.spawn(move || {
                    for i in 0..10 {
                        let mut l = store.lock().unwrap();
                        l.state
                            .allocate(sets, &format!("{t}-{i}"), "eth0", &[])
                            .unwrap();
                        l.commit().unwrap();
                    }
                });
            }
        });
        let st = Store::new(dir.path(), "net").lock().unwrap().state;
        let mut ips: Vec<_> = st.reservations.iter().map(|r| r.ips[0]).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 80);
    }

    #[test]
    fn a_lock_held_too_long_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "net");
        let held = store.lock().unwrap();
        let e = store.lock_within(Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, StoreError::Busy(_)), "{e}");
        drop(held);
        store.lock_within(Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn a_corrupt_table_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "net");
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.dir().join("state.json"), b"{nope").unwrap();
        let e = store.lock().unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
