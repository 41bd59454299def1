//! Built, validated routing tables: what one request reads with one `ArcSwap::load`.
//!
//! A [`Snapshot`] is immutable. [`Snapshot::build`] turns a whole [`Config`] into one;
//! [`Snapshot::with_endpoints`] derives one that differs in a single cluster and shares the rest
//! by `Arc`. Both carry the state that must outlive a swap (balancer state, connection pools)
//! over from the previous snapshot by cluster name.

mod cluster;
mod host;
mod route;

use std::sync::Arc;

use ahash::AHashMap;

use crate::config::{Config, Endpoint, ListenerProtocol};
use crate::error::ConfigError;

pub(crate) use cluster::ClusterEntry;
use host::HostTable;
pub(crate) use route::RouteEntry;
use route::RouteTable;

/// One consistent view of routes, clusters and endpoints.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// 1 for the first snapshot of a proxy, then one more per swap.
    pub(crate) revision: u64,
    routing: Arc<Routing>,
    clusters: Box<[Arc<ClusterEntry>]>,
}

/// Everything but the clusters; shared by snapshots that differ only in endpoints.
#[derive(Debug)]
struct Routing {
    certificates: crate::tls::CertTable,
    hosts: HostTable,
    virtual_hosts: Box<[VirtualHostEntry]>,
    /// Cluster name to index in [`Snapshot::clusters`].
    cluster_index: AHashMap<Arc<str>, usize>,
    request_id: crate::config::RequestIdPolicy,
    /// Header fields per request at most (HTTP/1 is bounded by hyper already; this bounds
    /// HTTP/2, whose only native limit is the header list size).
    max_header_count: usize,
    /// Listeners bound to one virtual host, by listener name.
    listener_hosts: AHashMap<Arc<str>, usize>,
}

/// Where a request goes.
#[derive(Debug)]
pub(crate) struct Routed<'a> {
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the request path needs only the route and cluster"
        )
    )]
    pub(crate) virtual_host: &'a str,
    pub(crate) cluster: &'a Arc<ClusterEntry>,
    pub(crate) route: &'a RouteEntry,
}

#[derive(Debug)]
struct VirtualHostEntry {
    name: Arc<str>,
    routes: RouteTable,
}

/// Why a request found no cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteMiss {
    /// No virtual host claims the host.
    NoVirtualHost,
    /// The virtual host has no route for the path.
    NoRoute,
}

