//! berth's control plane and node agent: API objects, the store, the API server and client,
//! controllers, the agent, and the CLI of the one `berth` binary.

pub mod api;
pub mod client;
pub mod controller;
pub mod http_util;
pub mod manifest;
pub mod server;
pub mod store;
