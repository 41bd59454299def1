//! The proxy handle: owns the live snapshot and swaps new ones in.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::config::{Config, Endpoint};
use crate::error::ConfigError;
use crate::server::{self, Limits};
use crate::snapshot::Snapshot;

/// A node's L7 proxy.
///
/// Cheap to clone (Arc inside); clones share the live snapshot.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers, so that `update_endpoints` never loses a concurrent `apply`'s
    /// snapshot and revisions count up by one. Readers never take it.
    writer: Mutex<()>,
    limits: Limits,
}

impl Proxy {
    /// Validates `config` and builds the first snapshot (revision 1).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let snapshot = Snapshot::build(&config, None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(()),
                limits: Limits::default(),
            }),
        })
    }

    /// Validate, build a new snapshot off the request path, swap atomically; on error the old
    /// one stays.
    ///
    /// Clusters that keep their name keep their balancer state and, if their connect timeout is
    /// unchanged, their pool of upstream connections.
    pub fn apply(&self, config: Config) -> Result<(), ConfigError> {
        self.swap(|current| Snapshot::build(&config, Some(current)))
    }

    /// Replace only one cluster's endpoints (everything else shared by Arc), swap atomically.
    ///
    /// Requests already sent to a removed endpoint finish; new ones go to the new set at once.
    pub fn update_endpoints(
        &self,
        cluster: &str,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), ConfigError> {
        self.swap(|current| current.with_endpoints(cluster, endpoints))
    }

    /// Number of snapshots swapped in so far (starts at 1).
    pub fn revision(&self) -> u64 {
        self.inner.snapshot.load().revision
    }

    /// Serve HTTP/1.1 (+h2c) on an already bound listener until `shutdown` completes, then stop
    /// accepting and let open connections finish their in-flight requests (graceful, bounded to
    /// a few seconds).
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve_http(self.clone(), listener, Box::pin(shutdown)).await
    }

    pub(crate) fn snapshots(&self) -> &ArcSwap<Snapshot> {
        &self.inner.snapshot
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn swap(
        &self,
        build: impl FnOnce(&Snapshot) -> Result<Snapshot, ConfigError>,
    ) -> Result<(), ConfigError> {
        // A panic while holding the lock cannot leave a half-swapped snapshot: the swap is one
        // atomic store, so a poisoned lock is safe to reuse.
        let _writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = build(&self.inner.snapshot.load())?;
        tracing::debug!(revision = next.revision, "swapping in a new snapshot");
        self.inner.snapshot.store(Arc::new(next));
        Ok(())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}