impl Snapshot {
    /// Validates `config` and builds the snapshot that follows `prev` (if any).
    pub(crate) fn build(config: &Config, prev: Option<&Snapshot>) -> Result<Self, ConfigError> {
        if config.limits.max_header_bytes < 8192 {
            return Err(ConfigError::InvalidLimit {
                field: "max_header_bytes",
                reason: "must be at least 8192 (a request line and a few headers)",
            });
        }
        if config.limits.max_header_count == 0 {
            return Err(ConfigError::InvalidLimit {
                field: "max_header_count",
                reason: "must be at least 1",
            });
        }
        let mut cluster_index = AHashMap::with_capacity(config.clusters.len());
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for cluster in &config.clusters {
            let name: Arc<str> = Arc::from(cluster.name.as_str());
            if cluster_index.contains_key(&name) {
                return Err(ConfigError::DuplicateCluster {
                    cluster: cluster.name.clone(),
                });
            }
            let prev = prev.and_then(|p| p.cluster(&name)).map(|c| &**c);
            clusters.push(Arc::new(ClusterEntry::build(name.clone(), cluster, prev)?));
            cluster_index.insert(name, clusters.len() - 1);
        }

        let mut listener_names = ahash::AHashSet::with_capacity(config.listeners.len());
        let mut addresses = ahash::AHashSet::with_capacity(config.listeners.len() + 1);
        addresses.extend(config.admin.as_ref().map(|a| a.address));
        for listener in &config.listeners {
            if !listener_names.insert(listener.name.as_str()) {
                return Err(ConfigError::DuplicateListener {
                    listener: listener.name.clone(),
                });
            }
            if !addresses.insert(listener.address) {
                return Err(ConfigError::DuplicateListenerAddress {
                    listener: listener.name.clone(),
                    address: listener.address,
                });
            }
            let invalid = |reason| ConfigError::InvalidListener {
                listener: listener.name.clone(),
                reason,
            };
            match (&listener.protocol, &listener.cluster) {
                (ListenerProtocol::Tcp | ListenerProtocol::Udp, None) => {
                    return Err(invalid("a tcp or udp listener needs a cluster"));
                }
                (ListenerProtocol::Udp, Some(_)) if listener.proxy_protocol.is_some() => {
                    return Err(invalid("proxy_protocol is only for tcp listeners"));
                }
                (ListenerProtocol::Tcp | ListenerProtocol::Udp, Some(cluster))
                    if !cluster_index.contains_key(cluster.as_str()) =>
                {
                    return Err(ConfigError::ListenerUnknownCluster {
                        listener: listener.name.clone(),
                        cluster: cluster.clone(),
                    });
                }
                (ListenerProtocol::Http, Some(_)) => {
                    return Err(invalid(
                        "an http listener routes by virtual host and takes no cluster",
                    ));
                }
                (ListenerProtocol::Http, None) if listener.proxy_protocol.is_some() => {
                    return Err(invalid("proxy_protocol is only for tcp listeners"));
                }
                (ListenerProtocol::Http, None) if listener.idle_timeout_ms.is_some() => {
                    return Err(invalid("idle_timeout_ms is only for tcp and udp listeners"));
                }
                _ => {}
            }
        }

        let certificates = crate::tls::CertTable::build(&config.certificates)?;
        for listener in &config.listeners {
            let Some(tls) = &listener.tls else { continue };
            if listener.protocol != ListenerProtocol::Http {
                return Err(ConfigError::InvalidListener {
                    listener: listener.name.clone(),
                    reason: "tls is only supported on http listeners",
                });
            }
            if let Some(default) = &tls.default_certificate
                && !certificates.contains(default)
            {
                return Err(ConfigError::Certificate {
                    certificate: default.clone(),
                    reason: format!(
                        "named as default by listener {:?} but not configured",
                        listener.name
                    ),
                });
            }
            // Validates the client CA bundle now, so that a bad one is refused with the rest.
            crate::tls::server_config(crate::proxy::WeakProxy::dangling(), &listener.name, tls)?;
        }

        let mut hosts = HostTable::default();
        let mut virtual_hosts = Vec::with_capacity(config.virtual_hosts.len());
        let mut names = ahash::AHashSet::with_capacity(config.virtual_hosts.len());
        for (index, vhost) in config.virtual_hosts.iter().enumerate() {
            if !names.insert(vhost.name.as_str()) {
                return Err(ConfigError::DuplicateVirtualHost {
                    virtual_host: vhost.name.clone(),
                });
            }
            for domain in &vhost.domains {
                hosts.insert(domain, index, &vhost.name, |other| {
                    config.virtual_hosts[other].name.clone()
                })?;
            }
            let routes = RouteTable::build(&vhost.name, &vhost.routes, |name| {
                cluster_index.get(name).copied()
            })?;
            virtual_hosts.push(VirtualHostEntry {
                name: Arc::from(vhost.name.as_str()),
                routes,
            });
        }
        let mut listener_hosts = AHashMap::new();
        for listener in &config.listeners {
            let Some(wanted) = &listener.virtual_host else {
                continue;
            };
            let invalid = |reason| ConfigError::InvalidListener {
                listener: listener.name.clone(),
                reason,
            };
            if listener.protocol != ListenerProtocol::Http {
                return Err(invalid("virtual_host is only for http listeners"));
            }
            let index = config
                .virtual_hosts
                .iter()
                .position(|v| &v.name == wanted)
                .ok_or_else(|| invalid("virtual_host names no configured virtual host"))?;
            listener_hosts.insert(Arc::from(listener.name.as_str()), index);
        }

        Ok(Self {
            revision: prev.map_or(1, |p| p.revision + 1),
            routing: Arc::new(Routing {
                certificates,
                hosts,
                virtual_hosts: virtual_hosts.into_boxed_slice(),
                cluster_index,
                request_id: config.request_id,
                max_header_count: config.limits.max_header_count,
                listener_hosts,
            }),
            clusters: clusters.into_boxed_slice(),
        })
    }

    /// The snapshot that follows `self` with `cluster`'s endpoints replaced.
    pub(crate) fn with_endpoints(
        &self,
        cluster: &str,
        endpoints: Vec<Endpoint>,
    ) -> Result<Self, ConfigError> {
        let Some(&index) = self.routing.cluster_index.get(cluster) else {
            return Err(ConfigError::NoSuchCluster {
                cluster: cluster.to_owned(),
            });
        };
        let updated = self.clusters[index].with_endpoints(endpoints)?;
        let mut clusters = self.clusters.clone();
        clusters[index] = Arc::new(updated);
        Ok(Self {
            revision: self.revision + 1,
            routing: self.routing.clone(),
            clusters,
        })
    }

    /// The virtual host, route and cluster for a normalised host (lowercase, no port, no
    /// trailing dot), a request path (no query) and the request's headers (read only by
    /// routes with header matches).
    #[cfg(test)]
    pub(crate) fn route(
        &self,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Routed<'_>, RouteMiss> {
        self.route_on("", host, path, headers)
    }

