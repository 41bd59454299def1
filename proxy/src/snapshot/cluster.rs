//! A built cluster: its endpoints, balancer and connection pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashSet;
use http::uri::Authority;

use crate::balance::{Balancer, EndpointLoad, LbState, Weighted};
use crate::breaker::Breakers;
use crate::config::{
    Cluster, Endpoint, HashPolicy, HealthCheck, LbPolicy, OutlierDetection, RetryPolicy,
    UpstreamProtocol, UpstreamTls,
};
use crate::connector::PooledClient;
use crate::error::ConfigError;
use crate::health::now_ms;
use crate::sticky::{EndpointId, StickyIndex, StickyKey};
use crate::upstream::{self, Upstream};

/// A cluster as one snapshot sees it.
#[derive(Debug)]
pub(crate) struct ClusterEntry {
    pub(crate) name: Arc<str>,
    pub(crate) endpoints: Box<[EndpointEntry]>,
    pub(crate) balancer: Balancer,
    /// Outlives swaps: carried over while the cluster keeps its name.
    pub(crate) lb_state: Arc<LbState>,
    /// Outlives swaps while the cluster keeps its name and connect timeout.
    pub(crate) upstream: Upstream,
    /// Where hashing policies take a request's key from.
    pub(crate) hash_policy: HashPolicy,
    /// Time allowed from sending a request to its response head; `None`: unbounded.
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) retries: RetryPolicy,
    pub(crate) upstream_protocol: UpstreamProtocol,
    /// How long responses from a removed endpoint may keep streaming.
    pub(crate) drain_timeout: Duration,
    pub(crate) outlier_detection: Option<OutlierDetection>,
    pub(crate) health_check: Option<HealthCheck>,
    /// Hot-path metrics of this entry, resolved at its first request.
    pub(crate) metrics: std::sync::OnceLock<crate::metrics::ClusterMetrics>,
    /// Cookie affinity: the key, and the endpoints by cookie id.
    pub(crate) sticky: Option<(Arc<StickyKey>, StickyIndex)>,
    pub(crate) policy: LbPolicy,
    pub(crate) connect_timeout: Duration,
    /// Circuit-breaker limits and counters; outlive swaps while the cluster keeps its name.
    pub(crate) breakers: Arc<Breakers>,
    /// The pool of clusters with TLS or circuit breakers (hyper-util's, over berth's
    /// connector); `None` for plain clusters, which use `upstream`. Outlives swaps while the
    /// settings it was built with are unchanged.
    pub(crate) pooled: Option<PooledClient>,
    /// TLS towards the endpoints, for requests (inside `pooled`) and health checks.
    pub(crate) upstream_tls: Option<crate::connector::UpstreamTls>,
    /// What `pooled` was built from, to decide whether a new config can keep it.
    pooled_settings: Option<PooledSettings>,
}

#[derive(Debug, PartialEq)]
struct PooledSettings {
    connect_timeout: Duration,
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
}

/// An endpoint with its request authority computed once, off the request path.
#[derive(Debug)]
pub(crate) struct EndpointEntry {
    pub(crate) address: SocketAddr,
    pub(crate) authority: Authority,
    pub(crate) weight: u32,
    /// Outlives swaps while the cluster lists the address.
    pub(crate) load: Arc<EndpointLoad>,
    /// The endpoint's identity in sticky cookies, when the cluster has them.
    pub(crate) sticky_id: Option<EndpointId>,
}

