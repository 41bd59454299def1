//! Forwarding to an upstream. The upstream is always a server these tests start on loopback (a
//! second berth-dns authoritative for `example.test`, or a socket that never answers): no test
//! queries a real resolver.

use std::time::{Duration, Instant};

use berth_dns::{DnsServer, ForwardConfig, Zone};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::support::{TestServer, addresses, hello_zone, service};

/// The upstream: `app.default.svc.example.test` A 10.0.9.1 and .2, TTL 30.
async fn upstream() -> TestServer {
    TestServer::start(Zone {
        origin: "example.test".into(),
        ttl: 30,
        services: vec![service("app", 2, 9)],
        ..Zone::default()
    })
    .await
}

fn forwarding_zone(upstream: std::net::SocketAddr, timeout_ms: u64) -> Zone {
    Zone {
        forward: Some(ForwardConfig {
            upstreams: vec![upstream],
            timeout_ms,
            ..ForwardConfig::default()
        }),
        ..hello_zone()
    }
}

#[tokio::test]
async fn names_outside_the_zone_are_forwarded_and_cached() {
    let upstream = upstream().await;
    let server = TestServer::start_workers(forwarding_zone(upstream.udp, 1000), 1).await;
    let name = "App.Default.svc.Example.Test.";
    let response = server.udp(name, RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&response).len(), 2);
    assert_eq!(response.queries[0].name().to_string(), name);
    // The cluster zone is still answered here, not forwarded.
    let local = server
        .udp("hello.default.svc.berth.local.", RecordType::A)
        .await;
    assert!(local.metadata.authoritative);
    // Negative answers too.
    let nx = server.udp("missing.example.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Over TCP as well.
    let tcp = server
        .tcp("app.default.svc.example.test.", RecordType::A)
        .await;
    assert_eq!(addresses(&tcp).len(), 2);

    // With the upstream gone, the cache still answers, within the TTL, and ages it.
    upstream.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cached = server
        .udp("app.default.svc.example.test.", RecordType::A)
        .await;
    assert_eq!(addresses(&cached).len(), 2);
    assert!(
        cached.answers.iter().all(|r| r.ttl < 30 && r.ttl >= 28),
        "{cached}"
    );
    let cached_nx = server.udp("MISSING.example.test.", RecordType::A).await;
    assert_eq!(cached_nx.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_gives_servfail_quickly() {
    // Bound and never read: queries to it time out.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server =
        TestServer::start_workers(forwarding_zone(silent.local_addr().unwrap(), 200), 1).await;
    let start = Instant::now();
    let response = server.udp("www.example.org.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::ServFail);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Nothing cached from a failure: still SERVFAIL, and again within the bound.
    let again = server.tcp("www.example.org.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::ServFail);
    server.stop().await;
    drop(silent);
}

#[tokio::test]
async fn the_single_socket_loop_forwards_too() {
    let upstream = upstream().await;
    let server = TestServer::start(forwarding_zone(upstream.udp, 1000)).await;
    let response = server
        .udp("app.default.svc.example.test.", RecordType::A)
        .await;
    assert_eq!(addresses(&response).len(), 2);
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn turning_forwarding_off_refuses_again() {
    let upstream = upstream().await;
    let server = TestServer::start_workers(forwarding_zone(upstream.udp, 1000), 1).await;
    let name = "app.default.svc.example.test.";
    assert_eq!(addresses(&server.udp(name, RecordType::A).await).len(), 2);
    server.server.apply(hello_zone()).unwrap();
    let refused = server.udp(name, RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    server.stop().await;
    upstream.stop().await;
}

#[test]
fn default_upstreams_come_from_resolv_conf_text() {
    let parsed = berth_dns::parse_resolv_conf("nameserver 127.0.0.53\noptions edns0 trust-ad\n");
    assert_eq!(parsed, vec!["127.0.0.53:53".parse().unwrap()]);
    // An empty upstream list is valid config: the server reads the host's resolv.conf itself.
    let server = DnsServer::new(Zone {
        forward: Some(ForwardConfig::default()),
        ..Zone::default()
    });
    assert!(server.is_ok());
}
