//! Bench-only: writes the same zone for berth (JSON), for Knot and NSD (RFC 1035 text), and a
//! dnsperf query file mixing A and SRV questions.
//!
//! `cargo run --release -p berth-dns --example bench_zone -- DIR [SERVICES] [INSTANCES]`

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use berth_dns::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};

/// The zone every server in the benchmark serves.
fn zone(services: usize, instances: usize, generation: u8) -> Zone {
    let services = (0..services)
        .map(|s| ServiceRecord {
            name: format!("svc{s}"),
            namespace: "default".into(),
            // Headless: the service name answers every instance address, as SRV does.
            vip: None,
            ports: vec![port()],
            endpoints: (0..instances)
                .map(|i| EndpointRecord {
                    hostname: format!("svc{s}-{i}"),
                    address: address(s * instances + i, generation),
                    ports: vec![port()],
                })
                .collect(),
        })
        .collect();
    Zone {
        services,
        ..Zone::default()
    }
}

fn port() -> PortRecord {
    PortRecord {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    }
}

/// A distinct address per instance, in 10.<generation>.0.0/16 .. and beyond.
fn address(n: usize, generation: u8) -> IpAddr {
    let n = u32::try_from(n).expect("bench sizes are small");
    IpAddr::V4(Ipv4Addr::from(
        (10u32 << 24) | (u32::from(generation) << 20) | n,
    ))
}

/// The same records as RFC 1035 master-file text (SOA, NS, A, SRV).
fn master_file(zone: &Zone) -> String {
    let o = &zone.origin;
    let ttl = zone.ttl;
    let mut text = format!(
        "$ORIGIN {o}.\n$TTL {ttl}\n@ IN SOA ns.dns.{o}. hostmaster.{o}. 1 7200 1800 86400 {ttl}\n@ IN NS ns.dns.{o}.\nns.dns IN A 127.0.0.1\n"
    );
    for s in &zone.services {
        let base = format!("{}.{}.svc", s.name, s.namespace);
        for e in &s.endpoints {
            let _ = writeln!(text, "{base} IN A {}", e.address);
            let _ = writeln!(text, "{}.{base} IN A {}", e.hostname, e.address);
            for p in &e.ports {
                let _ = writeln!(
                    text,
                    "_{}._tcp.{base} IN SRV 0 34 {} {}.{base}.{o}.",
                    p.name, p.port, e.hostname
                );
            }
        }
    }
    text
}

/// dnsperf input: A and SRV questions in equal parts, over every service.
fn queries(zone: &Zone) -> String {
    let mut text = String::new();
    for s in &zone.services {
        let base = format!("{}.{}.svc.{}", s.name, s.namespace, zone.origin);
        let _ = writeln!(text, "{base} A");
        let _ = writeln!(text, "_http._tcp.{base} SRV");
    }
    text
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let services: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let instances: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    std::fs::create_dir_all(&dir)?;
    let first = zone(services, instances, 1);
    let second = zone(services, instances, 2);
    std::fs::write(dir.join("zone.json"), serde_json::to_string(&first)?)?;
    // Every address changed: what the update benchmark applies.
    std::fs::write(dir.join("zone2.json"), serde_json::to_string(&second)?)?;
    std::fs::write(dir.join("berth.local.zone"), master_file(&first))?;
    std::fs::write(dir.join("queries.txt"), queries(&first))?;
    Ok(())
}