impl ClusterEntry {
    /// Validates `cluster` and builds it, reusing `prev`'s state if it is the same cluster.
    pub(super) fn build(
        name: Arc<str>,
        cluster: &Cluster,
        prev: Option<&ClusterEntry>,
    ) -> Result<Self, ConfigError> {
        if cluster.connect_timeout_ms == 0 {
            return Err(ConfigError::ZeroConnectTimeout {
                cluster: cluster.name.clone(),
            });
        }
        let connect_timeout = Duration::from_millis(cluster.connect_timeout_ms);
        let invalid = |field: &str, reason: String| ConfigError::InvalidCluster {
            cluster: cluster.name.clone(),
            field: field.to_owned(),
            reason,
        };
        if let Some(b) = &cluster.circuit_breakers {
            for (field, value) in [
                ("circuit_breakers.max_connections", b.max_connections),
                (
                    "circuit_breakers.max_pending_requests",
                    b.max_pending_requests,
                ),
                ("circuit_breakers.max_requests", b.max_requests),
            ] {
                if value == 0 {
                    return Err(invalid(field, "must be at least 1".into()));
                }
            }
        }
        let breakers = match prev {
            Some(p) => {
                p.breakers.set_limits(cluster.circuit_breakers.as_ref());
                p.breakers.clone()
            }
            None => Breakers::new(cluster.circuit_breakers.as_ref()),
        };
        let h2 = cluster.upstream_protocol == UpstreamProtocol::H2;
        let pooled_settings =
            (cluster.tls.is_some() || cluster.circuit_breakers.is_some()).then(|| PooledSettings {
                connect_timeout,
                protocol: cluster.upstream_protocol,
                tls: cluster.tls.clone(),
            });
        let (pooled, upstream_tls) = match (&pooled_settings, prev) {
            (None, _) => (None, None),
            // Files are read again at each reload, so a pool using them is rebuilt.
            (Some(settings), Some(p))
                if p.pooled_settings.as_ref() == Some(settings)
                    && settings.tls.as_ref().is_none_or(|t| {
                        t.ca_file.is_none()
                            && t.client_cert_file.is_none()
                            && t.client_key_file.is_none()
                    }) =>
            {
                (p.pooled.clone(), p.upstream_tls.clone())
            }
            (Some(settings), _) => {
                // Certificates are read (and files loaded) only when the settings change.
                let tls = match &settings.tls {
                    Some(tls) => Some(
                        crate::tls::upstream_client(tls, h2)
                            .map_err(|(field, reason)| invalid(field, reason))?,
                    ),
                    None => None,
                };
                let pooled = crate::connector::pooled_client(
                    connect_timeout,
                    h2,
                    breakers.clone(),
                    tls.clone(),
                );
                (Some(pooled), tls)
            }
        };
        let lb_state = prev.map_or_else(|| Arc::new(LbState::new(&name)), |p| p.lb_state.clone());
        let upstream = match prev {
            Some(p)
                if p.connect_timeout == connect_timeout
                    && p.upstream_protocol == cluster.upstream_protocol =>
            {
                p.upstream.clone()
            }
            _ => upstream::upstream(
                connect_timeout,
                cluster.upstream_protocol == UpstreamProtocol::H2,
            ),
        };
        let sticky_key = cluster.sticky.as_ref().map(|config| {
            StickyKey::new(config, prev.and_then(|p| p.sticky.as_ref().map(|(k, _)| k)))
        });
        let (endpoints, balancer, sticky) = build_endpoints(
            &name,
            &cluster.endpoints,
            cluster.lb_policy,
            &lb_state,
            prev.map_or(&[][..], |p| &p.endpoints),
            sticky_key,
        )?;
        Ok(Self {
            name,
            endpoints,
            balancer,
            lb_state,
            upstream,
            hash_policy: cluster.hash_policy.clone(),
            request_timeout: (cluster.request_timeout_ms > 0)
                .then(|| Duration::from_millis(cluster.request_timeout_ms)),
            retries: cluster.retries.clone(),
            drain_timeout: Duration::from_millis(cluster.drain_timeout_ms),
            upstream_protocol: cluster.upstream_protocol,
            outlier_detection: cluster.outlier_detection.clone(),
            health_check: cluster.health_check.clone(),
            metrics: std::sync::OnceLock::new(),
            sticky,
            policy: cluster.lb_policy,
            connect_timeout,
            breakers,
            pooled,
            upstream_tls,
            pooled_settings,
        })
    }

    /// The same cluster with other endpoints.
    pub(super) fn with_endpoints(&self, endpoints: Vec<Endpoint>) -> Result<Self, ConfigError> {
        let (endpoints, balancer, sticky) = build_endpoints(
            &self.name,
            &endpoints,
            self.policy,
            &self.lb_state,
            &self.endpoints,
            self.sticky.as_ref().map(|(key, _)| key.clone()),
        )?;
        Ok(Self {
            name: self.name.clone(),
            endpoints,
            balancer,
            lb_state: self.lb_state.clone(),
            upstream: self.upstream.clone(),
            hash_policy: self.hash_policy.clone(),
            request_timeout: self.request_timeout,
            retries: self.retries.clone(),
            drain_timeout: self.drain_timeout,
            upstream_protocol: self.upstream_protocol,
            outlier_detection: self.outlier_detection.clone(),
            health_check: self.health_check.clone(),
            metrics: std::sync::OnceLock::new(),
            sticky,
            policy: self.policy,
            connect_timeout: self.connect_timeout,
            breakers: self.breakers.clone(),
            pooled: self.pooled.clone(),
            upstream_tls: self.upstream_tls.clone(),
            pooled_settings: self.pooled_settings.as_ref().map(|s| PooledSettings {
                connect_timeout: s.connect_timeout,
                protocol: s.protocol,
                tls: s.tls.clone(),
            }),
        })
    }
}

