//! Incremental updates against builds from scratch: any sequence of service updates, removals
//! and whole-zone applies leaves a live snapshot that answers every query byte for byte as a
//! snapshot built in one go from the resulting zone, and whose names exist exactly where the
//! zone says.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;

use super::Snapshot;
use crate::DnsServer;
use crate::answer::{self, Action, Options, Transport};
use crate::zone::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};

const NAMESPACES: [&str; 2] = ["a", "b"];
const SERVICES: [&str; 3] = ["s0", "s1", "s2"];
const HOSTS: [&str; 4] = ["h0", "h1", "h2", "h3"];
/// Few addresses, so that services and endpoints share them (merged PTRs, duplicates).
const ADDRESSES: [&str; 5] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2"];

fn address(index: usize) -> IpAddr {
    ADDRESSES[index % ADDRESSES.len()].parse().unwrap()
}

fn port(index: usize) -> PortRecord {
    match index % 3 {
        0 => PortRecord {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        },
        1 => PortRecord {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
        },
        _ => PortRecord {
            name: String::new(),
            protocol: Protocol::Tcp,
            port: 9000,
        },
    }
}

prop_compose! {
    fn endpoint()(host in 0..HOSTS.len(), address in 0..ADDRESSES.len(),
                  ports in proptest::collection::vec(0usize..3, 0..3)) -> EndpointRecord {
        EndpointRecord {
            hostname: HOSTS[host].into(),
            address: address_of(address),
            ports: ports.into_iter().map(port).collect(),
        }
    }
}

fn address_of(index: usize) -> IpAddr {
    address(index)
}

