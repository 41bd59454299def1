//! Turns services, endpoints and routes into the proxy's `Config` and the DNS server's `Zone`.
//! Pure functions: the agent calls them on every change and swaps the results in.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use crate::api::{Endpoints, Object, Protocol, Route, Service};
use crate::client::Cache;

fn services(cache: &Cache) -> impl Iterator<Item = &Service> {
    cache.objects.values().filter_map(|o| match &**o {
        Object::Service(s) => Some(s),
        _ => None,
    })
}

fn endpoints_of<'a>(cache: &'a Cache, ns: &str, name: &str) -> Option<&'a Endpoints> {
    match cache
        .objects
        .get(&crate::api::key(crate::api::Kind::Endpoints, ns, name))
        .map(|o| &**o)
    {
        Some(Object::Endpoints(e)) => Some(e),
        _ => None,
    }
}

/// The proxy's policy for a service: client-IP affinity is a consistent hash of the source
/// address (ring hash unless the service asked for maglev), as Kubernetes' `ClientIP` means.
fn balancing(
    svc: Option<&crate::api::ServiceSpec>,
) -> (berth_proxy::LbPolicy, berth_proxy::HashPolicy) {
    use crate::api::{LbPolicy, SessionAffinity};
    let Some(svc) = svc else {
        return (
            berth_proxy::LbPolicy::RoundRobin,
            berth_proxy::HashPolicy::SourceIp,
        );
    };
    let policy = match (svc.session_affinity, svc.lb_policy) {
        (_, LbPolicy::Maglev) => berth_proxy::LbPolicy::Maglev,
        (SessionAffinity::ClientIp, _) | (_, LbPolicy::RingHash) => berth_proxy::LbPolicy::RingHash,
        (SessionAffinity::None, LbPolicy::RoundRobin) => berth_proxy::LbPolicy::RoundRobin,
        (SessionAffinity::None, LbPolicy::LeastRequest) => berth_proxy::LbPolicy::LeastRequest,
        (SessionAffinity::None, LbPolicy::Random) => berth_proxy::LbPolicy::Random,
    };
    (policy, berth_proxy::HashPolicy::SourceIp)
}

/// The proxy cluster name of a service port: `<ns>/<service>:<port>`.
pub fn cluster_name(ns: &str, service: &str, port: &str) -> String {
    format!("{ns}/{service}:{port}")
}

/// One virtual host per route, one cluster per service port a route sends to. A host claimed by
/// two routes goes to the first in name order, so one bad route cannot take the others down.
pub fn proxy_config(routes: &Cache, services: &Cache, endpoints: &Cache) -> berth_proxy::Config {
    let mut clusters: BTreeMap<String, berth_proxy::Cluster> = BTreeMap::new();
    let mut virtual_hosts = Vec::new();
    let mut claimed = HashSet::new();
    for o in routes.objects.values() {
        let Object::Route(Route { metadata, spec }) = &**o else {
            continue;
        };
        let ns = &metadata.namespace;
        let domains: Vec<String> = spec
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| {
                let fresh = claimed.insert(h.clone());
                if !fresh {
                    tracing::warn!(route = %format!("{ns}/{}", metadata.name), host = %h, "host already claimed by another route");
                }
                fresh
            })
            .collect();
        if domains.is_empty() {
            continue;
        }
        let mut vroutes = Vec::new();
        for rule in &spec.rules {
            let name = cluster_name(ns, &rule.service, &rule.port);
            clusters.entry(name.clone()).or_insert_with(|| {
                let eps = endpoints_of(endpoints, ns, &rule.service)
                    .map(|e| {
                        e.addresses
                            .iter()
                            .filter_map(|a| {
                                a.ports
                                    .get(&rule.port)
                                    .map(|p| SocketAddr::new(a.address, *p))
                            })
                            .map(berth_proxy::Endpoint::new)
                            .collect()
                    })
                    .unwrap_or_default();
                let svc = match services
                    .objects
                    .get(&crate::api::key(
                        crate::api::Kind::Service,
                        ns,
                        &rule.service,
                    ))
                    .map(|o| &**o)
                {
                    Some(Object::Service(svc)) => Some(&svc.spec),
                    _ => None,
                };
                let (lb_policy, hash_policy) = balancing(svc);
                berth_proxy::Cluster {
                    name: name.clone(),
                    lb_policy,
                    hash_policy,
                    endpoints: eps,
                    connect_timeout_ms: 1000,
                    ..Default::default()
                }
            });
            vroutes.push(berth_proxy::Route {
                path_prefix: rule.path.clone(),
                cluster: name,
            });
        }
        virtual_hosts.push(berth_proxy::VirtualHost {
            name: format!("{ns}/{}", metadata.name),
            domains,
            routes: vroutes,
        });
    }
    berth_proxy::Config {
        virtual_hosts,
        clusters: clusters.into_values().collect(),
        ..Default::default()
    }
}

