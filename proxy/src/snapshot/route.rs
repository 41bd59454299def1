//! Route lookup by path: the longest matching segment-aware prefix wins.

use crate::config::Route;
use crate::error::ConfigError;

/// One virtual host's routes, longest prefix first.
#[derive(Debug)]
pub(super) struct RouteTable {
    routes: Box<[RouteEntry]>,
}

#[derive(Debug)]
struct RouteEntry {
    prefix: Box<str>,
    /// Index into the snapshot's clusters.
    cluster: usize,
}

impl RouteTable {
    /// Validates and sorts `routes`; `cluster_index` resolves a cluster name.
    pub(super) fn build(
        virtual_host: &str,
        routes: &[Route],
        cluster_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, ConfigError> {
        let mut entries = Vec::with_capacity(routes.len());
        let mut seen = ahash::AHashSet::with_capacity(routes.len());
        for route in routes {
            let prefix = route.path_prefix.as_str();
            if !prefix.starts_with('/') {
                return Err(ConfigError::InvalidPathPrefix {
                    virtual_host: virtual_host.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
            if !seen.insert(prefix) {
                return Err(ConfigError::DuplicateRoute {
                    virtual_host: virtual_host.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
            let Some(cluster) = cluster_index(&route.cluster) else {
                return Err(ConfigError::UnknownCluster {
                    virtual_host: virtual_host.to_owned(),
                    prefix: prefix.to_owned(),
                    cluster: route.cluster.clone(),
                });
            };
            entries.push(RouteEntry {
                prefix: Box::from(prefix),
                cluster,
            });
        }
        // Two different prefixes of equal length never both match, so their order is moot.
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        Ok(Self {
            routes: entries.into_boxed_slice(),
        })
    }

    /// The cluster index for `path` (without query).
    pub(super) fn find(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|r| prefix_matches(&r.prefix, path))
            .map(|r| r.cluster)
    }
}

/// "/api" matches "/api", "/api/" and "/api/x" but not "/apix"; "/api/" and "/" match any path
/// that starts with them.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}
