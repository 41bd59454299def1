//! Pooled HTTP/1.1 client connections to upstream endpoints.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::http::RequestBody;

/// How long an idle pooled connection is kept. Shorter than the usual 60 s+ keep-alive of
/// upstream servers, so that the pool rarely picks a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keep-alive on upstream connections, to notice dead peers behind idle pooled connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A cluster's connection pool. Cheap to clone: clones share the pool, which is how a cluster
/// keeps its warm connections across snapshot swaps.
pub(crate) type Upstream = Client<HttpConnector, RequestBody>;

/// A new, empty pool whose connections time out after `connect_timeout`; `h2` speaks HTTP/2
/// with prior knowledge.
pub(crate) fn upstream(connect_timeout: Duration, h2: bool) -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(TCP_KEEPALIVE));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .http2_only(h2)
        .timer(TokioTimer::new())
        .build(connector)
}
