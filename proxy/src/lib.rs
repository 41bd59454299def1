//! berth's per-node L4/L7 proxy.
//!
//! Virtual hosts are chosen by the request's host, routes by the longest path prefix and
//! header matches (exact, prefix, regex, present, absent), and each route sends to a cluster
//! whose endpoints are balanced by its LB policy (smooth weighted round robin, least request,
//! random, ketama ring hash, maglev), optionally with sticky cookies, active health checks,
//! outlier ejection, retries within a budget, timeouts and circuit breakers. Routes may rewrite
//! the host, add and remove request and response headers, and override the cluster's timeout
//! and retry policy. Every request carries an `X-Request-Id` (kept if valid, else generated).
//! TLS is terminated with rustls (certificates by SNI), and clusters may speak TLS to their
//! endpoints (SNI, verification, client certificates, ALPN). TCP and UDP listeners forward whole
//! connections or sessions to a cluster the same way. [`run_from_file`] runs it all from a
//! YAML or JSON file, with an admin listener for metrics and state dumps. The routing state
//! lives in an immutable snapshot behind an [`arc_swap::ArcSwap`]: every request
//! does one `load()` and sees one consistent set of routes, endpoints and balancer state, while
//! [`Proxy::apply`] and [`Proxy::update_endpoints`] build the next snapshot off the request path
//! and swap it in.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_proxy::{Cluster, Config, Endpoint, LbPolicy, Proxy, Route, VirtualHost};
//!
//! let proxy = Proxy::new(Config {
//!     virtual_hosts: vec![VirtualHost {
//!         name: "hello".into(),
//!         domains: vec!["hello.localhost".into()],
//!         routes: vec![Route { path_prefix: "/".into(), cluster: "hello".into(), ..Route::default() }],
//!     }],
//!     clusters: vec![Cluster {
//!         name: "hello".into(),
//!         lb_policy: LbPolicy::RoundRobin,
//!         endpoints: vec![Endpoint::new("127.0.0.1:8080".parse()?)],
//!         connect_timeout_ms: 1000,
//!         ..Cluster::default()
//!     }],
//!     ..Config::default()
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! proxy.serve_http(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Layout: `config` is inert serde data; `snapshot` validates and builds it; `balance` picks
//! endpoints; `health` and `checker` decide which are usable; `sticky` signs affinity
//! cookies; `http` handles one request (`http::policy` applies a route's rewrites);
//! `server` accepts and drains connections (`tls` terminates TLS, `head_timeout` answers 408
//! to slow clients); `tcp` and `udp` are the L4 listeners (`proxy_protocol` writes PROXY
//! headers); `upstream` holds the per-cluster connection pools (`connector` opens the
//! connections of clusters with TLS or circuit breakers, which `breaker` bounds); `run` binds listeners from a
//! file and reloads it; `admin` and `metrics` are the admin listener.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod admin;
mod balance;
mod breaker;
mod checker;
mod config;
mod connector;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod head_timeout;
mod health;
mod http;
mod metrics;
mod proxy;
mod proxy_protocol;
mod run;
mod server;
mod snapshot;
mod sticky;
mod tcp;
mod tls;
mod udp;
mod upstream;

pub use config::{
    Admin, Certificate, CircuitBreakers, Cluster, Config, Endpoint, HashPolicy, HeaderMatch,
    HeaderToAdd, HealthCheck, LbPolicy, Limits, Listener, ListenerProtocol, ListenerTls,
    OutlierDetection, ProxyProtocol, RequestIdPolicy, RetryPolicy, Route, StickySessions,
    UpstreamProtocol, UpstreamTls, VirtualHost,
};
pub use error::ConfigError;
pub use proxy::Proxy;
pub use run::{Listeners, RunError, load_config, run_from_file};
