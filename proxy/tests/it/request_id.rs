//! `X-Request-Id`: kept when valid, generated otherwise, sent upstream and back.

use std::collections::HashSet;

use berth_proxy::{Config, Proxy, RequestIdPolicy};
use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{Backend, Harness, TestClient, cluster, vhost};

async fn serve(policy: RequestIdPolicy) -> (Backend, TestClient) {
    let b = Backend::start("b").await;
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("v", &["app.test"], &[("/", "c")])],
        clusters: vec![cluster("c", &[b.addr])],
        request_id: policy,
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { proxy.serve_http(listener, std::future::pending()).await });
    (b, Harness::client_for(addr))
}

/// The id the backend received (from its /echo body) and the one the client got back.
async fn ids(client: &TestClient, sent: Option<&str>) -> (Option<String>, Option<String>) {
    let headers: Vec<(&str, &str)> = sent.map(|id| ("x-request-id", id)).into_iter().collect();
    let reply = client
        .send("app.test", "GET", "/echo", Bytes::new(), &headers)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let upstream: Vec<String> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::to_owned)
        .collect();
    assert!(upstream.len() <= 1, "one id upstream: {upstream:?}");
    let returned = reply
        .headers
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (upstream.into_iter().next(), returned)
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[tokio::test]
async fn valid_ids_are_kept_others_generated_and_unique() {
    let (_b, client) = serve(RequestIdPolicy::Keep).await;
    let (upstream, returned) = ids(&client, Some("trace-42.a:b")).await;
    assert_eq!(upstream.as_deref(), Some("trace-42.a:b"));
    assert_eq!(returned.as_deref(), Some("trace-42.a:b"));

    let mut seen = HashSet::new();
    for sent in [None, Some("has space"), Some("semi;colon"), Some("")] {
        let (upstream, returned) = ids(&client, sent).await;
        let upstream = upstream.expect("an id went upstream");
        assert!(is_uuid(&upstream), "{upstream:?}");
        assert_eq!(Some(&upstream), returned.as_ref(), "the same id comes back");
        assert!(seen.insert(upstream));
    }
    for _ in 0..50 {
        assert!(seen.insert(ids(&client, None).await.0.unwrap()));
    }

    // Answers the proxy makes itself carry one too.
    let reply = client.get("nowhere.test", "/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(is_uuid(reply.headers["x-request-id"].to_str().unwrap()));
}

#[tokio::test]
async fn generate_replaces_and_off_passes_through() {
    let (_b, client) = serve(RequestIdPolicy::Generate).await;
    let (upstream, returned) = ids(&client, Some("client-chosen")).await;
    let upstream = upstream.unwrap();
    assert!(is_uuid(&upstream), "{upstream}");
    assert_eq!(returned, Some(upstream));

    let (_b, client) = serve(RequestIdPolicy::Off).await;
    assert_eq!(ids(&client, None).await, (None, None));
    let (upstream, returned) = ids(&client, Some("bad id")).await;
    assert_eq!(
        upstream.as_deref(),
        Some("bad id"),
        "passed through untouched"
    );
    assert_eq!(returned, None);
}
