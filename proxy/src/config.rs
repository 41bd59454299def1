//! Inert, serde-friendly proxy configuration.
//!
//! Nothing here is validated; [`crate::Proxy::new`] and [`crate::Proxy::apply`] turn a
//! [`Config`] into a running snapshot and report every problem as a [`crate::ConfigError`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The whole L7 configuration of one node's proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Virtual hosts, matched by the request's Host (port stripped, case-insensitive).
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Upstream clusters referenced by routes.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
}

/// A set of domains sharing one route table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Name, unique among virtual hosts; used in errors and logs.
    pub name: String,
    /// Exact domains ("hello.localhost"), wildcard suffixes ("*.example.com"), or "*" for the
    /// default host. Exact beats wildcard (longest suffix first) beats "*".
    ///
    /// A wildcard is always `*.` followed by a suffix and matches one or more whole labels:
    /// "*.example.com" matches "a.example.com" and "a.b.example.com" but not "example.com".
    pub domains: Vec<String>,
    /// Routes, matched by path prefix; the longest matching prefix wins.
    pub routes: Vec<Route>,
}

/// Sends requests whose path starts with a prefix to a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix, default "/"; the longest matching prefix wins.
    ///
    /// Matching is segment-aware: "/api" matches "/api", "/api/" and "/api/v1" but not
    /// "/apix"; a prefix ending in "/" ("/api/") matches any path that starts with it. The path
    /// is compared as received (no percent-decoding or dot-segment normalisation), query
    /// excluded.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Name of the cluster to send to.
    pub cluster: String,
}

/// A named group of interchangeable upstream endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name, unique among clusters; routes refer to it.
    pub name: String,
    /// How a request picks one of the endpoints.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// The endpoints; an empty set answers 503 at once. An address listed twice counts once,
    /// with its first weight.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Connect timeout in milliseconds, default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// Load-balancing policy of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Smooth weighted round robin (nginx's algorithm): weights honoured, picks interleaved.
    #[default]
    RoundRobin,
}

/// One upstream address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Address to connect to.
    pub address: SocketAddr,
    /// Relative weight, default 1; must be at least 1.
    #[serde(default = "one")]
    pub weight: u32,
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(address: SocketAddr) -> Self {
        Self { address, weight: 1 }
    }
}

fn default_prefix() -> String {
    "/".to_owned()
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let config: Config = serde_json::from_str(
            r#"{"virtual_hosts":[{"name":"v","domains":["*"],"routes":[{"cluster":"c"}]}],
                "clusters":[{"name":"c","endpoints":[{"address":"127.0.0.1:80"}]}]}"#,
        )
        .unwrap();
        assert_eq!(config.virtual_hosts[0].routes[0].path_prefix, "/");
        let cluster = &config.clusters[0];
        assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(cluster.connect_timeout_ms, 1000);
        assert_eq!(cluster.endpoints[0].weight, 1);
        assert_eq!(
            serde_json::from_str::<Config>("{}").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_fields_rejected() {
        assert!(serde_json::from_str::<Config>(r#"{"listeners":[]}"#).is_err());
        assert!(
            serde_json::from_str::<Cluster>(r#"{"name":"c","endpoint":[]}"#).is_err(),
            "typo of a field must not be silently ignored"
        );
        assert!(serde_json::from_str::<LbPolicy>(r#""least_request""#).is_err());
        assert_eq!(
            serde_json::from_str::<LbPolicy>(r#""round_robin""#).unwrap(),
            LbPolicy::RoundRobin
        );
    }
}
