//! berth's per-node L7 HTTP reverse proxy.
//!
//! Virtual hosts are chosen by the request's host, routes by the longest path prefix, and each
//! route sends to a cluster whose endpoints are balanced by smooth weighted round robin. The
//! routing state lives in an immutable snapshot behind an [`arc_swap::ArcSwap`]: every request
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
//!         routes: vec![Route { path_prefix: "/".into(), cluster: "hello".into() }],
//!     }],
//!     clusters: vec![Cluster {
//!         name: "hello".into(),
//!         lb_policy: LbPolicy::RoundRobin,
//!         endpoints: vec![Endpoint::new("127.0.0.1:8080".parse()?)],
//!         connect_timeout_ms: 1000,
//!     }],
//! })?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! proxy.serve_http(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Layout: `config` is inert serde data; `snapshot` validates and builds it; `balance` picks
//! endpoints; `http` handles one request; `server` accepts and drains connections; `upstream`
//! holds the per-cluster connection pools.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::print_stdout)]

mod balance;
mod config;
mod error;
mod http;
mod proxy;
mod server;
mod snapshot;
mod upstream;

pub use config::{Cluster, Config, Endpoint, LbPolicy, Route, VirtualHost};
pub use error::ConfigError;
pub use proxy::Proxy;
