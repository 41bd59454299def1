//! What the zone answers, over UDP.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::support::{TestServer, addresses, hello_zone};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn service_a() {
    let server = TestServer::start(hello_zone()).await;
    let response = server
        .udp("hello.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(addresses(&response), vec![LOCALHOST]);
    server.stop().await;
}

#[tokio::test]
async fn srv_with_additionals() {
    let server = TestServer::start(hello_zone()).await;
    let response = server
        .udp("_http._tcp.hello.default.svc.berth.local.", RecordType::SRV)
        .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    let mut srv: Vec<_> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.port, srv.target.to_string(), srv.weight),
            other => panic!("{other:?}"),
        })
        .collect();
    srv.sort();
    assert_eq!(
        srv,
        ["a", "b", "c"]
            .iter()
            .zip(31001..)
            .map(|(h, p)| (p, format!("hello-{h}.hello.default.svc.berth.local."), 34))
            .collect::<Vec<_>>()
    );
    let mut additional: Vec<_> = response
        .additionals
        .iter()
        .map(|r| (r.name.to_string(), r.data.clone()))
        .collect();
    additional.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<_> = srv
        .iter()
        .map(|(_, target, _)| (target.clone(), RData::A(Ipv4Addr::LOCALHOST.into())))
        .collect();
    assert_eq!(additional, expected);
    server.stop().await;
}

#[tokio::test]
async fn instance_a() {
    let server = TestServer::start(hello_zone()).await;
    let response = server
        .udp("hello-c.hello.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(addresses(&response), vec![LOCALHOST]);
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_with_soa() {
    let server = TestServer::start(hello_zone()).await;
    let response = server
        .udp("nope.default.svc.berth.local.", RecordType::A)
        .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    let soa = &response.authorities[0];
    assert_eq!(soa.name, Name::from_ascii("berth.local.").unwrap());
    assert!(matches!(&soa.data, RData::SOA(soa) if soa.serial == 1 && soa.minimum == 5));
    server.stop().await;
}

#[tokio::test]
async fn nodata_with_soa() {
    let server = TestServer::start(hello_zone()).await;
    let response = server
        .udp("hello.default.svc.berth.local.", RecordType::AAAA)
        .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert!(response.answers.is_empty());
    assert!(matches!(response.authorities[0].data, RData::SOA(_)));
    server.stop().await;
}

#[tokio::test]
async fn empty_non_terminals_are_noerror() {
    let server = TestServer::start(hello_zone()).await;
    for name in [
        "svc.berth.local.",
        "default.svc.berth.local.",
        "_tcp.hello.default.svc.berth.local.",
    ] {
        let response = server.udp(name, RecordType::A).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(response.answers.is_empty());
        assert!(matches!(response.authorities[0].data, RData::SOA(_)));
    }
    server.stop().await;
}

#[tokio::test]
async fn out_of_zone_is_refused() {
    let server = TestServer::start(hello_zone()).await;
    let response = server.udp("example.com.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    assert!(response.answers.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn mixed_case_is_echoed() {
    let server = TestServer::start(hello_zone()).await;
    let name = "HELLO.dEfAuLt.SvC.bErTh.LOCAL.";
    let response = server.udp(name, RecordType::A).await;
    assert_eq!(response.queries[0].name().to_string(), name);
    assert_eq!(response.answers[0].name.to_string(), name);
    assert_eq!(addresses(&response), vec![LOCALHOST]);
    server.stop().await;
}
