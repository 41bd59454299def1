use bytes::Bytes;
use http::StatusCode;

use crate::support::Harness;

#[tokio::test]
async fn cluster_without_endpoints_is_503() {
    let h = Harness::start().await;
    let reply = h.get("empty.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "no healthy upstream\n");
}

#[tokio::test]
async fn refused_endpoint_alone_is_502() {
    let h = Harness::start().await;
    let reply = h.get("dead.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.body, "upstream connect error\n");
}

#[tokio::test]
async fn refused_endpoint_is_retried_on_a_live_one() {
    let h = Harness::start().await;
    // Half of these pick the dead endpoint first.
    for _ in 0..10 {
        let reply = h.get("mixed.localhost", "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "b0"));
    }
    // The body of a request whose first connect failed is still sent in full.
    for i in 0..4 {
        let body = format!("body {i}");
        let reply = h
            .send(
                "mixed.localhost",
                "PUT",
                "/echo",
                Bytes::from(body.clone()),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.ends_with(&format!("\n\n{body}")),
            "{}",
            reply.body
        );
    }
}
