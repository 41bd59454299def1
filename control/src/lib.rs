//! berth's control plane and node agent: API objects, the store, the API server and client,
//! controllers, the agent, and the CLI of the one `berth` binary.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clientconfig;
pub mod controller;
pub mod dev;
pub mod events;
pub mod fsutil;
pub mod hello;
pub mod http_util;
pub mod manifest;
pub mod server;
pub mod signals;
pub mod store;
pub mod tls;
