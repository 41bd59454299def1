//! Driving the answer logic with wire-format queries, no sockets.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use proptest::prelude::*;

use crate::{DnsServer, EndpointRecord, PortRecord, Protocol, ServiceRecord, Transport, Zone};

fn port(name: &str, port: u16) -> PortRecord {
    PortRecord {
        name: name.into(),
        protocol: Protocol::Tcp,
        port,
    }
}

fn endpoint(hostname: &str, address: &str, ports: Vec<PortRecord>) -> EndpointRecord {
    EndpointRecord {
        hostname: hostname.into(),
        address: address.parse().unwrap(),
        ports,
    }
}

/// `hello` in `default`, headless, three endpoints on 127.0.0.1 serving http on 31001..31003;
/// `web` in `prod` with a VIP and one IPv6 endpoint.
fn zone() -> Zone {
    Zone {
        services: vec![
            ServiceRecord {
                name: "hello".into(),
                namespace: "default".into(),
                vip: None,
                ports: vec![port("http", 80)],
                endpoints: ["a", "b", "c"]
                    .iter()
                    .zip(31001..)
                    .map(|(h, p)| {
                        endpoint(&format!("hello-{h}"), "127.0.0.1", vec![port("http", p)])
                    })
                    .collect(),
            },
            ServiceRecord {
                name: "web".into(),
                namespace: "prod".into(),
                vip: Some("10.96.0.10".parse().unwrap()),
                ports: vec![port("https", 443)],
                endpoints: vec![endpoint("web-1", "fd00::1", vec![])],
            },
        ],
        ..Zone::default()
    }
}

fn server() -> DnsServer {
    DnsServer::new(zone()).unwrap()
}

