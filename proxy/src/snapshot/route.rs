//! Route lookup: the longest matching segment-aware path prefix wins; among routes of one
//! prefix, the first (in config order) whose header matches all hold.

use std::sync::Arc;

use http::HeaderMap;

use crate::config::Route;
use crate::error::ConfigError;
use crate::http::policy::{FieldError, HeaderMatcher, RoutePolicy};

/// One virtual host's routes, longest prefix first, config order within a prefix.
#[derive(Debug)]
pub(super) struct RouteTable {
    routes: Box<[RouteEntry]>,
}

/// A route as the request path sees it.
#[derive(Debug)]
pub(crate) struct RouteEntry {
    prefix: Box<str>,
    /// Conditions that must all hold; empty for most routes, which then cost no header scan.
    headers: Box<[HeaderMatcher]>,
    /// Index into the snapshot's clusters.
    pub(super) cluster: usize,
    /// Rewrites, timeout and retry overrides; `None` when the route sets none.
    pub(crate) policy: Option<Arc<RoutePolicy>>,
}

impl RouteTable {
    /// Validates and sorts `routes`; `cluster_index` resolves a cluster name.
    pub(super) fn build(
        virtual_host: &str,
        routes: &[Route],
        cluster_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, ConfigError> {
        let mut entries = Vec::with_capacity(routes.len());
        // The header matches of the routes seen so far, by prefix.
        let mut by_prefix: ahash::AHashMap<&str, Vec<&[crate::config::HeaderMatch]>> =
            ahash::AHashMap::with_capacity(routes.len());
        for route in routes {
            let prefix = route.path_prefix.as_str();
            let invalid = |e: FieldError| ConfigError::InvalidRoute {
                virtual_host: virtual_host.to_owned(),
                prefix: prefix.to_owned(),
                field: e.field,
                reason: e.reason,
            };
            if !prefix.starts_with('/') {
                return Err(ConfigError::InvalidPathPrefix {
                    virtual_host: virtual_host.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
            // A route after one of the same prefix with no header match (or the same ones)
            // could never be chosen: refuse it rather than silently ignore it.
            let earlier = by_prefix.entry(prefix).or_default();
            let shadowed = earlier
                .iter()
                .find(|&&headers| headers.is_empty() || headers == route.headers.as_slice());
            if let Some(&headers) = shadowed {
                if headers == route.headers.as_slice() {
                    return Err(ConfigError::DuplicateRoute {
                        virtual_host: virtual_host.to_owned(),
                        prefix: prefix.to_owned(),
                    });
                }
                return Err(invalid(FieldError {
                    field: "headers".into(),
                    reason: "unreachable: an earlier route with the same path prefix and no \
                             header match takes every request"
                        .into(),
                }));
            }
            earlier.push(&route.headers);
            let Some(cluster) = cluster_index(&route.cluster) else {
                return Err(ConfigError::UnknownCluster {
                    virtual_host: virtual_host.to_owned(),
                    prefix: prefix.to_owned(),
                    cluster: route.cluster.clone(),
                });
            };
            let headers = route
                .headers
                .iter()
                .enumerate()
                .map(|(i, h)| HeaderMatcher::build(h, &format!("headers[{i}]")))
                .collect::<Result<Box<[_]>, _>>()
                .map_err(invalid)?;
            let policy = RoutePolicy::build(route).map_err(invalid)?.map(Arc::new);
            entries.push(RouteEntry {
                prefix: Box::from(prefix),
                headers,
                cluster,
                policy,
            });
        }
        // Stable: routes of one prefix keep their config order. Two different prefixes of
        // equal length never both match, so their relative order is moot.
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        Ok(Self {
            routes: entries.into_boxed_slice(),
        })
    }

    /// The route for `path` (without query) and the request's headers.
    pub(super) fn find(&self, path: &str, headers: &HeaderMap) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| {
            prefix_matches(&r.prefix, path) && r.headers.iter().all(|h| h.matches(headers))
        })
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
