//! End-to-end tests: the `berth` binary as a real process, over real sockets.

mod affinity;
mod auth;
mod dev;
mod dns_cli;
mod fabric;
mod nodes;
mod observe;
mod probes;
mod rollout;
mod store;
mod tls;
mod watch;