    /// [`Snapshot::route`] for a request that arrived on `listener`: a listener bound to a
    /// virtual host sends everything there, whatever the Host header.
    pub(crate) fn route_on(
        &self,
        listener: &str,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Routed<'_>, RouteMiss> {
        let bound = if self.routing.listener_hosts.is_empty() {
            None
        } else {
            self.routing.listener_hosts.get(listener).copied()
        };
        let vhost = match bound {
            Some(index) => index,
            None => self
                .routing
                .hosts
                .find(host)
                .ok_or(RouteMiss::NoVirtualHost)?,
        };
        let vhost = &self.routing.virtual_hosts[vhost];
        let route = vhost.routes.find(path, headers).ok_or(RouteMiss::NoRoute)?;
        Ok(Routed {
            virtual_host: &vhost.name,
            cluster: &self.clusters[route.cluster],
            route,
        })
    }

    /// What to do with `X-Request-Id`.
    pub(crate) fn request_id(&self) -> crate::config::RequestIdPolicy {
        self.routing.request_id
    }

    /// Header fields per request at most.
    pub(crate) fn max_header_count(&self) -> usize {
        self.routing.max_header_count
    }

    /// The cluster of this name.
    pub(crate) fn cluster(&self, name: &str) -> Option<&Arc<ClusterEntry>> {
        let &index = self.routing.cluster_index.get(name)?;
        Some(&self.clusters[index])
    }

    /// The certificates for TLS listeners.
    pub(crate) fn certificates(&self) -> &crate::tls::CertTable {
        &self.routing.certificates
    }

    /// Every cluster, in config order.
    pub(crate) fn clusters(&self) -> &[Arc<ClusterEntry>] {
        &self.clusters
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Cluster, LbPolicy, Route, VirtualHost};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn cluster(name: &str, ports: &[u16]) -> Cluster {
        Cluster {
            name: name.into(),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: ports.iter().map(|&p| Endpoint::new(addr(p))).collect(),
            ..Cluster::default()
        }
    }

