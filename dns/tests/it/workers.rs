//! The worker path: SO_REUSEPORT sockets served by threads (recvmmsg/sendmmsg), TCP on the same
//! port, per-service updates at 100 a second while querying, metrics.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
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
async fn every_rule_on_the_worker_path() {
    let mut zone = hello_zone();
    zone.services.push(service("web", 2, 7));
    zone.services[1].vip = Some("10.96.0.7".parse().unwrap());
    let server = TestServer::start_workers(zone, 2).await;

    // A (headless), over UDP and TCP on the same port.
    for response in [
        server
            .udp("hello.default.svc.berth.local.", RecordType::A)
            .await,
        server
            .tcp("hello.default.svc.berth.local.", RecordType::A)
            .await,
    ] {
        assert_eq!(addresses(&response), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert!(response.metadata.authoritative);
    }
    // VIP service: the VIP only.
    let web = server
        .udp("web.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(
        addresses(&web),
        vec!["10.96.0.7".parse::<IpAddr>().unwrap()]
    );
    // SRV with additionals.
    let srv = server
        .udp("_http._tcp.web.default.svc.berth.local.", RecordType::SRV)
        .await;
    assert_eq!(srv.answers.len(), 2);
    assert_eq!(srv.additionals.len(), 2);
    // PTR of an instance and of the VIP.
    let ptr = server.udp("2.7.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert!(
        matches!(&ptr.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web-1.web.default.svc.berth.local.")
    );
    let vip = server.udp("7.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert!(
        matches!(&vip.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.berth.local.")
    );
    // TXT version.
    let txt = server
        .udp("dns-version.berth.local.", RecordType::TXT)
        .await;
    assert_eq!(txt.answers.len(), 1);
    // NXDOMAIN and NODATA with the SOA; empty non-terminal NOERROR.
    let nx = server
        .udp("nope.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = server
        .udp("web.default.svc.berth.local.", RecordType::MX)
        .await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty() && !nodata.authorities.is_empty());
    let ent = server.udp("default.svc.berth.local.", RecordType::A).await;
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
    // The question comes back as sent.
    let name = "WeB.DeFaUlT.sVc.BeRtH.lOcAl.";
    let mixed = server.udp(name, RecordType::A).await;
    assert_eq!(mixed.queries[0].name().to_string(), name);
    assert_eq!(mixed.answers[0].name.to_string(), name);
    // ANY: one RRset.
    let any = server.udp("berth.local.", RecordType::ANY).await;
    assert_eq!(any.answers.len(), 1);
    // Out of zone without forwarding: REFUSED.
    let refused = server.udp("example.com.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

    let metrics = server.server.metrics_text();
    assert!(
        metrics.contains(r#"berth_dns_queries_total{qtype="A",rcode="NOERROR"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"rcode="NXDOMAIN""#), "{metrics}");
    assert!(metrics.contains("berth_dns_zone_revision 1"), "{metrics}");
    assert!(
        metrics.contains("berth_dns_answer_duration_seconds_count"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn many_queries_in_flight_are_all_answered() {
    let server = TestServer::start_workers(hello_zone(), 2).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp).await.unwrap();
    // A burst larger than one recvmmsg batch, each with its own id.
    let mut sent = HashSet::new();
    for id in 0..200u16 {
        let mut bytes = query("hello.default.svc.berth.local.", RecordType::A, id % 2 == 0);
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        socket.send(&bytes).await.unwrap();
        sent.insert(id);
    }
    let mut buf = vec![0; 2048];
    while !sent.is_empty() {
        let len = timeout(STEP, socket.recv(&mut buf)).await.unwrap().unwrap();
        let response = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(sent.remove(&response.metadata.id));
    }
    server.stop().await;
}

/// 100 single-service updates a second for 1.5 s while a client queries the changing service:
/// every answer is of one generation, PTRs follow, and a query after an update sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_updates_per_second_never_show_a_mixed_answer() {
    const ENDPOINTS: u8 = 3;
    let mut zone = Zone::default();
    // Other services that stay, so that updates are partial.
    for n in 0..200u8 {
        zone.services.push(service(&format!("other{n}"), 2, 200));
        zone.services.last_mut().unwrap().namespace = format!("ns{n}");
    }
    zone.services.push(service("flip", ENDPOINTS, 1));
    let server = TestServer::start_workers(zone, 1).await;
    let done = Arc::new(AtomicBool::new(false));
    let updater = {
        let dns = server.server.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut applied = 0u32;
            while start.elapsed() < Duration::from_millis(1500) {
                applied += 1;
                let generation = (applied % 250) as u8 + 1;
                dns.apply_service(service("flip", ENDPOINTS, generation))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            done.store(true, Ordering::Relaxed);
            applied
        })
    };
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp).await.unwrap();
    let mut buf = vec![0; 2048];
    let srv = query(
        "_http._tcp.flip.default.svc.berth.local.",
        RecordType::SRV,
        true,
    );
    let mut generations = HashSet::new();
    let mut answers = 0u32;
    while !done.load(Ordering::Relaxed) && answers < 1_000_000 {
        socket.send(&srv).await.unwrap();
        let len = timeout(STEP, socket.recv(&mut buf)).await.unwrap().unwrap();
        let response = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(response.answers.len(), usize::from(ENDPOINTS), "{response}");
        let seen: Vec<u8> = response
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.octets()[2]),
                _ => None,
            })
            .collect();
        assert_eq!(seen.len(), usize::from(ENDPOINTS), "{response}");
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "mixed: {response}");
        generations.insert(seen[0]);
        answers += 1;
    }
    let applied = timeout(STEP, updater).await.unwrap().unwrap();
    assert!(applied >= 50, "only {applied} updates");
    assert!(generations.len() > 10, "saw only {generations:?}");
    assert_eq!(server.server.revision(), u64::from(applied) + 1);

    // Read-your-writes: the next query after apply_service returns sees the new addresses and
    // PTRs; the old PTRs are gone.
    server
        .server
        .apply_service(service("flip", ENDPOINTS, 251))
        .unwrap();
    let a = server
        .udp("flip.default.svc.berth.local.", RecordType::A)
        .await;
    assert!(
        addresses(&a)
            .iter()
            .all(|ip| ip.to_string().starts_with("10.0.251."))
    );
    let ptr = server
        .udp("1.251.0.10.in-addr.arpa.", RecordType::PTR)
        .await;
    assert_eq!(ptr.answers.len(), 1);
    let old = server.udp("1.1.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(old.metadata.response_code, ResponseCode::Refused);
    // The other services were kept.
    let other = server
        .udp("other7.ns7.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(addresses(&other).len(), 2);
    assert!(server.server.remove_service("default", "flip").unwrap());
    let gone = server
        .udp("flip.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}
