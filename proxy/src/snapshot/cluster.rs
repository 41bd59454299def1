//! A built cluster: its endpoints, balancer and connection pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashSet;
use http::uri::Authority;

use crate::balance::{Balancer, LbState};
use crate::config::{Cluster, Endpoint, LbPolicy};
use crate::error::ConfigError;
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
    policy: LbPolicy,
    connect_timeout: Duration,
}

/// An endpoint with its request authority computed once, off the request path.
#[derive(Debug)]
pub(crate) struct EndpointEntry {
    pub(crate) address: SocketAddr,
    pub(crate) authority: Authority,
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
        let lb_state = prev.map_or_else(|| Arc::new(LbState::new(&name)), |p| p.lb_state.clone());
        let upstream = match prev {
            Some(p) if p.connect_timeout == connect_timeout => p.upstream.clone(),
            _ => upstream::upstream(connect_timeout),
        };
        let (endpoints, balancer) =
            build_endpoints(&name, &cluster.endpoints, cluster.lb_policy, &lb_state)?;
        Ok(Self {
            name,
            endpoints,
            balancer,
            lb_state,
            upstream,
            policy: cluster.lb_policy,
            connect_timeout,
        })
    }

    /// The same cluster with other endpoints.
    pub(super) fn with_endpoints(&self, endpoints: Vec<Endpoint>) -> Result<Self, ConfigError> {
        let (endpoints, balancer) =
            build_endpoints(&self.name, &endpoints, self.policy, &self.lb_state)?;
        Ok(Self {
            name: self.name.clone(),
            endpoints,
            balancer,
            lb_state: self.lb_state.clone(),
            upstream: self.upstream.clone(),
            policy: self.policy,
            connect_timeout: self.connect_timeout,
        })
    }
}

fn build_endpoints(
    cluster: &str,
    endpoints: &[Endpoint],
    policy: LbPolicy,
    lb_state: &Arc<LbState>,
) -> Result<(Box<[EndpointEntry]>, Balancer), ConfigError> {
    let mut seen = AHashSet::with_capacity(endpoints.len());
    let mut entries = Vec::with_capacity(endpoints.len());
    let mut weights = Vec::with_capacity(endpoints.len());
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
        entries.push(EndpointEntry { address, authority });
        weights.push(endpoint.weight);
    }
    let balancer = Balancer::new(policy, &weights, lb_state.clone());
    Ok((entries.into_boxed_slice(), balancer))
}
