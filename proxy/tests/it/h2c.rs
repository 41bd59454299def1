use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::{Harness, REQUEST_TIMEOUT, collect};

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied() {
    let h = Harness::start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut names = BTreeSet::new();
    for path in ["/", "/", "/", "/echo"] {
        // HTTP/2 carries the host in :authority, here "127.0.0.1:port", a domain of "hello".
        let request = Request::get(format!("http://{}{path}", h.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
            .await
            .unwrap()
            .unwrap();
        let reply = collect(response).await;
        assert_eq!(
            (reply.status, reply.version),
            (StatusCode::OK, Version::HTTP_2)
        );
        if path == "/echo" {
            assert!(reply.body.starts_with("GET /echo\n"), "{}", reply.body);
            assert!(
                reply.body.contains(&format!("\nhost: {}\n", h.addr)),
                "{}",
                reply.body
            );
        } else {
            names.insert(reply.body);
        }
    }
    assert_eq!(names.len(), 3, "round robin over h2 too: {names:?}");
}
