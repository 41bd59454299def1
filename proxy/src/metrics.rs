//! Prometheus metrics, served in text format by the admin listener.
//!
//! The request path touches a few atomics and one read-locked map lookup per request; label
//! values are `Arc<str>` clones of names the snapshot already holds, so recording allocates
//! only the first time a (cluster, status) pair is seen.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::snapshot::{ClusterEntry, Snapshot};

/// A name shared with the snapshot, usable as a label value without copying.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Name(pub(crate) Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    cluster: Name,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    cluster: Name,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    cluster: Name,
    endpoint: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one proxy.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ClusterLabels>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections: Family<ListenerLabels, Counter>,
    revision: Gauge,
    endpoint_in_flight: Family<EndpointLabels, Gauge>,
    endpoint_requests: Family<EndpointLabels, Gauge>,
    endpoint_failures: Family<EndpointLabels, Gauge>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    endpoint_ejections: Family<EndpointLabels, Gauge>,
    overflow: Family<OverflowLabels, Counter>,
    breaker_remaining: Family<OverflowLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by cluster (empty when unrouted) and status code",
            requests.clone(),
        );
        let duration: HistogramFamily<ClusterLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by cluster",
            duration.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Downstream connections open, by listener",
            connections_open.clone(),
        );
        let connections = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections",
            "Downstream connections accepted, by listener",
            connections.clone(),
        );
        let revision = Gauge::default();
        registry.register(
            "config_revision",
            "Revision of the snapshot serving requests",
            revision.clone(),
        );
        let endpoint_in_flight = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_in_flight",
            "Requests or TCP connections in flight, by endpoint",
            endpoint_in_flight.clone(),
        );
        let endpoint_requests = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_requests",
            "Requests or TCP connections sent, by endpoint (a counter kept across config updates)",
            endpoint_requests.clone(),
        );
        let endpoint_failures = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_failures",
            "Upstream failures (connect, reset, timeout), by endpoint",
            endpoint_failures.clone(),
        );
        let endpoint_healthy = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_healthy",
            "1 if new requests may go to the endpoint (not ejected, not down), else 0",
            endpoint_healthy.clone(),
        );
        let endpoint_ejections = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_ejections",
            "Outlier ejections of the endpoint so far",
            endpoint_ejections.clone(),
        );
        let overflow = Family::<OverflowLabels, Counter>::default();
        registry.register(
            "cluster_overflow",
            "Requests refused by a cluster's circuit breakers, by cluster and limit \
             (connections, pending, requests)",
            overflow.clone(),
        );
        let breaker_remaining = Family::<OverflowLabels, Gauge>::default();
        registry.register(
            "cluster_breaker_remaining",
            "Room left under each circuit-breaker limit, by cluster and limit (clusters with \
             circuit breakers only)",
            breaker_remaining.clone(),
        );
        Self {
            overflow,
            breaker_remaining,
            registry,
            endpoint_healthy,
            endpoint_ejections,
            requests,
            duration,
            connections_open,
            connections,
            revision,
            endpoint_in_flight,
            endpoint_requests,
            endpoint_failures,
        }
    }

    /// Records one answered request. For a cluster, the histogram and the 200 counter are
    /// resolved once per cluster entry, so the common case touches no map.
    pub(crate) fn request(&self, cluster: Option<&ClusterEntry>, code: u16, elapsed: Duration) {
        let Some(entry) = cluster else {
            self.request_slow(None, code, elapsed);
            return;
        };
        let cached = entry.metrics.get_or_init(|| {
            let cluster = Name(entry.name.clone());
            ClusterMetrics {
                duration: self
                    .duration
                    .get_or_create(&ClusterLabels {
                        cluster: cluster.clone(),
                    })
                    .clone(),
                ok: self
                    .requests
                    .get_or_create(&RequestLabels { cluster, code: 200 })
                    .clone(),
            }
        });
        if code == 200 {
            cached.duration.observe(elapsed.as_secs_f64());
            cached.ok.inc();
        } else {
            self.request_slow(Some(&entry.name), code, elapsed);
        }
    }

    fn request_slow(&self, cluster: Option<&Arc<str>>, code: u16, elapsed: Duration) {
        let cluster = Name(cluster.cloned().unwrap_or_else(|| Arc::from("")));
        self.duration
            .get_or_create(&ClusterLabels {
                cluster: cluster.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels { cluster, code })
            .inc();
    }

    /// Counts a request refused by `cluster`'s circuit breaker (rare: a map lookup is fine).
    pub(crate) fn overflow(&self, cluster: &Arc<str>, kind: crate::breaker::OverflowKind) {
        self.overflow
            .get_or_create(&OverflowLabels {
                cluster: Name(cluster.clone()),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// A listener's connection metrics, resolved once when it starts.
    pub(crate) fn listener(&self, listener: &Arc<str>) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: Name(listener.clone()),
        };
        ListenerMetrics {
            accepted: self.connections.get_or_create(&labels).clone(),
            open: self.connections_open.get_or_create(&labels).clone(),
        }
    }

    /// The text exposition, with the per-endpoint gauges refreshed from `snapshot`.
    pub(crate) fn encode(&self, snapshot: &Snapshot) -> String {
        self.revision
            .set(i64::try_from(snapshot.revision).unwrap_or(i64::MAX));
        self.endpoint_in_flight.clear();
        self.endpoint_requests.clear();
        self.endpoint_failures.clear();
        self.endpoint_healthy.clear();
        self.endpoint_ejections.clear();
        self.breaker_remaining.clear();
        let now = crate::health::now_ms();
        for cluster in snapshot.clusters() {
            let remaining = cluster.breakers.remaining(cluster.lb_state.active());
            for (kind, left) in remaining.into_iter().flatten() {
                self.breaker_remaining
                    .get_or_create(&OverflowLabels {
                        cluster: Name(cluster.name.clone()),
                        kind: kind.as_str(),
                    })
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
            }
            for endpoint in cluster.endpoints.iter() {
                let labels = EndpointLabels {
                    cluster: Name(cluster.name.clone()),
                    endpoint: endpoint.address.to_string(),
                };
                let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                self.endpoint_in_flight
                    .get_or_create(&labels)
                    .set(gauge(endpoint.load.in_flight()));
                self.endpoint_requests
                    .get_or_create(&labels)
                    .set(gauge(endpoint.load.total()));
                self.endpoint_failures
                    .get_or_create(&labels)
                    .set(gauge(endpoint.load.failures()));
                self.endpoint_healthy
                    .get_or_create(&labels)
                    .set(i64::from(endpoint.load.health.is_healthy(now)));
                self.endpoint_ejections
                    .get_or_create(&labels)
                    .set(i64::from(endpoint.load.health.ejections()));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A cluster's hot metrics, resolved once per cluster entry.
#[derive(Debug)]
pub(crate) struct ClusterMetrics {
    duration: Histogram,
    ok: Counter,
}

/// Connection counters of one listener.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    accepted: Counter,
    open: Gauge,
}

impl ListenerMetrics {
    /// Counts a downstream connection open until the returned guard drops.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.accepted.inc();
        self.open.inc();
        ConnectionGuard(self.open.clone())
    }
}

/// One open downstream connection.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
