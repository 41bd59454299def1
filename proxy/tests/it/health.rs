//! Active checks and passive ejection over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_proxy::{Cluster, Config, HealthCheck, OutlierDetection, Proxy};
use http::StatusCode;
use tokio::net::TcpListener;

use crate::support::{Backend, Harness, KillableBackend, cluster, dead_addr, vhost};

async fn serve(cluster: Cluster) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(Config {
        virtual_hosts: vec![vhost("all", &["*"], &[("/", "c")])],
        clusters: vec![cluster],
        ..Config::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_http(listener, std::future::pending()).await });
    (proxy, addr)
}

#[tokio::test]
async fn active_http_check_takes_a_dead_endpoint_out_and_503_when_none_left() {
    let good = Backend::start("good").await;
    let victim = KillableBackend::start("victim").await;
    let (_proxy, addr) = serve(Cluster {
        health_check: Some(HealthCheck {
            interval_ms: 50,
            timeout_ms: 200,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            http_path: Some("/healthz".into()),
        }),
        // Passive detection off, so that only the active check can take it out.
        outlier_detection: None,
        retries: berth_proxy::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
        ..cluster("c", &[good.addr, victim.addr])
    })
    .await;
    let client = Harness::client_for(addr);
    victim.kill().await;
    // Within a few check intervals every request goes to the live endpoint.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all_ok = true;
        for _ in 0..10 {
            all_ok &= client.get("any", "/").await.status == StatusCode::OK;
        }
        if all_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead endpoint was never taken out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        assert_eq!(client.get("any", "/").await.body, "good");
    }
}

#[tokio::test]
async fn passive_ejection_sends_no_more_requests_to_a_failing_endpoint() {
    let good = Backend::start("good").await;
    let dead = dead_addr().await;
    let (_proxy, addr) = serve(Cluster {
        outlier_detection: Some(OutlierDetection {
            consecutive_failures: 2,
            base_ejection_ms: 60_000,
            ..Default::default()
        }),
        // No retries: every request that reaches the dead endpoint shows as a 502.
        retries: berth_proxy::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
        ..cluster("c", &[good.addr, dead])
    })
    .await;
    let client = Harness::client_for(addr);
    let mut bad_gateways = 0;
    for _ in 0..4 {
        if client.get("any", "/").await.status == StatusCode::BAD_GATEWAY {
            bad_gateways += 1;
        }
    }
    assert_eq!(
        bad_gateways, 2,
        "round robin reaches the dead endpoint twice, then it is ejected"
    );
    for _ in 0..20 {
        assert_eq!(client.get("any", "/").await.body, "good");
    }

    // With every endpoint ejected, 503 comes at once.
    let (_p2, addr2) = serve(Cluster {
        outlier_detection: Some(OutlierDetection {
            consecutive_failures: 1,
            max_ejection_percent: 100,
            ..Default::default()
        }),
        ..cluster("c", &[dead])
    })
    .await;
    let c2 = Harness::client_for(addr2);
    assert_eq!(c2.get("any", "/").await.status, StatusCode::BAD_GATEWAY);
    let started = Instant::now();
    let reply = c2.get("any", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "no healthy upstream\n");
    assert!(started.elapsed() < Duration::from_millis(500));
}