fn dns_protocol(p: Protocol) -> berth_dns::Protocol {
    match p {
        Protocol::Tcp => berth_dns::Protocol::Tcp,
        Protocol::Udp => berth_dns::Protocol::Udp,
    }
}

/// Every service with its ready endpoints, in the zone `origin`.
pub fn dns_zone(origin: &str, services_cache: &Cache, endpoints: &Cache) -> berth_dns::Zone {
    let services = services(services_cache)
        .map(|svc| {
            let ns = &svc.metadata.namespace;
            let protocols: BTreeMap<&str, Protocol> = svc
                .spec
                .ports
                .iter()
                .map(|p| (p.name.as_str(), p.protocol))
                .collect();
            let eps = endpoints_of(endpoints, ns, &svc.metadata.name)
                .map(|e| {
                    e.addresses
                        .iter()
                        .map(|a| berth_dns::EndpointRecord {
                            hostname: a.instance.clone(),
                            address: a.address,
                            ports: a
                                .ports
                                .iter()
                                .map(|(name, port)| berth_dns::PortRecord {
                                    name: name.clone(),
                                    protocol: dns_protocol(
                                        protocols.get(name.as_str()).copied().unwrap_or_default(),
                                    ),
                                    port: *port,
                                })
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            berth_dns::ServiceRecord {
                name: svc.metadata.name.clone(),
                namespace: ns.clone(),
                vip: if svc.spec.headless {
                    None
                } else {
                    svc.status.vip
                },
                ports: svc
                    .spec
                    .ports
                    .iter()
                    .map(|p| berth_dns::PortRecord {
                        name: p.name.clone(),
                        protocol: dns_protocol(p.protocol),
                        port: p.port,
                    })
                    .collect(),
                endpoints: eps,
            }
        })
        .collect();
    berth_dns::Zone {
        origin: origin.to_owned(),
        services,
        ..berth_dns::Zone::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LbPolicy, ServiceSpec, SessionAffinity};

    fn spec(lb: LbPolicy, affinity: SessionAffinity) -> ServiceSpec {
        ServiceSpec {
            app: "a".into(),
            ports: vec![],
            headless: false,
            lb_policy: lb,
            session_affinity: affinity,
        }
    }

    #[test]
    fn service_policies_map_to_the_proxy() {
        let p = |lb, aff| balancing(Some(&spec(lb, aff))).0;
        assert_eq!(
            p(LbPolicy::RoundRobin, SessionAffinity::None),
            berth_proxy::LbPolicy::RoundRobin
        );
        assert_eq!(
            p(LbPolicy::LeastRequest, SessionAffinity::None),
            berth_proxy::LbPolicy::LeastRequest
        );
        assert_eq!(
            p(LbPolicy::RoundRobin, SessionAffinity::ClientIp),
            berth_proxy::LbPolicy::RingHash
        );
        assert_eq!(
            p(LbPolicy::Maglev, SessionAffinity::ClientIp),
            berth_proxy::LbPolicy::Maglev
        );
        assert_eq!(balancing(None).0, berth_proxy::LbPolicy::RoundRobin);
    }
}
