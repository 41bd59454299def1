use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::{Harness, REQUEST_TIMEOUT, cluster, collect, endpoints, vhost};

#[tokio::test]
async fn update_endpoints_applies_to_the_next_request() {
    let h = Harness::start().await;
    assert_eq!(h.proxy.revision(), 1);
    h.proxy
        .update_endpoints("hello", endpoints(&[h.backends[1].addr]))
        .unwrap();
    assert_eq!(h.proxy.revision(), 2);
    for _ in 0..5 {
        assert_eq!(h.get("hello.localhost", "/").await.body, "b1");
    }
    h.proxy.update_endpoints("hello", vec![]).unwrap();
    assert_eq!(
        h.get("hello.localhost", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(h.proxy.update_endpoints("nope", vec![]).is_err());
    assert_eq!(h.proxy.revision(), 3, "a failed update swaps nothing");
}

#[tokio::test]
async fn apply_swaps_in_a_new_config() {
    let h = Harness::start().await;
    assert_eq!(
        h.get("new.localhost", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let mut config = h.config();
    config
        .virtual_hosts
        .push(vhost("new", &["new.localhost"], &[("/", "new")]));
    config.clusters.push(cluster("new", &[h.backends[2].addr]));
    h.proxy.apply(config).unwrap();
    assert_eq!(h.proxy.revision(), 2);
    assert_eq!(h.get("new.localhost", "/").await.body, "b2");
}

#[tokio::test]
async fn bad_apply_errors_and_the_old_config_keeps_serving() {
    let h = Harness::start().await;
    let mut bad = h.config();
    bad.clusters[0].endpoints.clear();
    bad.virtual_hosts[0].routes[0].cluster = "missing".into();
    let err = h.proxy.apply(bad).unwrap_err();
    assert!(
        err.to_string().contains("unknown cluster \"missing\""),
        "{err}"
    );
    assert_eq!(h.proxy.revision(), 1);
    for _ in 0..3 {
        assert_eq!(h.get("hello.localhost", "/").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn keep_alive_client_connection_survives_a_swap() {
    let h = Harness::start().await;
    // One client connection, by hand, so that a reconnect would show as an error.
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = || {
        Request::get("/")
            .header("host", "hello.localhost")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let first = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(collect(first).await.status, StatusCode::OK);

    h.proxy
        .update_endpoints("hello", endpoints(&[h.backends[2].addr]))
        .unwrap();
    let mut config = h.config();
    config.clusters[0].endpoints = endpoints(&[h.backends[2].addr]);
    h.proxy.apply(config).unwrap();

    for _ in 0..3 {
        sender.ready().await.expect("connection closed by the swap");
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(collect(reply).await.body, "b2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_swaps_under_load_lose_no_request() {
    let h = Arc::new(Harness::start().await);
    let addrs = h.addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);

    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (h, stop, ok) = (h.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let reply = h.get("hello.localhost", "/").await;
                    if reply.status == StatusCode::OK {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(reply);
                    }
                }
                failures
            })
        })
        .collect();

    // 100 swaps over about a second, each set non-empty and live.
    for i in 0..100 {
        let set = match i % 4 {
            0 => vec![addrs[0]],
            1 => vec![addrs[1], addrs[2]],
            2 => addrs.clone(),
            _ => vec![addrs[2], addrs[0]],
        };
        h.proxy.update_endpoints("hello", endpoints(&set)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);

    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
    }
    assert_eq!(h.proxy.revision(), 101);
    assert!(
        ok.load(Ordering::Relaxed) >= 100,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );
}
