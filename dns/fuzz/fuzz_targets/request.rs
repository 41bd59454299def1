//! The request path: any bytes as a query, over UDP and TCP, on both the precomputed and the
//! general path. Never a panic; every response is a DNS message within the transport's limit
//! that echoes the query id.
#![no_main]

use std::sync::OnceLock;

use berth_dns::{DnsServer, EndpointRecord, PortRecord, Protocol, ServiceRecord, Transport, Zone};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fn servers() -> &'static [DnsServer; 2] {
    static SERVERS: OnceLock<[DnsServer; 2]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let port = |name: &str, port| PortRecord {
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
        };
        let zone = Zone {
            services: vec![ServiceRecord {
                name: "hello".into(),
                namespace: "default".into(),
                vip: None,
                ports: vec![port("http", 80)],
                endpoints: (0..40u8)
                    .map(|i| EndpointRecord {
                        hostname: format!("hello-{i}"),
                        address: format!("10.0.0.{i}").parse().unwrap(),
                        ports: vec![port("http", 8080)],
                    })
                    .collect(),
            }],
            ..Zone::default()
        };
        let fast = DnsServer::new(zone.clone()).unwrap();
        let general = DnsServer::new(zone).unwrap();
        general.set_precomputed(false);
        [fast, general]
    })
}

fuzz_target!(|data: &[u8]| {
    for server in servers() {
        for (transport, limit) in [(Transport::Udp, 1232), (Transport::Tcp, 65535)] {
            if let Some(response) = server.answer(data, transport) {
                assert!(response.len() <= limit);
                assert_eq!(&response[..2], &data[..2]);
                Message::from_vec(&response).expect("a readable response");
            }
        }
    }
});
