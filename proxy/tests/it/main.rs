//! Integration tests over real sockets on 127.0.0.1, port 0 only.

mod balancing;
mod failures;
mod h2c;
mod headers;
mod health;
mod resilience;
mod routing;
mod run_file;
mod shutdown;
mod support;
mod tls;
mod updates;
mod upgrade;
