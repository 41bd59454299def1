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
use crate::snapshot::ClusterEntry;
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
    writer: Mutex<Written>,
    metrics: Metrics,
}

/// The config the live snapshot was built from.
struct Written {
    config: Arc<Config>,
    /// Endpoint updates since `config`, by cluster, folded in when the config is read: copying
    /// a config of a thousand clusters for each update would cost more than the update itself.
    endpoints: ahash::AHashMap<String, Vec<Endpoint>>,
}

impl Written {
    /// The config with every pending endpoint update folded in.
    fn current(&mut self) -> Arc<Config> {
        if !self.endpoints.is_empty() {
            let mut config = (*self.config).clone();
            for c in &mut config.clusters {
                if let Some(endpoints) = self.endpoints.remove(&c.name) {
                    c.endpoints = endpoints;
                }
            }
            self.endpoints.clear();
            self.config = Arc::new(config);
        }
        self.config.clone()
    }
}

impl Proxy {
    /// Validates `config` and builds the first snapshot (revision 1).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let snapshot = Snapshot::build(&config, None)?;
        let proxy = Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(Written {
                    config: Arc::new(config),
                    endpoints: ahash::AHashMap::new(),
                }),
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
        let mut written = self.writer();
        let next = Snapshot::build(&config, Some(&self.inner.snapshot.load()))?;
        let prev = self.install(next);
        drain_removed(prev.clusters(), self.inner.snapshot.load().clusters());
        written.config = Arc::new(config);
        written.endpoints.clear();
        Ok(())
    }

    /// Replace only one cluster's endpoints (everything else shared by Arc), swap atomically.
    ///
    /// Requests already sent to a removed endpoint finish; new ones go to the new set at once.
    pub fn update_endpoints(
        &self,
        cluster: &str,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), ConfigError> {
        let mut written = self.writer();
        let current = self.inner.snapshot.load();
        let next = current.with_endpoints(cluster, endpoints.clone())?;
        let prev = self.install(next);
        // Only this cluster changed: only its endpoints can have gone.
        if let (Some(before), Some(after)) = (
            prev.cluster(cluster),
            self.inner.snapshot.load().cluster(cluster),
        ) {
            drain_removed(std::slice::from_ref(before), std::slice::from_ref(after));
        }
        written.endpoints.insert(cluster.to_owned(), endpoints);
        Ok(())
    }

    /// The configuration the live snapshot was built from (endpoint updates included).
    pub fn config(&self) -> Arc<Config> {
        self.writer().current()
    }

    /// The writer's lock. A panic while holding it cannot leave a half-swapped snapshot (the
    /// swap is one atomic store), so a poisoned lock is safe to reuse.
    fn writer(&self) -> std::sync::MutexGuard<'_, Written> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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

    /// Swaps `next` in (the writer's lock held); returns the snapshot it replaced.
    fn install(&self, next: Snapshot) -> Arc<Snapshot> {
        tracing::debug!(revision = next.revision, "swapping in a new snapshot");
        self.inner.snapshot.swap(Arc::new(next))
    }
}

/// Starts the drain timeout of every endpoint `prev` had and `next` lacks: new requests
/// already avoid them; responses still streaming get the cluster's drain timeout.
fn drain_removed(prev: &[Arc<ClusterEntry>], next: &[Arc<ClusterEntry>]) {
    let kept: ahash::AHashSet<*const crate::balance::EndpointLoad> = next
        .iter()
        .flat_map(|c| c.endpoints.iter().map(|e| Arc::as_ptr(&e.load)))
        .collect();
    for cluster in prev {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(clusters: &[&str]) -> Config {
        let clusters: Vec<serde_json::Value> = clusters
            .iter()
            .map(|n| serde_json::json!({"name": n}))
            .collect();
        serde_json::from_value(serde_json::json!({ "clusters": clusters })).unwrap()
    }

    fn endpoints(cluster: &Config, name: &str) -> Vec<Endpoint> {
        let c = cluster.clusters.iter().find(|c| c.name == name).unwrap();
        c.endpoints.clone()
    }

    /// Endpoint updates are folded into the config lazily; what `config()` shows is always what
    /// is served, and an `apply` replaces updates not yet folded in.
    #[test]
    fn the_config_shows_every_endpoint_update_and_apply_replaces_them() {
        let proxy = Proxy::new(config(&["a", "b"])).unwrap();
        let one = vec![Endpoint::new("127.0.0.1:1".parse().unwrap())];
        let two = vec![Endpoint::new("127.0.0.1:2".parse().unwrap())];
        proxy.update_endpoints("a", one.clone()).unwrap();
        proxy.update_endpoints("b", two.clone()).unwrap();
        proxy.update_endpoints("a", two.clone()).unwrap();
        let c = proxy.config();
        assert_eq!(endpoints(&c, "a"), two);
        assert_eq!(endpoints(&c, "b"), two);
        // Folded once: the same config until the next change.
        assert!(Arc::ptr_eq(&c, &proxy.config()));
        assert!(proxy.update_endpoints("nope", one.clone()).is_err());
        proxy.update_endpoints("b", one.clone()).unwrap();
        proxy.apply(config(&["a", "b", "c"])).unwrap();
        let c = proxy.config();
        assert_eq!(c.clusters.len(), 3);
        assert!(endpoints(&c, "b").is_empty(), "the applied config wins");
        assert_eq!(proxy.revision(), 6);
    }
}
