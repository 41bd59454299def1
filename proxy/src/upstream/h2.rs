//! HTTP/2 towards upstreams: hyper-util's pooled client, one per endpoint.
//!
//! An HTTP/2 request carries its host in the `:authority` pseudo-header, which hyper takes
//! from the request's URI; RFC 9113 §8.3.1 wants the host there (a `Host` header naming
//! another authority makes the request malformed), so the URI holds the client's (or the
//! route's rewritten) host, not the endpoint's address. hyper-util's client connects to, and
//! pools by, the URI's authority: here each endpoint gets a client of its own whose connector
//! ([`ToEndpoint`]) always dials that endpoint, whatever the URI says.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::{Builder, Client};

use crate::http::RequestBody;

/// Dials one endpoint for every URI it is asked for.
#[derive(Clone, Debug)]
pub(crate) struct ToEndpoint<C> {
    inner: C,
    endpoint: Uri,
}

impl<C: tower_service::Service<Uri>> tower_service::Service<Uri> for ToEndpoint<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _host: Uri) -> Self::Future {
        self.inner.call(self.endpoint.clone())
    }
}

/// The HTTP/2 clients of one cluster, one per endpoint, made on first use. A client unused for
/// `forget_after` (by then hyper-util has closed its idle connections) is dropped the next time
/// the set grows past twice the size it had after the last such sweep, so endpoints that come
/// and go do not pile up.
pub(crate) struct PerEndpoint<C> {
    builder: Builder,
    connector: C,
    forget_after: Duration,
    clients: Mutex<Clients<C>>,
}

struct Clients<C> {
    by_endpoint: HashMap<SocketAddr, (Client<ToEndpoint<C>, RequestBody>, Instant)>,
    sweep_at: usize,
}

/// The size below which the set is never swept.
const MIN_SWEEP: usize = 16;

impl<C> PerEndpoint<C>
where
    ToEndpoint<C>: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    C: Clone,
{
    pub(crate) fn new(builder: Builder, connector: C, forget_after: Duration) -> Self {
        Self {
            builder,
            connector,
            forget_after,
            clients: Mutex::new(Clients {
                by_endpoint: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The client whose connections go to `endpoint`.
    pub(crate) fn client(
        &self,
        endpoint: SocketAddr,
    ) -> Result<Client<ToEndpoint<C>, RequestBody>, http::Error> {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((client, used)) = clients.by_endpoint.get_mut(&endpoint) {
            *used = now;
            return Ok(client.clone());
        }
        if clients.by_endpoint.len() >= clients.sweep_at {
            let forget_after = self.forget_after;
            clients
                .by_endpoint
                .retain(|_, (_, used)| now.duration_since(*used) < forget_after);
            clients.sweep_at = (clients.by_endpoint.len() * 2).max(MIN_SWEEP);
        }
        let client = self.builder.build(ToEndpoint {
            inner: self.connector.clone(),
            endpoint: endpoint_uri(endpoint)?,
        });
        clients.by_endpoint.insert(endpoint, (client.clone(), now));
        Ok(client)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_endpoint
            .len()
    }
}

impl<C> fmt::Debug for PerEndpoint<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PerEndpoint")
            .field("endpoints", &clients.by_endpoint.len())
            .finish_non_exhaustive()
    }
}

/// `http://ADDR/`: what the connectors dial (IPv6 in brackets).
fn endpoint_uri(endpoint: SocketAddr) -> Result<Uri, http::Error> {
    Uri::builder()
        .scheme("http")
        .authority(endpoint.to_string())
        .path_and_query("/")
        .build()
}

#[cfg(test)]
mod tests {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    use super::*;

    fn per_endpoint(forget_after: Duration) -> PerEndpoint<HttpConnector> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(true);
        PerEndpoint::new(builder, HttpConnector::new(), forget_after)
    }

    #[test]
    fn endpoint_uris_bracket_ipv6() {
        assert_eq!(
            endpoint_uri("[::1]:8080".parse().unwrap())
                .unwrap()
                .authority()
                .unwrap(),
            "[::1]:8080"
        );
        assert_eq!(
            endpoint_uri("10.0.0.1:80".parse().unwrap())
                .unwrap()
                .authority()
                .unwrap(),
            "10.0.0.1:80"
        );
    }

    #[tokio::test]
    async fn one_client_per_endpoint_and_unused_ones_are_forgotten() {
        let clients = per_endpoint(Duration::ZERO);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        clients.client(a).unwrap();
        clients.client(a).unwrap();
        assert_eq!(clients.len(), 1, "the same endpoint reuses its client");
        // Endpoints that come and go: with everything unused at once (forget_after zero), the
        // set is swept whenever it reaches its threshold and never holds more than that.
        for port in 2..1000 {
            clients
                .client(SocketAddr::from(([127, 0, 0, 1], port)))
                .unwrap();
            assert!(clients.len() <= MIN_SWEEP, "{}", clients.len());
        }

        let kept = per_endpoint(Duration::from_secs(3600));
        for port in 1..=100 {
            kept.client(SocketAddr::from(([127, 0, 0, 1], port)))
                .unwrap();
        }
        assert_eq!(kept.len(), 100, "clients in use are kept");
    }
}
