//! Live updates: applies are visible at once and never mixed with the previous zone.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_dns::Zone;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use crate::support::{STEP, TestServer, addresses, hello_zone, query, service};

#[tokio::test]
async fn apply_is_visible_to_the_next_query() {
    let server = TestServer::start(hello_zone()).await;
    let name = "fresh.default.svc.berth.local.";
    let before = server.udp(name, RecordType::A).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NXDomain);

    let mut zone = hello_zone();
    zone.services.push(service("fresh", 2, 7));
    server.server.apply(zone).unwrap();
    assert_eq!(server.server.revision(), 2);

    let after = server.udp(name, RecordType::A).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    let mut got = addresses(&after);
    got.sort();
    let expected: Vec<IpAddr> = vec!["10.0.7.1".parse().unwrap(), "10.0.7.2".parse().unwrap()];
    assert_eq!(got, expected);
    let tcp = server.tcp(name, RecordType::A).await;
    assert_eq!(addresses(&tcp).len(), 2);
    server.stop().await;
}

/// The generation an address belongs to: its third octet.
fn generation(address: &IpAddr) -> u8 {
    match address {
        IpAddr::V4(v4) => v4.octets()[2],
        IpAddr::V6(_) => panic!("unexpected {address}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_never_show_a_mixed_answer() {
    const ENDPOINTS: u8 = 4;
    let zone = |generation: u8| Zone {
        services: vec![service("flip", ENDPOINTS, generation)],
        ..Zone::default()
    };
    let server = TestServer::start(zone(0)).await;
    let done = Arc::new(AtomicBool::new(false));

    // Generation N puts every endpoint of `flip` in 10.0.N.0/24, for about a second.
    let updater = {
        let dns = server.server.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut applied = 0u32;
            while start.elapsed() < Duration::from_secs(1) && applied < 100_000 {
                applied += 1;
                dns.apply(zone((applied % 250) as u8 + 1)).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            applied
        })
    };

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp).await.unwrap();
    let mut generations = HashSet::new();
    let mut answers = 0u32;
    let mut buf = vec![0; 65535];
    let (a, srv) = (
        query("flip.default.svc.berth.local.", RecordType::A, true),
        query(
            "_http._tcp.flip.default.svc.berth.local.",
            RecordType::SRV,
            true,
        ),
    );
    while !done.load(Ordering::Relaxed) && answers < 1_000_000 {
        for bytes in [&a, &srv] {
            socket.send(bytes).await.unwrap();
            let len = timeout(STEP, socket.recv(&mut buf)).await.unwrap().unwrap();
            let response = Message::from_vec(&buf[..len]).unwrap();
            assert_eq!(response.answers.len(), usize::from(ENDPOINTS));
            // Every address, in answers or additionals, and every SRV target name must come
            // from the same generation.
            let mut seen: Vec<u8> = addresses(&response).iter().map(generation).collect();
            for record in &response.additionals {
                if let RData::A(a) = &record.data {
                    seen.push(generation(&IpAddr::V4(a.0)));
                }
            }
            for record in &response.answers {
                if let RData::SRV(srv) = &record.data {
                    // Targets are flip-<i>.flip...; the generation shows in the additionals,
                    // which must cover every target.
                    assert!(
                        response.additionals.iter().any(|r| r.name == srv.target),
                        "{response}"
                    );
                }
            }
            assert!(
                seen.windows(2).all(|w| w[0] == w[1]),
                "mixed answer: {response}"
            );
            generations.extend(seen.first().copied());
            answers += 1;
        }
    }
    let applied = timeout(STEP, updater).await.unwrap().unwrap();
    assert!(applied > 1);
    assert!(answers > 10, "only {answers} answers");
    assert!(generations.len() > 1, "saw only {generations:?}");
    assert_eq!(server.server.revision(), u64::from(applied) + 1);
    server.stop().await;
}