impl ClusterEntry {
    /// A healthy endpoint for a new request: the balancer's pick, or when that one is ejected
    /// or down, another healthy one; `None` when no endpoint is healthy.
    pub(crate) fn pick(&self, key: Option<&[u8]>) -> Option<usize> {
        let now = now_ms();
        let first = self.balancer.pick(key)?;
        if self.is_healthy(first, now) {
            return Some(first);
        }
        self.healthy_other(first, now)
    }

    /// A healthy endpoint other than `tried`, for a retry.
    pub(crate) fn pick_other(&self, tried: usize) -> Option<usize> {
        let now = now_ms();
        let next = self.balancer.pick_other(tried)?;
        if self.is_healthy(next, now) {
            return Some(next);
        }
        self.healthy_other(tried, now)
    }

    pub(crate) fn is_healthy(&self, index: usize, now: u64) -> bool {
        self.endpoints[index].load.health.is_healthy(now)
    }

    /// A few more balancer picks, then a scan from a random start, so that the cost stays
    /// bounded and the load spreads over the healthy endpoints.
    fn healthy_other(&self, avoid: usize, now: u64) -> Option<usize> {
        for _ in 0..4 {
            let i = self.balancer.pick_other(avoid)?;
            if self.is_healthy(i, now) {
                return Some(i);
            }
        }
        let n = self.endpoints.len();
        let start = fastrand::usize(..n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| i != avoid && self.is_healthy(i, now))
    }

    pub(crate) fn record_success(&self, index: usize) {
        self.endpoints[index].load.health.record_success();
    }

    /// Counts a failure of endpoint `index` and ejects it when outlier detection says so.
    pub(crate) fn record_failure(&self, index: usize) {
        let endpoint = &self.endpoints[index];
        endpoint.load.record_failure();
        let Some(policy) = &self.outlier_detection else {
            return;
        };
        let now = now_ms();
        let may_eject = || {
            let ejected = self
                .endpoints
                .iter()
                .filter(|e| e.load.health.is_ejected(now))
                .count();
            let cap = self.endpoints.len() * policy.max_ejection_percent as usize / 100;
            ejected < cap.max(1)
        };
        if endpoint.load.health.record_failure(policy, now, may_eject) {
            tracing::warn!(
                cluster = &*self.name,
                endpoint = %endpoint.address,
                ejections = endpoint.load.health.ejections(),
                "ejecting endpoint after consecutive failures"
            );
        }
    }
}

/// An endpoint set with its balancer and sticky-cookie index.
type BuiltEndpoints = (
    Box<[EndpointEntry]>,
    Balancer,
    Option<(Arc<StickyKey>, StickyIndex)>,
);

fn build_endpoints(
    cluster: &str,
    endpoints: &[Endpoint],
    policy: LbPolicy,
    lb_state: &Arc<LbState>,
    prev: &[EndpointEntry],
    sticky_key: Option<Arc<StickyKey>>,
) -> Result<BuiltEndpoints, ConfigError> {
    let prev_loads: ahash::AHashMap<SocketAddr, &Arc<EndpointLoad>> =
        prev.iter().map(|e| (e.address, &e.load)).collect();
    let mut seen = AHashSet::with_capacity(endpoints.len());
    let mut entries = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let address = endpoint.address;
        if endpoint.weight == 0 {
            return Err(ConfigError::ZeroWeight {
                cluster: cluster.to_owned(),
                address,
            });
        }
        // Endpoint sets come from discovery, where one address may briefly be listed twice;
        // that is one backend, so the first listing counts and the set stays usable.
        if !seen.insert(address) {
            tracing::debug!(cluster, %address, "ignoring a repeated endpoint");
            continue;
        }
        // "1.2.3.4:80" and "[::1]:80" are valid authorities; a scoped IPv6 address may not be.
        let Ok(authority) = Authority::try_from(address.to_string()) else {
            return Err(ConfigError::UnsupportedAddress {
                cluster: cluster.to_owned(),
                address,
            });
        };
        let load = prev_loads
            .get(&address)
            .map_or_else(Arc::default, |&load| load.clone());
        entries.push(EndpointEntry {
            address,
            authority,
            weight: endpoint.weight,
            load,
            sticky_id: sticky_key.as_ref().map(|key| key.endpoint_id(address)),
        });
    }
    let weighted: Vec<Weighted<'_>> = entries
        .iter()
        .map(|e| Weighted {
            name: e.authority.as_str(),
            weight: e.weight,
            load: &e.load,
        })
        .collect();
    let balancer = Balancer::new(policy, &weighted, lb_state.clone());
    drop(weighted);
    let sticky = sticky_key.map(|key| {
        let index = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.sticky_id?, i)))
            .collect();
        (key, index)
    });
    Ok((entries.into_boxed_slice(), balancer, sticky))
}
