//! Circuit breakers: past a cluster's limit, 503 at once and an overflow metric.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_proxy::{Admin, CircuitBreakers, Cluster, Config, Listeners, Proxy, UpstreamTls};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Backend, Harness, TestClient, cluster, vhost};

struct Served {
    client: TestClient,
    admin: SocketAddr,
    _listeners: Listeners,
    _proxy: Proxy,
}

async fn serve(cluster: Cluster) -> Served {
    // The admin listener needs a fixed address: one the kernel just handed out.
    let admin = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config {
        virtual_hosts: vec![vhost("v", &["*"], &[("/", "c")])],
        clusters: vec![cluster],
        admin: Some(Admin { address: admin }),
        ..Config::default()
    };
    let proxy = Proxy::new(config.clone()).unwrap();
    let mut listeners = Listeners::default();
    listeners.reconcile(&proxy, &config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve_http(listener, std::future::pending()).await });
    Served {
        client: Harness::client_for(addr),
        admin,
        _listeners: listeners,
        _proxy: proxy,
    }
}

async fn metrics(admin: SocketAddr) -> String {
    Harness::client_for(admin)
        .get("admin", "/metrics")
        .await
        .body
}

fn limited(name: &str, addrs: &[SocketAddr], limits: CircuitBreakers) -> Cluster {
    Cluster {
        circuit_breakers: Some(limits),
        ..cluster(name, addrs)
    }
}

/// Two concurrent GETs of "/slow" (300 ms at the backend): their statuses and bodies, sorted.
async fn two_slow(client: &TestClient) -> Vec<(StatusCode, String)> {
    let (a, b) = tokio::join!(client.get("any", "/slow"), client.get("any", "/slow"));
    let mut replies = vec![(a.status, a.body), (b.status, b.body)];
    replies.sort();
    replies
}

#[tokio::test]
async fn max_requests_refuses_the_request_over_the_limit() {
    let b = Backend::start("b").await;
    let served = serve(limited(
        "c",
        &[b.addr],
        CircuitBreakers {
            max_requests: 1,
            ..CircuitBreakers::default()
        },
    ))
    .await;
    let started = Instant::now();
    assert_eq!(
        two_slow(&served.client).await,
        [
            (StatusCode::OK, "b".to_owned()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream overflow\n".to_owned()
            )
        ]
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Below the limit again: served.
    assert_eq!(served.client.get("any", "/").await.status, StatusCode::OK);
    let metrics = metrics(served.admin).await;
    assert!(
        metrics.contains("berth_proxy_cluster_overflow_total{cluster=\"c\",kind=\"requests\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("berth_proxy_cluster_breaker_remaining{cluster=\"c\",kind=\"requests\"} 1"),
        "nothing in flight any more: {metrics}"
    );
}

#[tokio::test]
async fn max_connections_refuses_a_request_that_needs_another_connection() {
    let b = Backend::start("b").await;
    let served = serve(limited(
        "c",
        &[b.addr],
        CircuitBreakers {
            max_connections: 1,
            ..CircuitBreakers::default()
        },
    ))
    .await;
    assert_eq!(
        two_slow(&served.client).await,
        [
            (StatusCode::OK, "b".to_owned()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream overflow\n".to_owned()
            )
        ]
    );
    // The one connection is free again and reused.
    for _ in 0..3 {
        assert_eq!(served.client.get("any", "/").await.status, StatusCode::OK);
    }
    let metrics = metrics(served.admin).await;
    assert!(
        metrics
            .contains("berth_proxy_cluster_overflow_total{cluster=\"c\",kind=\"connections\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("overflow_total{cluster=\"c\",kind=\"requests\"}"),
        "no other breaker tripped: {metrics}"
    );
    assert!(
        metrics.contains(
            "berth_proxy_cluster_breaker_remaining{cluster=\"c\",kind=\"connections\"} 0"
        ),
        "the pooled connection stays open and counted: {metrics}"
    );
}

#[tokio::test]
async fn max_pending_refuses_requests_waiting_for_a_connection() {
    // An endpoint that accepts TCP and never answers the TLS handshake: each request waits
    // for its connection until the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held: Vec<TcpStream> = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut c = limited(
        "c",
        &[silent_addr],
        CircuitBreakers {
            max_pending_requests: 1,
            ..CircuitBreakers::default()
        },
    );
    c.connect_timeout_ms = 500;
    c.tls = Some(UpstreamTls {
        ca_pem: Some(crate::upstream_tls::Ca::new().pem),
        ..UpstreamTls::default()
    });
    let served = serve(c).await;
    let client = served.client.clone();
    let first = tokio::spawn(async move { client.get("any", "/").await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let second = served.client.get("any", "/").await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "upstream overflow\n")
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "refused at once, not after the connect timeout"
    );
    assert_eq!(first.await.unwrap(), StatusCode::BAD_GATEWAY);
    let metrics = metrics(served.admin).await;
    assert!(
        metrics.contains("berth_proxy_cluster_overflow_total{cluster=\"c\",kind=\"pending\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn zero_limits_are_refused_by_name() {
    let error = Proxy::new(Config {
        clusters: vec![limited(
            "c",
            &[],
            CircuitBreakers {
                max_pending_requests: 0,
                ..CircuitBreakers::default()
            },
        )],
        ..Config::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("cluster \"c\": circuit_breakers.max_pending_requests: must be at least 1"),
        "{error}"
    );
}

#[tokio::test]
async fn tcp_listeners_honour_max_connections() {
    use berth_proxy::{Listener, ListenerProtocol};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let [tcp, admin] = {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        [a.local_addr().unwrap(), b.local_addr().unwrap()]
    };
    let config = Config {
        clusters: vec![limited(
            "c",
            &[echo_addr],
            CircuitBreakers {
                max_connections: 1,
                ..CircuitBreakers::default()
            },
        )],
        listeners: vec![Listener {
            name: "tcp".into(),
            address: tcp,
            protocol: ListenerProtocol::Tcp,
            cluster: Some("c".into()),
            proxy_protocol: None,
            idle_timeout_ms: None,
            tls: None,
            virtual_host: None,
        }],
        admin: Some(Admin { address: admin }),
        ..Config::default()
    };
    let proxy = Proxy::new(config.clone()).unwrap();
    let mut listeners = Listeners::default();
    listeners.reconcile(&proxy, &config).await.unwrap();

    let mut first = TcpStream::connect(tcp).await.unwrap();
    first.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"one");
    // The second connection is accepted, then closed without reaching the endpoint.
    let mut second = TcpStream::connect(tcp).await.unwrap();
    let _ = second.write_all(b"two").await;
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("the refused connection was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let metrics = metrics(admin).await;
    assert!(
        metrics
            .contains("berth_proxy_cluster_overflow_total{cluster=\"c\",kind=\"connections\"} 1"),
        "{metrics}"
    );
    // Once the first closes, a new one gets through.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(tcp).await.unwrap();
    third.write_all(b"333").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"333");
}
