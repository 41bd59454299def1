//! HTTP/1.1 Upgrade pass-through (WebSocket and others): the request keeps its `Upgrade` and
//! `Connection: upgrade` headers, and when the upstream answers 101 the two connections are
//! spliced until either side closes.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Marks a request whose upgrade is passed through; holds the `Upgrade` header value.
#[derive(Clone, Debug)]
pub(crate) struct Requested(pub(crate) HeaderValue);

/// The `Upgrade` value if `request` asks for a protocol switch (HTTP/1.1, `Connection`
/// listing "upgrade", an `Upgrade` header).
pub(crate) fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: absent from nearly every request, while `Connection` (say "close" or
    // "keep-alive") is common and costs a scan of its tokens.
    let protocol = request.headers().get(header::UPGRADE)?;
    request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| protocol.clone())
}

/// Puts back the headers an upgrade needs after hop-by-hop stripping.
pub(crate) fn restore_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Splices the client's and the upstream's upgraded connections in the background.
pub(crate) fn tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    client: SocketAddr,
    endpoint: SocketAddr,
) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%client, %endpoint, %error, "upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((sent, received)) => {
                tracing::debug!(%client, %endpoint, sent, received, "upgraded connection closed");
            }
            Err(error) => tracing::debug!(%client, %endpoint, %error, "upgraded connection failed"),
        }
    });
}
