//! Transport behaviour: TCP framing and pipelining, UDP truncation, hostile input.

use berth_dns::Zone;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::support::{
    STEP, TestServer, addresses, hello_zone, query, service, tcp_receive, tcp_send, udp_exchange,
};

#[tokio::test]
async fn tcp_answers_pipelined_queries_in_order() {
    let server = TestServer::start(hello_zone()).await;
    let first = query("hello.default.svc.berth.local.", RecordType::A, false);
    let second = query(
        "_http._tcp.hello.default.svc.berth.local.",
        RecordType::SRV,
        false,
    );
    let mut stream = TcpStream::connect(server.tcp).await.unwrap();
    // Both queries in one write, before reading anything.
    let mut both = Vec::new();
    for bytes in [&first, &second] {
        both.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        both.extend_from_slice(bytes);
    }
    stream.write_all(&both).await.unwrap();
    let one = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
    let two = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
    assert_eq!(
        one.metadata.id,
        Message::from_vec(&first).unwrap().metadata.id
    );
    assert_eq!(
        two.metadata.id,
        Message::from_vec(&second).unwrap().metadata.id
    );
    assert_eq!(one.queries[0].query_type(), RecordType::A);
    assert_eq!(two.answers.len(), 3);

    // The connection stays open for more.
    tcp_send(&mut stream, &first).await;
    let three = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
    assert_eq!(three.answers.len(), 1);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn large_udp_answer_without_edns_is_truncated() {
    let zone = Zone {
        services: vec![service("wide", 40, 0)],
        ..Zone::default()
    };
    let server = TestServer::start(zone).await;
    let name = "wide.default.svc.berth.local.";

    // 40 A records: more than 600 octets.
    let tcp = server.tcp(name, RecordType::A).await;
    assert_eq!(tcp.answers.len(), 40);
    assert!(tcp.to_vec().unwrap().len() > 600);

    let udp = udp_exchange(server.udp, &query(name, RecordType::A, false)).await;
    assert!(udp.len() <= 512);
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    assert_eq!(udp.queries.len(), 1);

    let edns = udp_exchange(server.udp, &query(name, RecordType::A, true)).await;
    let edns = Message::from_vec(&edns).unwrap();
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 40);
    server.stop().await;
}

#[tokio::test]
async fn garbage_does_not_kill_the_server() {
    let server = TestServer::start(hello_zone()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x2545_f491_u32;
    for len in [0usize, 1, 5, 11, 12, 13, 40, 300, 512, 1500] {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift: varied bytes without a dependency.
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed.to_le_bytes()[0]
            })
            .collect();
        socket.send_to(&garbage, server.udp).await.unwrap();

        let mut stream = TcpStream::connect(server.tcp).await.unwrap();
        tcp_send(&mut stream, &garbage).await;
        // The server either answers (FORMERR and the like) or closes; it never hangs.
        let mut buf = vec![0; 65535];
        let read = timeout(STEP, stream.read(&mut buf)).await.unwrap();
        assert!(read.is_ok());
    }
    // A header with a bad question gets FORMERR back.
    let mut bad = query("hello.default.svc.berth.local.", RecordType::A, false);
    bad.truncate(20);
    let formerr = Message::from_vec(&udp_exchange(server.udp, &bad).await).unwrap();
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);

    // And the server still answers both ways.
    let udp = server
        .udp("hello.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(addresses(&udp).len(), 1);
    let tcp = server
        .tcp("hello.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(addresses(&tcp).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_tcp_connections() {
    let server = TestServer::start(hello_zone()).await;
    let mut idle = TcpStream::connect(server.tcp).await.unwrap();
    // Make sure the connection is being served before stopping.
    tcp_send(&mut idle, &query("berth.local.", RecordType::SOA, false)).await;
    tcp_receive(&mut idle).await;
    server.stop().await;
    let mut buf = [0; 16];
    let read = timeout(STEP, idle.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
