//! Integration tests over real sockets on 127.0.0.1, port 0 only.

mod failures;
mod h2c;
mod headers;
mod routing;
mod shutdown;
mod support;
mod updates;
