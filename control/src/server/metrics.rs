//! The API server's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) method: String,
    pub(crate) code: u16,
}

/// What the API server counts.
pub(crate) struct ApiMetrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Histogram,
    pub(crate) watches: Gauge,
    pub(crate) revision: Gauge<u64, AtomicU64>,
    vips_allocated: Gauge<u64, AtomicU64>,
    vips_free: Gauge<f64, AtomicU64>,
    subnets_allocated: Gauge<u64, AtomicU64>,
    subnets_free: Gauge<f64, AtomicU64>,
}

impl ApiMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_api");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.1 ms to ~3 s.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let watches = Gauge::default();
        let revision = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "requests",
            "API requests served, by method and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head (watch streams: to their first byte)",
            latency.clone(),
        );
        registry.register("watch_streams", "Watch streams open", watches.clone());
        registry.register(
            "store_revision",
            "Revision of the last committed change",
            revision.clone(),
        );
        let vips_allocated = Gauge::<u64, AtomicU64>::default();
        let vips_free = Gauge::<f64, AtomicU64>::default();
        let subnets_allocated = Gauge::<u64, AtomicU64>::default();
        let subnets_free = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "service_vips_allocated",
            "Services holding a VIP of the service range (--service-cidr)",
            vips_allocated.clone(),
        );
        registry.register(
            "service_vips_free",
            "VIPs of the service range left to give",
            vips_free.clone(),
        );
        registry.register(
            "node_subnets_allocated",
            "Node-sized subnets of the cluster CIDR (--cluster-cidr) that nodes hold",
            subnets_allocated.clone(),
        );
        registry.register(
            "node_subnets_free",
            "Node-sized subnets of the cluster CIDR left to give",
            subnets_free.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            latency,
            watches,
            revision,
            vips_allocated,
            vips_free,
            subnets_allocated,
            subnets_free,
        }
    }

    /// Sets the address-plan gauges.
    pub(crate) fn set_usage(&self, u: crate::controller::network::Usage) {
        self.vips_allocated.set(u.vips_allocated);
        self.vips_free.set(u.vips_free);
        self.subnets_allocated.set(u.subnets_allocated);
        self.subnets_free.set(u.subnets_free);
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out.push_str(&crate::controller::metrics_text());
        prometheus_client::encoding::text::encode_eof(&mut out).ok();
        out
    }
}
