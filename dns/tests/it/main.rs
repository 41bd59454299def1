//! Integration tests: the server on real loopback sockets (port 0), queried with hickory-proto
//! messages over tokio sockets.

mod dig;
mod forwarding;
mod records;
mod reload;
mod scale;
mod support;
mod transport;
mod updates;
mod workers;