prop_compose! {
    fn service()(namespace in 0..NAMESPACES.len(), name in 0..SERVICES.len(),
                 vip in proptest::option::of(0..ADDRESSES.len()),
                 ports in proptest::collection::vec(0usize..3, 0..3),
                 endpoints in proptest::collection::vec(endpoint(), 0..5)) -> ServiceRecord {
        ServiceRecord {
            name: SERVICES[name].into(),
            namespace: NAMESPACES[namespace].into(),
            vip: vip.map(address),
            ports: ports.into_iter().map(port).collect(),
            endpoints,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Apply(ServiceRecord),
    /// A service with a bad host name: rejected, nothing changes.
    ApplyBad(ServiceRecord),
    Remove(usize, usize),
    /// A whole zone (services deduplicated), with a TTL (a new one rebuilds from scratch) and
    /// maybe name server addresses.
    Zone(Vec<ServiceRecord>, u32, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => service().prop_map(Op::Apply),
        1 => service().prop_map(Op::ApplyBad),
        3 => (0..NAMESPACES.len(), 0..SERVICES.len()).prop_map(|(n, s)| Op::Remove(n, s)),
        1 => (proptest::collection::vec(service(), 0..5), prop_oneof![Just(5u32), Just(7)], any::<bool>())
            .prop_map(|(services, ttl, ns)| Op::Zone(services, ttl, ns)),
    ]
}

/// What the zone is after an operation: services replaced in place or appended, as the
/// control plane sees it.
fn model_apply(zone: &mut Zone, service: ServiceRecord) {
    match zone
        .services
        .iter_mut()
        .find(|s| s.namespace == service.namespace && s.name == service.name)
    {
        Some(slot) => *slot = service,
        None => zone.services.push(service),
    }
}

fn dedup(services: Vec<ServiceRecord>) -> Vec<ServiceRecord> {
    let mut zone = Zone::default();
    for service in services {
        model_apply(&mut zone, service);
    }
    zone.services
}

/// Every name the queries ask about: all the zone could hold, and some it never holds.
fn names(origin: &str) -> Vec<String> {
    let mut names = vec![
        format!("{origin}."),
        format!("svc.{origin}."),
        format!("dns-version.{origin}."),
        format!("dns.{origin}."),
        format!("ns.dns.{origin}."),
        format!("nothing.{origin}."),
        format!("c.svc.{origin}."),
    ];
    for namespace in NAMESPACES {
        names.push(format!("{namespace}.svc.{origin}."));
        for service in SERVICES {
            let base = format!("{service}.{namespace}.svc.{origin}.");
            for prefix in [
                "",
                "_tcp.",
                "_udp.",
                "_http._tcp.",
                "_dns._udp.",
                "_http._udp.",
            ] {
                names.push(format!("{prefix}{base}"));
            }
            for host in HOSTS {
                names.push(format!("{host}.{base}"));
            }
        }
    }
    for address in ADDRESSES {
        let address: IpAddr = address.parse().unwrap();
        names.push(Name::from(address).to_ascii());
    }
    names
}

const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::ANY,
];

fn query(name: &str, record_type: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x4242;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

fn respond(snapshot: &Snapshot, query: &[u8], rotation: usize, precomputed: bool) -> Vec<u8> {
    snapshot.rotation.store(rotation, Ordering::Relaxed);
    let options = Options {
        precomputed,
        forwarding: false,
    };
    let mut out = Vec::new();
    let action = answer::answer_into(snapshot, query, Transport::Udp, options, &mut out);
    assert_eq!(action, Action::Send);
    out
}

/// Whether `name` exists in `zone`, worked out from the zone itself.
fn exists(zone: &Zone, name: &str) -> Option<bool> {
    let origin = &zone.origin;
    let mut held: HashSet<String> = [
        format!("{origin}."),
        format!("svc.{origin}."),
        format!("dns-version.{origin}."),
    ]
    .into();
    if !zone.nameserver_addresses.is_empty() {
        held.insert(format!("dns.{origin}."));
        held.insert(format!("ns.dns.{origin}."));
    }
    let mut reverse = HashSet::new();
    for s in &zone.services {
        let base = format!("{}.{}.svc.{origin}.", s.name, s.namespace);
        held.insert(format!("{}.svc.{origin}.", s.namespace));
        held.insert(base.clone());
        reverse.extend(s.vip);
        let ports = s
            .ports
            .iter()
            .chain(s.endpoints.iter().flat_map(|e| &e.ports));
        for p in ports.filter(|p| !p.name.is_empty()) {
            let proto = p.protocol.srv_label();
            held.insert(format!("{proto}.{base}"));
            held.insert(format!("_{}.{proto}.{base}", p.name));
        }
        for e in &s.endpoints {
            held.insert(format!("{}.{base}", e.hostname));
            reverse.insert(e.address);
        }
    }
    held.extend(reverse.into_iter().map(|a| Name::from(a).to_ascii()));
    if held.contains(name) {
        Some(true)
    } else if name.ends_with(".arpa.") {
        // Reverse names without a PTR are out of zone (forwarded, or refused).
        None
    } else {
        Some(false)
    }
}

/// The live snapshot of `server` answers as one built from scratch from `zone`.
fn check(server: &DnsServer, zone: &Zone) -> Result<(), TestCaseError> {
    let live = server.live();
    let fresh = Snapshot::build(zone, live.revision()).unwrap();
    prop_assert_eq!(live.record_count(), fresh.record_count());
    prop_assert_eq!(live.len(), fresh.len());
    for name in names("berth.local") {
        let expected = match exists(zone, &name) {
            Some(true) => ResponseCode::NoError,
            Some(false) => ResponseCode::NXDomain,
            None => ResponseCode::Refused,
        };
        for record_type in TYPES {
            // Rotation 1 with EDNS, 0 without: both encodings, and rotated sets.
            for (edns, rotation) in [(false, 0), (true, 1)] {
                let query = query(&name, record_type, edns);
                for precomputed in [true, false] {
                    let got = respond(&live, &query, rotation, precomputed);
                    let want = respond(&fresh, &query, rotation, precomputed);
                    prop_assert_eq!(&got, &want, "{} {} edns={}", name, record_type, edns);
                }
                let rcode = Message::from_vec(&respond(&live, &query, 0, true))
                    .unwrap()
                    .metadata
                    .response_code;
                prop_assert_eq!(rcode, expected, "{} {}", name, record_type);
            }
        }
    }
    for address in ADDRESSES {
        let address: IpAddr = address.parse().unwrap();
        let response = respond(
            &live,
            &query(&Name::from(address).to_ascii(), RecordType::PTR, true),
            0,
            true,
        );
        let mut targets: Vec<String> = Message::from_vec(&response)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        targets.sort();
        prop_assert_eq!(targets, ptr_targets(zone, address), "PTR of {}", address);
    }
    Ok(())
}

/// The names an address's PTR points at, worked out from the zone: per service its VIP's
/// service name, else the first endpoint host name with that address.
fn ptr_targets(zone: &Zone, address: IpAddr) -> Vec<String> {
    let mut targets: Vec<String> = zone
        .services
        .iter()
        .filter_map(|s| {
            let base = format!("{}.{}.svc.{}.", s.name, s.namespace, zone.origin);
            if s.vip == Some(address) {
                return Some(base);
            }
            let host = s.endpoints.iter().find(|e| e.address == address)?;
            Some(format!("{}.{base}", host.hostname))
        })
        .collect();
    targets.sort();
    targets
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_answer_as_a_fresh_build(
        initial in proptest::collection::vec(service(), 0..4),
        ops in proptest::collection::vec(op(), 1..16),
    ) {
        let mut zone = Zone { services: dedup(initial), ..Zone::default() };
        let server = DnsServer::new(zone.clone()).unwrap();
        check(&server, &zone)?;
        for op in ops {
            let revision = server.revision();
            match op {
                Op::Apply(service) => {
                    server.apply_service(service.clone()).unwrap();
                    model_apply(&mut zone, service);
                }
                Op::ApplyBad(mut service) => {
                    service.endpoints.push(EndpointRecord {
                        hostname: "Bad_Host".into(),
                        address: address(0),
                        ports: Vec::new(),
                    });
                    prop_assert!(server.apply_service(service).is_err());
                    prop_assert_eq!(server.revision(), revision);
                }
                Op::Remove(namespace, name) => {
                    let (namespace, name) = (NAMESPACES[namespace], SERVICES[name]);
                    let present = zone.services.iter().any(|s| s.namespace == namespace && s.name == name);
                    prop_assert_eq!(server.remove_service(namespace, name).unwrap(), present);
                    zone.services.retain(|s| !(s.namespace == namespace && s.name == name));
                    prop_assert_eq!(server.revision(), revision + u64::from(present));
                }
                Op::Zone(services, ttl, nameserver) => {
                    zone = Zone {
                        services: dedup(services),
                        ttl,
                        nameserver_addresses: if nameserver { vec![address(0)] } else { Vec::new() },
                        ..Zone::default()
                    };
                    server.apply(zone.clone()).unwrap();
                }
            }
            check(&server, &zone)?;
        }
    }
}

/// A reader that keeps the standby snapshot makes the next update copy the live one instead of
/// waiting: answers stay right, and the update still happens.
#[test]
fn a_held_snapshot_does_not_block_updates() {
    let services: Vec<ServiceRecord> = (0..3)
        .map(|i| ServiceRecord {
            name: SERVICES[i].into(),
            namespace: "a".into(),
            vip: Some(address(i)),
            ports: vec![port(0)],
            endpoints: vec![EndpointRecord {
                hostname: HOSTS[i].into(),
                address: address(i + 1),
                ports: vec![port(0)],
            }],
        })
        .collect();
    let mut zone = Zone {
        services,
        ..Zone::default()
    };
    let server = DnsServer::new(zone.clone()).unwrap();
    let held = server.live();
    let mut changed = zone.services[0].clone();
    changed.endpoints.clear();
    server.apply_service(changed.clone()).unwrap();
    // `held` is the standby now; the next update cannot take it.
    let mut again = zone.services[1].clone();
    again.vip = None;
    server.apply_service(again.clone()).unwrap();
    server.remove_service("a", "s2").unwrap();
    model_apply(&mut zone, changed);
    model_apply(&mut zone, again);
    zone.services.truncate(2);
    assert_eq!(held.revision(), 1);
    check(&server, &zone).unwrap();
    drop(held);
    server.apply_service(zone.services[0].clone()).unwrap();
    check(&server, &zone).unwrap();
}

#[test]
fn below_respects_label_boundaries() {
    let zone = b"\x05berth\x05local";
    assert!(super::is_below(b"\x05berth\x05local", zone));
    assert!(super::is_below(b"\x01a\x05berth\x05local", zone));
    assert!(!super::is_below(b"\x06xberth\x05local", zone));
    assert!(!super::is_below(b"\x05local", zone));
    assert!(!super::is_below(b"", zone));
}

/// Where an update's time goes, at the size of one service of the scale benchmark (10
/// endpoints): `cargo test --release -p berth-dns --lib -- --ignored --nocapture update_parts`.
#[test]
#[ignore = "a measurement, not a check"]
#[allow(clippy::print_stdout)] // A measurement prints its figures.
fn update_parts() {
    use std::time::Instant;
    let service = |n: usize| ServiceRecord {
        name: "web".into(),
        namespace: "prod".into(),
        vip: None,
        ports: vec![port(0)],
        endpoints: (0..n)
            .map(|i| EndpointRecord {
                hostname: format!("web-{i}"),
                address: IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
                ports: vec![port(0)],
            })
            .collect(),
    };
    let zone = Zone::default();
    let settings = super::build::Settings::new(&zone).unwrap();
    let old = settings.service(&service(10), None).unwrap();
    let rounds = 20_000u32;
    let time = |what: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        println!(
            "{what}: {:.1} us",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        );
    };
    time("settings", &mut || {
        drop(super::build::Settings::new(&zone).unwrap())
    });
    time("apex", &mut || {
        drop(settings.apex(&zone, 7, false).unwrap())
    });
    time("part from scratch", &mut || {
        drop(settings.service(&service(9), None).unwrap())
    });
    time("part reusing", &mut || {
        drop(settings.service(&service(9), Some(&old)).unwrap())
    });
    let record = service(9);
    time("record clone", &mut || drop(record.clone()));
    // Linear in the service: 4,000 endpoints cost about twice 2,000.
    for n in [2000, 4000, 8000] {
        let big = service(n);
        let t = Instant::now();
        drop(settings.service(&big, None).unwrap());
        println!(
            "part of {n} endpoints: {:.1} us",
            t.elapsed().as_secs_f64() * 1e6
        );
    }
}
