//! Integration tests over real sockets on 127.0.0.1, port 0 only.

mod balancing;
mod breakers;
mod failures;
mod h2c;
mod head_limits;
mod headers;
mod health;
mod listener_host;
mod request_id;
mod resilience;
mod reuse;
mod route_policy;
mod routing;
mod run_file;
mod shutdown;
mod support;
mod tcp_idle;
mod tls;
mod updates;
mod upgrade;
mod upstream_tls;