fn query_bytes(name: &str, record_type: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x1234;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

fn ask_with(server: &DnsServer, name: &str, record_type: RecordType, edns: bool) -> Message {
    let bytes = query_bytes(name, record_type, edns);
    let response = server.answer(&bytes, Transport::Udp).expect("a response");
    assert!(response.len() <= 512 || edns);
    Message::from_vec(&response).unwrap()
}

fn ask(server: &DnsServer, name: &str, record_type: RecordType) -> Message {
    ask_with(server, name, record_type, false)
}

fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn assert_negative(message: &Message, rcode: ResponseCode) {
    assert_eq!(message.metadata.response_code, rcode);
    assert!(message.metadata.authoritative);
    assert!(message.answers.is_empty());
    assert_eq!(message.authorities.len(), 1);
    let soa = &message.authorities[0];
    assert_eq!(soa.name, Name::from_ascii("berth.local.").unwrap());
    let RData::SOA(soa_data) = &soa.data else {
        panic!("not a SOA: {soa:?}");
    };
    assert_eq!(soa.ttl, 5);
    assert_eq!(soa_data.minimum, 5);
}

#[test]
fn headless_service_answers_deduplicated_endpoint_addresses() {
    let response = ask(&server(), "hello.default.svc.berth.local.", RecordType::A);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(response.metadata.authoritative);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert_eq!(response.metadata.id, 0x1234);
    assert!(response.metadata.recursion_desired);
    assert!(!response.metadata.recursion_available);
    assert_eq!(addresses(&response), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert_eq!(response.answers[0].ttl, 5);
    assert!(response.edns.is_none());
}

#[test]
fn service_with_vip_answers_the_vip_only() {
    let server = server();
    let a = ask(&server, "web.prod.svc.berth.local.", RecordType::A);
    assert_eq!(addresses(&a), vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let aaaa = ask(&server, "web.prod.svc.berth.local.", RecordType::AAAA);
    assert_negative(&aaaa, ResponseCode::NoError);
    let instance = ask(&server, "web-1.web.prod.svc.berth.local.", RecordType::AAAA);
    assert_eq!(
        addresses(&instance),
        vec!["fd00::1".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn srv_lists_every_endpoint_with_targets_in_additional() {
    let response = ask(
        &server(),
        "_http._tcp.hello.default.svc.berth.local.",
        RecordType::SRV,
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert!(!response.metadata.truncation);
    let mut srvs: Vec<_> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.port, srv.target.to_string(), srv.priority, srv.weight),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    let targets: Vec<_> = srvs.iter().map(|s| s.1.clone()).collect();
    srvs.sort();
    assert_eq!(
        srvs,
        vec![
            (
                31001,
                "hello-a.hello.default.svc.berth.local.".to_owned(),
                0,
                34
            ),
            (
                31002,
                "hello-b.hello.default.svc.berth.local.".to_owned(),
                0,
                34
            ),
            (
                31003,
                "hello-c.hello.default.svc.berth.local.".to_owned(),
                0,
                34
            ),
        ]
    );
    let additional: Vec<_> = response
        .additionals
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(additional, targets, "additionals follow the SRV order");
    assert!(
        response
            .additionals
            .iter()
            .all(|r| r.data == RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::LOCALHOST)))
    );
}

#[test]
fn instance_name_answers_its_address() {
    let response = ask(
        &server(),
        "hello-b.hello.default.svc.berth.local.",
        RecordType::A,
    );
    assert_eq!(addresses(&response), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert_eq!(
        response.answers[0].name.to_string(),
        "hello-b.hello.default.svc.berth.local."
    );
}

#[test]
fn unknown_names_are_nxdomain_with_soa() {
    let server = server();
    for name in [
        "nope.default.svc.berth.local.",
        "hello.nope.svc.berth.local.",
        "hello-z.hello.default.svc.berth.local.",
        "_grpc._tcp.hello.default.svc.berth.local.",
        "_http._udp.hello.default.svc.berth.local.",
        "x.berth.local.",
        "a.b.hello-a.hello.default.svc.berth.local.",
    ] {
        let response = ask(&server, name, RecordType::A);
        assert_negative(&response, ResponseCode::NXDomain);
    }
}

#[test]
fn existing_names_without_the_type_are_nodata() {
    let server = server();
    for (name, record_type) in [
        ("hello.default.svc.berth.local.", RecordType::AAAA),
        ("hello.default.svc.berth.local.", RecordType::TXT),
        ("hello-a.hello.default.svc.berth.local.", RecordType::SRV),
        ("_http._tcp.hello.default.svc.berth.local.", RecordType::A),
        // Empty non-terminals.
        ("svc.berth.local.", RecordType::A),
        ("default.svc.berth.local.", RecordType::A),
        ("_tcp.hello.default.svc.berth.local.", RecordType::SRV),
        // A declared port without endpoints.
        ("_https._tcp.web.prod.svc.berth.local.", RecordType::SRV),
        ("berth.local.", RecordType::A),
    ] {
        let response = ask(&server, name, record_type);
        assert_negative(&response, ResponseCode::NoError);
    }
}

#[test]
fn apex_has_soa_and_ns() {
    let server = server();
    let soa = ask(&server, "berth.local.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("{soa:?}");
    };
    assert_eq!(data.mname.to_string(), "ns.dns.berth.local.");
    assert_eq!(data.rname.to_string(), "hostmaster.berth.local.");
    assert_eq!(
        (
            data.serial,
            data.refresh,
            data.retry,
            data.expire,
            data.minimum
        ),
        (1, 7200, 1800, 86400, 5)
    );
    assert_eq!(soa.answers[0].ttl, 5);
    let ns = ask(&server, "berth.local.", RecordType::NS);
    assert_eq!(ns.answers.len(), 1);
    assert_eq!(
        ns.answers[0].data,
        RData::NS(hickory_proto::rr::rdata::NS(
            Name::from_ascii("ns.dns.berth.local.").unwrap()
        ))
    );
    // RFC 8482: one RRset, not everything the name holds.
    let any = ask(&server, "berth.local.", RecordType::ANY);
    assert_eq!(any.answers.len(), 1);
}

#[test]
fn names_outside_the_zone_are_refused() {
    let server = server();
    for name in ["example.com.", "local.", ".", "berth.local.evil."] {
        let response = ask(&server, name, RecordType::A);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!response.metadata.authoritative);
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
}

#[test]
fn question_and_owner_keep_the_case_as_sent() {
    let name = "HeLLo-A.hElLo.DeFaUlT.sVc.BeRtH.LoCaL.";
    let response = ask(&server(), name, RecordType::A);
    assert_eq!(response.queries[0].name().to_string(), name);
    assert_eq!(response.answers[0].name.to_string(), name);
    assert_eq!(addresses(&response), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
}

#[test]
fn other_classes_are_refused() {
    let mut message = Message::query();
    let mut query = Query::query(
        Name::from_ascii("hello.default.svc.berth.local.").unwrap(),
        RecordType::A,
    );
    query.set_query_class(DNSClass::CH);
    message.add_query(query);
    let bytes = server()
        .answer(&message.to_vec().unwrap(), Transport::Udp)
        .unwrap();
    let response = Message::from_vec(&bytes).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn edns_queries_get_an_opt_record() {
    let response = ask_with(
        &server(),
        "hello.default.svc.berth.local.",
        RecordType::A,
        true,
    );
    let edns = response.edns.expect("OPT in the response");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
}

#[test]
fn drops_responses_and_headerless_packets() {
    let server = server();
    let mut response = Message::from_vec(&query_bytes(
        "hello.default.svc.berth.local.",
        RecordType::A,
        false,
    ))
    .unwrap();
    response.metadata.message_type = MessageType::Response;
    assert_eq!(
        server.answer(&response.to_vec().unwrap(), Transport::Udp),
        None
    );
    assert_eq!(server.answer(&[], Transport::Udp), None);
    assert_eq!(server.answer(&[0x12, 0x34, 0, 0, 0], Transport::Tcp), None);
}

fn rcode_of(server: &DnsServer, bytes: &[u8]) -> (ResponseCode, Message) {
    let response = server.answer(bytes, Transport::Udp).expect("a response");
    let message = Message::from_vec(&response).unwrap();
    (message.metadata.response_code, message)
}

#[test]
fn malformed_queries_get_formerr() {
    let server = server();
    let valid = query_bytes("hello.default.svc.berth.local.", RecordType::A, false);

    // Header only, claiming a question.
    let (rcode, message) = rcode_of(&server, &valid[..12]);
    assert_eq!(rcode, ResponseCode::FormErr);
    assert_eq!(message.metadata.id, 0x1234);
    assert!(message.queries.is_empty());

    // Question cut short.
    let (rcode, _) = rcode_of(&server, &valid[..valid.len() - 3]);
    assert_eq!(rcode, ResponseCode::FormErr);

    // No question.
    let mut none = valid[..12].to_vec();
    none[5] = 0;
    assert_eq!(rcode_of(&server, &none).0, ResponseCode::FormErr);

    // Two questions.
    let mut two = Message::query();
    for name in [
        "hello.default.svc.berth.local.",
        "web.prod.svc.berth.local.",
    ] {
        two.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    }
    assert_eq!(
        rcode_of(&server, &two.to_vec().unwrap()).0,
        ResponseCode::FormErr
    );

    // Additional count promising a record that is not there.
    let mut missing = valid.clone();
    missing[11] = 1;
    assert_eq!(rcode_of(&server, &missing).0, ResponseCode::FormErr);
}

#[test]
fn other_opcodes_are_not_implemented() {
    let server = server();
    for op_code in [
        OpCode::Notify,
        OpCode::Update,
        OpCode::Status,
        OpCode::Unknown(9),
    ] {
        let mut message = Message::new(7, MessageType::Query, op_code);
        message.add_query(Query::query(
            Name::from_ascii("berth.local.").unwrap(),
            RecordType::SOA,
        ));
        let (rcode, response) = rcode_of(&server, &message.to_vec().unwrap());
        assert_eq!(rcode, ResponseCode::NotImp, "{op_code:?}");
        assert_eq!(response.metadata.op_code, op_code);
    }
}

#[test]
fn unknown_edns_version_is_badvers() {
    let mut message = Message::query();
    message.add_query(Query::query(
        Name::from_ascii("berth.local.").unwrap(),
        RecordType::SOA,
    ));
    let mut edns = Edns::new();
    edns.set_version(1);
    message.set_edns(edns);
    let (rcode, response) = rcode_of(&server(), &message.to_vec().unwrap());
    // BADVERS and BADSIG share the code 16.
    assert_eq!(u16::from(rcode), u16::from(ResponseCode::BADVERS));
    assert_eq!(response.edns.map(|e| e.version()), Some(0));
}

/// A headless service with `n` IPv4 endpoints, each serving http.
fn wide_zone(n: u8) -> Zone {
    Zone {
        services: vec![ServiceRecord {
            name: "wide".into(),
            namespace: "default".into(),
            vip: None,
            ports: vec![],
            endpoints: (0..n)
                .map(|i| {
                    endpoint(
                        &format!("wide-{i}"),
                        &format!("10.0.0.{i}"),
                        vec![port("http", 8080)],
                    )
                })
                .collect(),
        }],
        ..Zone::default()
    }
}

#[test]
fn answers_too_large_for_udp_are_truncated() {
    // 40 A records of 16 octets: 640 octets of answers.
    let server = DnsServer::new(wide_zone(40)).unwrap();
    let name = "wide.default.svc.berth.local.";
    let bytes = query_bytes(name, RecordType::A, false);

    let udp = server.answer(&bytes, Transport::Udp).unwrap();
    assert!(udp.len() <= 512);
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.metadata.truncation);
    assert_eq!(udp.queries.len(), 1);
    assert!(udp.answers.is_empty() && udp.authorities.is_empty() && udp.additionals.is_empty());

    let tcp = Message::from_vec(&server.answer(&bytes, Transport::Tcp).unwrap()).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 40);

    // With EDNS the client's 4096 is capped to 1232, which is enough here.
    let edns = ask_with(&server, name, RecordType::A, true);
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 40);
    assert!(edns.edns.is_some());
}

#[test]
fn truncated_edns_response_keeps_its_opt_record() {
    let server = DnsServer::new(wide_zone(100)).unwrap();
    let bytes = query_bytes("wide.default.svc.berth.local.", RecordType::A, true);
    let response = server.answer(&bytes, Transport::Udp).unwrap();
    assert!(response.len() <= 1232);
    let response = Message::from_vec(&response).unwrap();
    assert!(response.metadata.truncation);
    assert!(response.answers.is_empty());
    assert!(response.edns.is_some());
}

#[test]
fn additionals_that_do_not_fit_are_dropped_without_tc() {
    let server = DnsServer::new(wide_zone(7)).unwrap();
    let response = ask(
        &server,
        "_http._tcp.wide.default.svc.berth.local.",
        RecordType::SRV,
    );
    assert!(!response.metadata.truncation);
    assert_eq!(response.answers.len(), 7);
    assert!(
        response.additionals.len() < 7,
        "{}",
        response.additionals.len()
    );
    let targets: Vec<_> = response
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => srv.target.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    for (additional, target) in response.additionals.iter().zip(&targets) {
        assert_eq!(&additional.name, target);
    }
    let srv_weight = match &response.answers[0].data {
        RData::SRV(srv) => srv.weight,
        _ => unreachable!(),
    };
    assert_eq!(srv_weight, 15);
}

#[test]
fn address_and_srv_sets_rotate() {
    let server = DnsServer::new(wide_zone(4)).unwrap();
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..8 {
        let response = ask(&server, "wide.default.svc.berth.local.", RecordType::A);
        let mut sorted = addresses(&response);
        firsts.insert(sorted[0]);
        sorted.sort();
        assert_eq!(sorted.len(), 4);
    }
    assert_eq!(firsts.len(), 4, "every address comes first in turn");
}

#[test]
fn apply_swaps_the_zone_and_bumps_the_serial() {
    let server = server();
    assert_eq!(server.revision(), 1);
    server.apply(wide_zone(1)).unwrap();
    assert_eq!(server.revision(), 2);
    let gone = ask(&server, "hello.default.svc.berth.local.", RecordType::A);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    let RData::SOA(soa) = &gone.authorities[0].data else {
        panic!()
    };
    assert_eq!(soa.serial, 2);
    let new = ask(
        &server,
        "wide-0.wide.default.svc.berth.local.",
        RecordType::A,
    );
    assert_eq!(addresses(&new), vec!["10.0.0.0".parse::<IpAddr>().unwrap()]);
}

#[test]
fn invalid_zones_are_rejected_and_the_old_one_stays() {
    let server = server();
    let mut bad = zone();
    bad.services[0].name = "Hello_".into();
    let err = server.apply(bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service default/Hello_: name is not a valid DNS label"
    );
    assert_eq!(server.revision(), 1);
    let still = ask(&server, "hello.default.svc.berth.local.", RecordType::A);
    assert_eq!(still.metadata.response_code, ResponseCode::NoError);

    let mut bad = zone();
    bad.services[0].endpoints[1].hostname = "b_".into();
    let err = server.apply(bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "endpoint default/hello/b_: hostname is not a valid DNS label"
    );

    let mut bad = zone();
    bad.services[0].endpoints[0].ports[0].name = "HTTP".into();
    let err = server.apply(bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "endpoint default/hello/hello-a: port name is not a valid DNS label"
    );

    let mut bad = zone();
    bad.services.push(bad.services[0].clone());
    let err = server.apply(bad).unwrap_err().to_string();
    assert_eq!(err, "service default/hello: listed more than once");

    for origin in ["", ".", "a..b", "-a.b", "a_b.c"] {
        let bad_origin = Zone {
            origin: origin.into(),
            ..Zone::default()
        };
        let err = DnsServer::new(bad_origin).unwrap_err().to_string();
        assert!(err.starts_with("invalid origin"), "{origin}: {err}");
    }

    let huge_ttl = Zone {
        ttl: u32::MAX,
        ..Zone::default()
    };
    assert!(DnsServer::new(huge_ttl).is_err());

    let mut long = zone();
    // The origin fits (244 octets); `hello.default.svc.` under it does not.
    long.origin = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(50),
    ]
    .join(".");
    let err = DnsServer::new(long).unwrap_err().to_string();
    assert!(err.contains("is too long"), "{err}");
    assert_eq!(server.revision(), 1);
}

#[test]
fn origin_is_case_insensitive_and_may_end_with_a_dot() {
    let server = DnsServer::new(Zone {
        origin: "Cluster.Local.".into(),
        ..zone()
    })
    .unwrap();
    let response = ask(&server, "hello.default.svc.cluster.local.", RecordType::A);
    assert_eq!(addresses(&response), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let refused = ask(&server, "hello.default.svc.berth.local.", RecordType::A);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn snapshot_holds_every_name_and_empty_non_terminal() {
    let snapshot = crate::snapshot::Snapshot::build(&zone(), 1).unwrap();
    // apex, svc, default.svc, hello, 3 instances, _tcp + _http.
    // prod.svc, web, web-1, _tcp + _https; dns-version; PTR of 127.0.0.1, the VIP and fd00::1.
    assert_eq!(snapshot.len(), 2 + 1 + 1 + 3 + 2 + 1 + 1 + 1 + 2 + 1 + 3);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let server = server();
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(response) = server.answer(&bytes, transport) {
                prop_assert!(response.len() >= 12);
                prop_assert_eq!(&response[..2], &bytes[..2]);
            }
        }
    }

    #[test]
    fn mutated_queries_never_panic(
        index in 0usize..64,
        value in any::<u8>(),
        edns in any::<bool>(),
    ) {
        let server = server();
        let mut bytes = query_bytes("_http._tcp.hello.default.svc.berth.local.", RecordType::SRV, edns);
        let len = bytes.len();
        bytes[index % len] = value;
        if let Some(response) = server.answer(&bytes, Transport::Udp) {
            prop_assert!(response.len() <= 1232);
            prop_assert!(Message::from_vec(&response).is_ok());
        }
    }
}

#[test]
fn ptr_answers_instance_addresses_and_vips() {
    let server = server();
    let cases = [
        (
            "1.0.0.127.in-addr.arpa.",
            "hello-a.hello.default.svc.berth.local.",
        ),
        ("10.0.96.10.IN-ADDR.ARPA.", "web.prod.svc.berth.local."),
        (
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            "web-1.web.prod.svc.berth.local.",
        ),
    ];
    for (reverse, target) in cases {
        let response = ask(&server, reverse, RecordType::PTR);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{reverse}"
        );
        assert!(response.metadata.authoritative);
        let targets: Vec<String> = response
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => Some(ptr.0.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(targets, vec![target.to_owned()], "{reverse}");
        assert_eq!(response.answers[0].name.to_string(), reverse);
        // NODATA in the reverse zone carries that zone's SOA.
        let nodata = ask(&server, reverse, RecordType::A);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        let soa_owner = nodata.authorities[0].name.to_ascii();
        assert!(
            reverse.to_ascii_lowercase().ends_with(&soa_owner),
            "{soa_owner}"
        );
    }
    // Addresses the zone does not hold are not ours to answer (no forwarding here).
    let other = ask(&server, "8.8.8.8.in-addr.arpa.", RecordType::PTR);
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn dns_version_is_a_txt_record() {
    let response = ask(&server(), "dns-version.berth.local.", RecordType::TXT);
    match &response.answers[..] {
        [record] => match &record.data {
            RData::TXT(txt) => assert_eq!(txt.to_string(), "1.1.0"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() {
    for (ttl, negative, expected) in [(30, 5, 5), (5, 30, 5), (60, 60, 60)] {
        let server = DnsServer::new(Zone {
            ttl,
            negative_ttl: negative,
            ..zone()
        })
        .unwrap();
        for (name, rcode) in [
            ("nope.berth.local.", ResponseCode::NXDomain),
            ("hello.default.svc.berth.local.", ResponseCode::NoError),
        ] {
            for edns in [false, true] {
                let response = ask_with(&server, name, RecordType::MX, edns);
                assert_eq!(response.metadata.response_code, rcode);
                assert!(response.answers.is_empty());
                let soa = &response.authorities[0];
                assert_eq!(soa.ttl, expected, "{ttl} {negative}");
                match &soa.data {
                    RData::SOA(data) => assert_eq!(data.minimum, negative),
                    other => panic!("{other:?}"),
                }
            }
        }
        // The SOA asked for directly keeps its own TTL.
        let soa = ask(&server, "berth.local.", RecordType::SOA);
        assert_eq!(soa.answers[0].ttl, ttl);
    }
}

#[test]
fn any_gets_one_rrset() {
    let server = server();
    let response = ask(&server, "web.prod.svc.berth.local.", RecordType::ANY);
    assert_eq!(response.answers.len(), 1);
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    // An empty non-terminal has nothing to give: NODATA.
    let ent = ask(&server, "default.svc.berth.local.", RecordType::ANY);
    assert!(ent.answers.is_empty() && !ent.authorities.is_empty());
}

/// Both paths must answer alike: every name and type, with and without EDNS, over UDP and TCP.
#[test]
fn precomputed_and_general_paths_agree() {
    let fast = server();
    let general = server();
    general.set_precomputed(false);
    let names = [
        "berth.local.",
        "dns-version.berth.local.",
        "hello.default.svc.berth.local.",
        "HELLO-b.hello.default.svc.berth.local.",
        "_http._tcp.hello.default.svc.berth.local.",
        "_tcp.hello.default.svc.berth.local.",
        "web.prod.svc.berth.local.",
        "_https._tcp.web.prod.svc.berth.local.",
        "default.svc.berth.local.",
        "missing.default.svc.berth.local.",
        "1.0.0.127.in-addr.arpa.",
        "example.com.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::PTR,
        RecordType::SOA,
        RecordType::NS,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::MX,
    ];
    for name in names {
        for record_type in types {
            for edns in [false, true] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let query = query_bytes(name, record_type, edns);
                    let a = Message::from_vec(&fast.answer(&query, transport).unwrap()).unwrap();
                    let b = Message::from_vec(&general.answer(&query, transport).unwrap()).unwrap();
                    let context = format!("{name} {record_type} edns={edns} {transport:?}");
                    assert_eq!(a.metadata, b.metadata, "{context}");
                    assert_eq!(a.queries, b.queries, "{context}");
                    let sorted = |records: &[hickory_proto::rr::Record]| {
                        let mut text: Vec<String> =
                            records.iter().map(ToString::to_string).collect();
                        text.sort();
                        text
                    };
                    assert_eq!(sorted(&a.answers), sorted(&b.answers), "{context}");
                    assert_eq!(sorted(&a.authorities), sorted(&b.authorities), "{context}");
                    assert_eq!(sorted(&a.additionals), sorted(&b.additionals), "{context}");
                    assert_eq!(a.edns.is_some(), b.edns.is_some(), "{context}");
                }
            }
        }
    }
}

#[test]
fn an_address_in_two_services_has_a_ptr_for_each() {
    let mut zone = zone();
    let mut copy = zone.services[1].clone();
    copy.name = "web2".into();
    zone.services.push(copy);
    let server = DnsServer::new(zone).unwrap();
    let response = ask(&server, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    let mut targets: Vec<String> = response
        .answers
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec!["web.prod.svc.berth.local.", "web2.prod.svc.berth.local."]
    );
    // Removing one leaves the other's alone.
    server.remove_service("prod", "web2").unwrap();
    let response = ask(&server, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(response.answers.len(), 1);
}

#[test]
fn a_bad_service_update_keeps_the_zone() {
    let server = server();
    let before = server.revision();
    let mut bad = zone().services[0].clone();
    bad.endpoints[0].hostname = "Not_A_Label".into();
    let error = server.apply_service(bad).unwrap_err();
    assert!(error.to_string().contains("Not_A_Label"), "{error}");
    assert_eq!(server.revision(), before);
    let response = ask(
        &server,
        "hello-a.hello.default.svc.berth.local.",
        RecordType::A,
    );
    assert_eq!(response.answers.len(), 1);
    // A new service is added, and a bad new one is not left behind.
    let mut new = zone().services[1].clone();
    new.name = "fresh".into();
    server.apply_service(new.clone()).unwrap();
    new.name = "-bad".into();
    assert!(server.apply_service(new).is_err());
    server.apply(zone()).unwrap();
    let gone = ask(&server, "fresh.prod.svc.berth.local.", RecordType::A);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn the_nameserver_name_has_addresses_when_given() {
    let absent = ask(&server(), "ns.dns.berth.local.", RecordType::A);
    assert_eq!(absent.metadata.response_code, ResponseCode::NXDomain);
    let server = DnsServer::new(Zone {
        nameserver_addresses: vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
        ..zone()
    })
    .unwrap();
    let a = ask(&server, "ns.dns.berth.local.", RecordType::A);
    assert_eq!(addresses(&a), vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let aaaa = ask(&server, "NS.dns.berth.local.", RecordType::AAAA);
    assert_eq!(addresses(&aaaa), vec!["fd00::a".parse::<IpAddr>().unwrap()]);
    let ent = ask(&server, "dns.berth.local.", RecordType::A);
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
}
