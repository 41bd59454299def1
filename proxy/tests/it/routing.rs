use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;

use crate::support::Harness;

#[tokio::test]
async fn host_routing_round_robins_over_all_backends() {
    let h = Harness::start().await;
    let mut seen = BTreeMap::new();
    // Ten full rotations, whatever the starting position.
    for _ in 0..30 {
        let reply = h.get("hello.localhost", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.headers["x-backend"],
            reply.body.as_str(),
            "response headers streamed back"
        );
        *seen.entry(reply.body).or_insert(0) += 1;
    }
    let want: BTreeMap<String, i32> = h.backends.iter().map(|b| (b.name.to_owned(), 10)).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn host_matching_ignores_port_and_case() {
    let h = Harness::start().await;
    let reply = h.get("HELLO.Localhost:8080", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.starts_with('b'), "{reply:?}");
}

#[tokio::test]
async fn unknown_host_is_404() {
    let h = Harness::start().await;
    let reply = h.get("nobody.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, "no virtual host for this host\n");
}

#[tokio::test]
async fn unmatched_path_is_404() {
    let h = Harness::start().await;
    assert_eq!(
        h.get("api.localhost", "/api/users").await.status,
        StatusCode::OK
    );
    let reply = h.get("api.localhost", "/apix").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body, "no route for this path\n");
}

#[tokio::test]
async fn method_query_and_body_are_forwarded() {
    let h = Harness::start().await;
    let reply = h
        .send(
            "hello.localhost",
            "POST",
            "/echo?x=1&y=2",
            Bytes::from_static(b"payload"),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.starts_with("POST /echo?x=1&y=2\n"),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("\n\npayload"), "{}", reply.body);
    assert!(reply.body.contains("content-length: 7\n"), "{}", reply.body);
}
