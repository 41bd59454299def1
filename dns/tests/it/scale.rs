//! Measurements at the scale of the propagation benchmark (1,000 services x 10 instances): what
//! one service update costs, and how many queries a second one thread answers in-process.
//! Ignored by default; run with
//! `cargo test --release -p berth-dns --test it -- --ignored --nocapture scale`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use berth_dns::{DnsServer, EndpointRecord, PortRecord, Protocol, ServiceRecord, Transport, Zone};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

const SERVICES: usize = 1000;
const INSTANCES: usize = 10;

fn port() -> PortRecord {
    PortRecord {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    }
}

/// Service `s` with `instances` endpoints; `generation` moves every address.
fn service(s: usize, instances: usize, generation: u8) -> ServiceRecord {
    let vip = s
        .is_multiple_of(2)
        .then(|| IpAddr::V4(Ipv4Addr::from((10u32 << 24) | 0x00ff_0000 | s as u32)));
    ServiceRecord {
        name: format!("svc{s}"),
        namespace: format!("ns{}", s % 10),
        vip,
        ports: vec![port()],
        endpoints: (0..instances)
            .map(|i| EndpointRecord {
                hostname: format!("svc{s}-{i}"),
                address: IpAddr::V4(Ipv4Addr::from(
                    (10u32 << 24) | (u32::from(generation) << 20) | (s * INSTANCES + i) as u32,
                )),
                ports: vec![port()],
            })
            .collect(),
    }
}

fn zone() -> Zone {
    Zone {
        services: (0..SERVICES).map(|s| service(s, INSTANCES, 1)).collect(),
        ..Zone::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "a measurement, not a check"]
fn scale_apply_service() {
    let started = Instant::now();
    let server = DnsServer::new(zone()).unwrap();
    println!(
        "build 1,000 x 10: {:?}, {} records",
        started.elapsed(),
        server.record_count()
    );
    // What an instance turning ready or going away does: one endpoint of one service added
    // or removed (the last of its 10, alternately).
    let calls: usize = std::env::var("SCALE_UPDATES").map_or(2000, |r| r.parse().unwrap());
    let mut full = vec![true; SERVICES];
    let mut costs = Vec::new();
    for round in 0..calls {
        let s = (round * 37) % SERVICES;
        full[s] = !full[s];
        let update = service(s, INSTANCES - usize::from(!full[s]), 1);
        let t = Instant::now();
        server.apply_service(update).unwrap();
        costs.push(t.elapsed());
    }
    let mut removes = Vec::new();
    for s in 0..200 {
        let t = Instant::now();
        assert!(
            server
                .remove_service(&format!("ns{}", s % 10), &format!("svc{s}"))
                .unwrap()
        );
        removes.push(t.elapsed());
    }
    costs.sort();
    removes.sort();
    println!(
        "case=dns_apply_service services={SERVICES} endpoints={} calls={} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        SERVICES * INSTANCES,
        costs.len(),
        percentile(&costs, 0.5).as_secs_f64() * 1e6,
        percentile(&costs, 0.99).as_secs_f64() * 1e6,
        costs.last().unwrap().as_secs_f64() * 1e6,
    );
    println!(
        "case=dns_remove_service calls={} p50_us={:.1} p99_us={:.1}",
        removes.len(),
        percentile(&removes, 0.5).as_secs_f64() * 1e6,
        percentile(&removes, 0.99).as_secs_f64() * 1e6,
    );
    let started = Instant::now();
    server.apply(zone()).unwrap();
    println!("full apply back to 1,000 x 10: {:?}", started.elapsed());
}

fn query(name: &str, record_type: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message.to_vec().unwrap()
}

#[test]
#[ignore = "a measurement, not a check"]
fn scale_queries() {
    let server = DnsServer::new(zone()).unwrap();
    // The shapes of queries a cluster sends: service A, SRV, instance A, PTR, and misses
    // (search-path NXDOMAIN and NODATA).
    let mut queries = Vec::new();
    for s in 0..SERVICES {
        let base = format!("svc{s}.ns{}.svc.berth.local.", s % 10);
        queries.push(query(&base, RecordType::A, s as u16));
        queries.push(query(&format!("_http._tcp.{base}"), RecordType::SRV, 1));
        queries.push(query(&format!("svc{s}-3.{base}"), RecordType::A, 2));
        queries.push(query(
            &format!("{base}ns{}.svc.berth.local.", s % 10),
            RecordType::A,
            3,
        ));
        queries.push(query(&base, RecordType::AAAA, 4));
        queries.push(query(
            &format!("{}.10.in-addr.arpa.", s % 256),
            RecordType::PTR,
            5,
        ));
    }
    // SCALE_QUERY_ROUNDS sets the rounds, so that two runs' instruction counts
    // (`perf stat -e instructions:u`) differ by the query loop alone.
    let rounds: usize = std::env::var("SCALE_QUERY_ROUNDS").map_or(5, |r| r.parse().unwrap());
    const PER_ROUND: usize = 600_000;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut bytes = 0;
        for i in 0..PER_ROUND {
            let q = &queries[(i * 7919) % queries.len()];
            bytes += server.answer(q, Transport::Udp).map_or(0, |r| r.len());
        }
        assert!(bytes > 0);
        rates.push(PER_ROUND as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "case=dns_answer_in_process queries_per_s={:.0} rounds={:?}",
        rates[rounds / 2],
        rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
    );
}
