//! The proxy handle: owns the live snapshot and swaps new ones in.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::config::{Config, Endpoint};
use crate::error::ConfigError;
use crate::metrics::Metrics;
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
    writer: Mutex<Arc<Config>>,
    metrics: Metrics,
}

impl Proxy {
    /// Validates `config` and builds the first snapshot (revision 1).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let snapshot = Snapshot::build(&config, None)?;
        let proxy = Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(Arc::new(config)),
                metrics: Metrics::new(),
            }),
        };
        // Active health checks need a runtime; a proxy built outside one (a config check)
        // serves nothing, so it needs none.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(crate::checker::run(proxy.downgrade()));
        }
        Ok(proxy)
    }

    /// Validate, build a new snapshot off the request path, swap atomically; on error the old
    /// one stays.
    ///
    /// Clusters that keep their name keep their balancer state and, if their connect timeout is
    /// unchanged, their pool of upstream connections.
    pub fn apply(&self, config: Config) -> Result<(), ConfigError> {
        self.swap(|current, _| {
            let next = Snapshot::build(&config, Some(current))?;
            Ok((next, config))
        })
    }

    /// Replace only one cluster's endpoints (everything else shared by Arc), swap atomically.
    ///
    /// Requests already sent to a removed endpoint finish; new ones go to the new set at once.
    pub fn update_endpoints(
        &self,
        cluster: &str,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), ConfigError> {
        self.swap(|current, config| {
            let next = current.with_endpoints(cluster, endpoints.clone())?;
            let mut config = config.clone();
            if let Some(c) = config.clusters.iter_mut().find(|c| c.name == cluster) {
                c.endpoints = endpoints;
            }
            Ok((next, config))
        })
    }

    /// The configuration the live snapshot was built from (endpoint updates included).
    pub fn config(&self) -> Arc<Config> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        server::serve_http(
            self.clone(),
            listener,
            Arc::from("http"),
            None,
            Box::pin(shutdown),
        )
        .await
    }

    /// Like [`Self::serve_http`], terminating TLS first: certificates by SNI from the live
    /// config, ALPN h2 and http/1.1. Fails at once if `tls` is unusable (bad client CA).
    pub async fn serve_https(
        &self,
        listener: TcpListener,
        tls: &crate::config::ListenerTls,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = crate::tls::server_config(self.downgrade(), "https", tls)
            .map_err(std::io::Error::other)?;
        server::serve_http(
            self.clone(),
            listener,
            Arc::from("https"),
            Some(config),
            Box::pin(shutdown),
        )
        .await
    }

    pub(crate) fn downgrade(&self) -> WeakProxy {
        WeakProxy(Arc::downgrade(&self.inner))
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn snapshots(&self) -> &ArcSwap<Snapshot> {
        &self.inner.snapshot
    }

    /// The limits of the live config, for a listener being started.
    pub(crate) fn limits(&self) -> Limits {
        Limits::from(&self.config().limits)
    }

    fn swap(
        &self,
        build: impl FnOnce(&Snapshot, &Config) -> Result<(Snapshot, Config), ConfigError>,
    ) -> Result<(), ConfigError> {
        // A panic while holding the lock cannot leave a half-swapped snapshot: the swap is one
        // atomic store, so a poisoned lock is safe to reuse.
        let mut config = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (next, next_config) = build(&self.inner.snapshot.load(), &config)?;
        tracing::debug!(revision = next.revision, "swapping in a new snapshot");
        let prev = self.inner.snapshot.swap(Arc::new(next));
        drain_removed(&prev, &self.inner.snapshot.load());
        *config = Arc::new(next_config);
        Ok(())
    }
}

/// Starts the drain timeout of every endpoint `prev` had and `next` lacks: new requests
/// already avoid them; responses still streaming get the cluster's drain timeout.
fn drain_removed(prev: &Snapshot, next: &Snapshot) {
    let kept: ahash::AHashSet<*const crate::balance::EndpointLoad> = next
        .clusters()
        .iter()
        .flat_map(|c| c.endpoints.iter().map(|e| Arc::as_ptr(&e.load)))
        .collect();
    for cluster in prev.clusters() {
        for endpoint in cluster.endpoints.iter() {
            if !kept.contains(&Arc::as_ptr(&endpoint.load)) {
                tracing::debug!(cluster = &*cluster.name, endpoint = %endpoint.address, "draining removed endpoint");
                endpoint.load.cut_after(cluster.drain_timeout);
            }
        }
    }
}

/// A handle that does not keep the proxy alive; background tasks hold one so that they end
/// when the last [`Proxy`] is dropped.
pub(crate) struct WeakProxy(std::sync::Weak<Inner>);

impl fmt::Debug for WeakProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakProxy")
    }
}

impl WeakProxy {
    /// A handle that never upgrades, for validating listener settings before any proxy.
    pub(crate) fn dangling() -> Self {
        Self(std::sync::Weak::new())
    }

    pub(crate) fn upgrade(&self) -> Option<Proxy> {
        self.0.upgrade().map(|inner| Proxy { inner })
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}