    fn vhost(name: &str, domains: &[&str], routes: &[(&str, &str)]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|&d| d.into()).collect(),
            routes: routes
                .iter()
                .map(|&(p, c)| Route {
                    path_prefix: p.into(),
                    cluster: c.into(),
                    ..Route::default()
                })
                .collect(),
        }
    }

    fn config() -> Config {
        Config {
            virtual_hosts: vec![
                vhost("exact", &["Hello.Localhost", "other.test"], &[("/", "a")]),
                vhost("wild", &["*.example.com"], &[("/", "b")]),
                vhost("deep", &["*.api.example.com"], &[("/", "c")]),
                vhost(
                    "default",
                    &["*"],
                    &[
                        ("/", "a"),
                        ("/api", "b"),
                        ("/api/v2/", "c"),
                        ("/static/", "c"),
                    ],
                ),
            ],
            clusters: vec![cluster("a", &[1]), cluster("b", &[2]), cluster("c", &[3])],
            ..Config::default()
        }
    }

    fn routed(s: &Snapshot, host: &str, path: &str) -> Result<(String, String), RouteMiss> {
        s.route(host, path, &http::HeaderMap::new())
            .map(|r| (r.virtual_host.to_owned(), r.cluster.name.to_string()))
    }

    #[test]
    fn virtual_host_precedence() {
        let s = Snapshot::build(&config(), None).unwrap();
        let vh = |host| routed(&s, host, "/").unwrap().0;
        assert_eq!(
            vh("hello.localhost"),
            "exact",
            "domains are stored lowercase"
        );
        assert_eq!(vh("other.test"), "exact");
        assert_eq!(vh("www.example.com"), "wild");
        assert_eq!(
            vh("a.b.example.com"),
            "wild",
            "a wildcard spans several labels"
        );
        assert_eq!(
            vh("v1.api.example.com"),
            "deep",
            "longest wildcard suffix wins"
        );
        assert_eq!(vh("api.example.com"), "wild");
        assert_eq!(
            vh("example.com"),
            "default",
            "*.example.com needs a label before it"
        );
        assert_eq!(vh("nothing.test"), "default");
        assert_eq!(vh(""), "default");
    }

    #[test]
    fn no_default_host_misses() {
        let mut c = config();
        c.virtual_hosts.pop();
        let s = Snapshot::build(&c, None).unwrap();
        assert_eq!(
            routed(&s, "nothing.test", "/"),
            Err(RouteMiss::NoVirtualHost)
        );
    }

    #[test]
    fn longest_segment_aware_prefix_wins() {
        let s = Snapshot::build(&config(), None).unwrap();
        let cl = |path| routed(&s, "any", path).unwrap().1;
        assert_eq!(cl("/"), "a");
        assert_eq!(cl("/apix"), "a", "prefixes match whole segments");
        assert_eq!(cl("/api"), "b");
        assert_eq!(cl("/api/"), "b");
        assert_eq!(cl("/api/v1/users"), "b");
        assert_eq!(cl("/api/v2"), "b", "'/api/v2/' needs the trailing slash");
        assert_eq!(cl("/api/v2/users"), "c");
        assert_eq!(cl("/static/app.js"), "c");
        assert_eq!(cl("/staticx"), "a");
    }

    #[test]
    fn no_route_misses() {
        let mut c = config();
        c.virtual_hosts[3].routes.remove(0);
        let s = Snapshot::build(&c, None).unwrap();
        assert_eq!(routed(&s, "any", "/other"), Err(RouteMiss::NoRoute));
        assert_eq!(routed(&s, "any", "/api/x").unwrap().1, "b");
    }

    #[test]
    fn invalid_configs_rejected() {
        let check = |edit: &dyn Fn(&mut Config), want: &str| {
            let mut c = config();
            edit(&mut c);
            let err = Snapshot::build(&c, None).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        };
        check(
            &|c| c.clusters.push(cluster("a", &[9])),
            "duplicate cluster \"a\"",
        );
        check(
            &|c| c.virtual_hosts[0].routes[0].cluster = "nope".into(),
            "names unknown cluster \"nope\"",
        );
        check(&|c| c.clusters[0].endpoints[0].weight = 0, "weight 0");
        check(&|c| c.clusters[0].connect_timeout_ms = 0, "connect timeout");
        check(
            &|c| c.virtual_hosts[1].domains.push("OTHER.test".into()),
            "already claimed",
        );
        check(
            &|c| c.virtual_hosts[1].domains.push("*".into()),
            "already claimed",
        );
        check(
            &|c| c.virtual_hosts[1].domains.push("a.*.com".into()),
            "invalid domain",
        );
        check(
            &|c| c.virtual_hosts[1].domains.push("*foo.com".into()),
            "invalid domain",
        );
        check(
            &|c| c.virtual_hosts[1].domains.push("".into()),
            "invalid domain",
        );
        check(
            &|c| c.virtual_hosts[1].domains.push("a.test:80".into()),
            "port",
        );
        check(
            &|c| c.virtual_hosts[1].routes[0].path_prefix = "api".into(),
            "does not start",
        );
        check(
            &|c| {
                c.virtual_hosts[3].routes.push(Route {
                    path_prefix: "/api".into(),
                    cluster: "a".into(),
                    ..Route::default()
                })
            },
            "two routes",
        );
        check(
            &|c| c.virtual_hosts[1].name = "exact".into(),
            "duplicate virtual host",
        );
    }

    #[test]
    fn state_carried_over_by_cluster_name() {
        let first = Snapshot::build(&config(), None).unwrap();
        let second = Snapshot::build(&config(), Some(&first)).unwrap();
        assert_eq!((first.revision, second.revision), (1, 2));
        let a1 = first.cluster("a").unwrap();
        let a2 = second.cluster("a").unwrap();
        assert!(Arc::ptr_eq(&a1.lb_state, &a2.lb_state));

        let mut renamed = config();
        renamed.clusters[0].name = "a2".into();
        renamed.virtual_hosts[0].routes[0].cluster = "a2".into();
        renamed.virtual_hosts[3].routes[0].cluster = "a2".into();
        let third = Snapshot::build(&renamed, Some(&second)).unwrap();
        assert!(!Arc::ptr_eq(
            &a2.lb_state,
            &third.cluster("a2").unwrap().lb_state
        ));
    }

    #[test]
    fn with_endpoints_shares_everything_else() {
        let first = Snapshot::build(&config(), None).unwrap();
        let second = first
            .with_endpoints("b", vec![Endpoint::new(addr(7))])
            .unwrap();
        assert_eq!(second.revision, 2);
        assert!(Arc::ptr_eq(&first.routing, &second.routing));
        assert!(Arc::ptr_eq(&first.clusters[0], &second.clusters[0]));
        assert!(Arc::ptr_eq(&first.clusters[2], &second.clusters[2]));
        assert_eq!(second.clusters[1].endpoints[0].address, addr(7));
        assert!(Arc::ptr_eq(
            &first.clusters[1].lb_state,
            &second.clusters[1].lb_state
        ));

        assert!(matches!(
            first.with_endpoints("zz", vec![]),
            Err(ConfigError::NoSuchCluster { .. })
        ));
        let zero = Endpoint {
            address: addr(7),
            weight: 0,
        };
        assert!(matches!(
            first.with_endpoints("b", vec![zero]),
            Err(ConfigError::ZeroWeight { .. })
        ));
        let twice = first.with_endpoints("b", vec![Endpoint::new(addr(7)), Endpoint::new(addr(7))]);
        assert_eq!(
            twice.unwrap().clusters[1].endpoints.len(),
            1,
            "a repeated address is one endpoint"
        );
        let empty = first.with_endpoints("b", vec![]).unwrap();
        assert!(empty.clusters[1].balancer.pick(None).is_none());
    }
}
