//! Turning a [`Zone`] into a [`Snapshot`]: validation, names, record sets.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{Node, RrSet, Snapshot};
use crate::error::ZoneError;
use crate::name::{NameKey, is_dns_label};
use crate::zone::{PortRecord, Protocol, ServiceRecord, Zone};

/// SOA timers, as CoreDNS's kubernetes plugin sets them.
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

/// Total SRV weight shared by the records of one SRV set.
const SRV_TOTAL_WEIGHT: usize = 100;

impl Snapshot {
    /// Validates `zone` and precomputes every answer, as revision `revision`.
    pub(crate) fn build(zone: &Zone, revision: u64) -> Result<Self, ZoneError> {
        let origin = parse_origin(&zone.origin)?;
        if i32::try_from(zone.ttl).is_err() {
            return Err(ZoneError::InvalidTtl(zone.ttl));
        }
        let mut builder = Builder {
            origin,
            ttl: zone.ttl,
            nodes: HashMap::new(),
        };
        let soa = builder.apex(revision)?;
        builder.ensure(&child(&["svc"], &builder.origin, || "zone".to_owned())?);

        let mut seen = HashSet::new();
        for service in &zone.services {
            if !seen.insert((service.namespace.as_str(), service.name.as_str())) {
                return Err(ZoneError::DuplicateService {
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                });
            }
            builder.service(service)?;
        }

        Ok(Self {
            revision,
            origin: builder.origin.clone(),
            soa,
            nodes: builder.finish(),
            rotation: AtomicUsize::new(0),
        })
    }
}

/// Parses the origin: dot-separated letter-digit-hyphen labels, one trailing dot tolerated,
/// lowercased.
fn parse_origin(origin: &str) -> Result<Name, ZoneError> {
    let invalid = |reason| ZoneError::InvalidOrigin {
        origin: origin.to_owned(),
        reason,
    };
    let text = origin
        .strip_suffix('.')
        .unwrap_or(origin)
        .to_ascii_lowercase();
    if text.is_empty() {
        return Err(invalid("the origin must not be empty or the root"));
    }
    if !text.split('.').all(is_dns_label) {
        return Err(invalid(
            "each label must be 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen",
        ));
    }
    Name::from_labels(text.split('.').map(str::as_bytes))
        .map_err(|_| invalid("the name is longer than 255 octets"))
}

/// `labels` prepended to `parent`; `owner` names who the name is for in an error.
fn child(labels: &[&str], parent: &Name, owner: impl Fn() -> String) -> Result<Name, ZoneError> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .and_then(|name| name.append_domain(parent))
        .map_err(|_| ZoneError::NameTooLong {
            owner: owner(),
            name: format!("{}.{parent}", labels.join(".")),
        })
}

/// An SRV set of a service being built: (port name, protocol) and its targets (host, port).
type SrvSet<'a> = ((&'a str, Protocol), Vec<(Name, u16)>);

/// The targets of the SRV set for `port`, created if new; `None` for an unnamed port.
fn srv_set<'s, 'a>(
    sets: &'s mut Vec<SrvSet<'a>>,
    port: &'a PortRecord,
    owner: &dyn Fn() -> String,
) -> Result<Option<&'s mut Vec<(Name, u16)>>, ZoneError> {
    if port.name.is_empty() {
        return Ok(None);
    }
    check_label(&port.name, "port name", owner)?;
    let key = (port.name.as_str(), port.protocol);
    let index = match sets.iter().position(|(k, _)| *k == key) {
        Some(index) => index,
        None => {
            sets.push((key, Vec::new()));
            sets.len() - 1
        }
    };
    Ok(sets.get_mut(index).map(|(_, targets)| targets))
}

fn check_label(
    label: &str,
    what: &'static str,
    owner: impl Fn() -> String,
) -> Result<(), ZoneError> {
    if is_dns_label(label) {
        Ok(())
    } else {
        Err(ZoneError::InvalidLabel {
            owner: owner(),
            what,
        })
    }
}

/// What a name collects while the zone is walked.
#[derive(Debug)]
struct NodeBuilder {
    name: Name,
    /// Addresses, deduplicated, in first-seen order.
    addresses: Vec<IpAddr>,
    /// SRV targets (host name, port), deduplicated, in first-seen order.
    srv: Vec<(Name, u16)>,
    /// Records given whole (apex SOA and NS).
    other: Vec<Record>,
}

struct Builder {
    origin: Name,
    ttl: u32,
    nodes: HashMap<Box<[u8]>, NodeBuilder>,
}

impl Builder {
    /// The node of `name` and of every ancestor up to the origin, created empty if missing.
    fn ensure(&mut self, name: &Name) -> &mut NodeBuilder {
        let mut ancestor = name.base_name();
        while ancestor.num_labels() >= self.origin.num_labels() && self.origin.zone_of(&ancestor) {
            self.entry(&ancestor);
            if ancestor.num_labels() == self.origin.num_labels() {
                break;
            }
            ancestor = ancestor.base_name();
        }
        self.entry(name)
    }

    fn entry(&mut self, name: &Name) -> &mut NodeBuilder {
        // Invariant: hickory keeps every `Name` within 255 wire octets (building a longer one
        // fails in `child`), and a key is one octet shorter than the wire form, so it fits.
        #[allow(clippy::expect_used)]
        let key: Box<[u8]> = NameKey::new(name)
            .expect("a Name's key fits in 255 octets")
            .as_bytes()
            .into();
        self.nodes.entry(key).or_insert_with(|| NodeBuilder {
            name: name.clone(),
            addresses: Vec::new(),
            srv: Vec::new(),
            other: Vec::new(),
        })
    }

    fn add_address(&mut self, name: &Name, address: IpAddr) {
        let node = self.ensure(name);
        if !node.addresses.contains(&address) {
            node.addresses.push(address);
        }
    }

    /// SOA and NS at the apex; returns the SOA.
    fn apex(&mut self, revision: u64) -> Result<Record, ZoneError> {
        let origin = self.origin.clone();
        let ns = child(&["ns", "dns"], &origin, || "zone".to_owned())?;
        let hostmaster = child(&["hostmaster"], &origin, || "zone".to_owned())?;
        let soa = Record::from_rdata(
            origin.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                ns.clone(),
                hostmaster,
                // Serial arithmetic (RFC 1982) wraps; the low 32 bits keep increasing modulo 2^32.
                revision as u32,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                self.ttl,
            )),
        );
        let ns = Record::from_rdata(origin.clone(), self.ttl, RData::NS(NS(ns)));
        let apex = self.entry(&origin);
        apex.other.push(soa.clone());
        apex.other.push(ns);
        Ok(soa)
    }

    fn service(&mut self, service: &ServiceRecord) -> Result<(), ZoneError> {
        let (ns, svc) = (service.namespace.as_str(), service.name.as_str());
        let owner = || format!("service {ns}/{svc}");
        check_label(svc, "name", owner)?;
        check_label(ns, "namespace", owner)?;
        let service_name = child(&[svc, ns, "svc"], &self.origin, owner)?;
        self.ensure(&service_name);
        if let Some(vip) = service.vip {
            self.add_address(&service_name, vip);
        }

        // SRV sets by (port name, protocol), in first-seen order: the service's own ports first,
        // so that a declared port with no endpoint yet still exists (as NODATA).
        let mut srv_sets: Vec<SrvSet<'_>> = Vec::new();
        for port in &service.ports {
            srv_set(&mut srv_sets, port, &owner)?;
        }
        for endpoint in &service.endpoints {
            let host = endpoint.hostname.as_str();
            let owner = || format!("endpoint {ns}/{svc}/{host}");
            check_label(host, "hostname", owner)?;
            let host_name = child(&[host], &service_name, owner)?;
            if service.vip.is_none() {
                self.add_address(&service_name, endpoint.address);
            }
            self.add_address(&host_name, endpoint.address);
            for port in &endpoint.ports {
                if let Some(targets) = srv_set(&mut srv_sets, port, &owner)? {
                    let target = (host_name.clone(), port.port);
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
        }

        for ((port, protocol), targets) in srv_sets {
            let port_label = format!("_{port}");
            let name = child(
                &[port_label.as_str(), protocol.srv_label()],
                &service_name,
                owner,
            )?;
            self.ensure(&name).srv.extend(targets);
        }
        Ok(())
    }

    fn finish(self) -> HashMap<Box<[u8]>, Node> {
        let ttl = self.ttl;
        let address_records = |node: &NodeBuilder, v4: bool| -> Vec<Record> {
            node.addresses
                .iter()
                .filter_map(|address| match (address, v4) {
                    (IpAddr::V4(ip), true) => Some(RData::A(A(*ip))),
                    (IpAddr::V6(ip), false) => Some(RData::AAAA(AAAA(*ip))),
                    _ => None,
                })
                .map(|data| Record::from_rdata(node.name.clone(), ttl, data))
                .collect()
        };
        let target_records = |target: &Name| -> Vec<Record> {
            let node = NameKey::new(target).and_then(|k| self.nodes.get(k.as_bytes()));
            node.map(|node| {
                let mut records = address_records(node, true);
                records.extend(address_records(node, false));
                records
            })
            .unwrap_or_default()
        };

        let mut nodes = HashMap::with_capacity(self.nodes.len());
        for (key, node) in &self.nodes {
            let mut rrsets = Vec::new();
            let mut push = |record_type, records: Vec<Record>, additionals| {
                if !records.is_empty() {
                    rrsets.push(RrSet {
                        record_type,
                        records,
                        additionals,
                    });
                }
            };
            for record_type in [RecordType::SOA, RecordType::NS] {
                let records = node
                    .other
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .cloned()
                    .collect();
                push(record_type, records, Vec::new());
            }
            push(RecordType::A, address_records(node, true), Vec::new());
            push(RecordType::AAAA, address_records(node, false), Vec::new());
            if !node.srv.is_empty() {
                let weight = SRV_TOTAL_WEIGHT.div_ceil(node.srv.len()).max(1);
                // `weight` is at most SRV_TOTAL_WEIGHT, which fits.
                let weight = u16::try_from(weight).unwrap_or(1);
                let records = node
                    .srv
                    .iter()
                    .map(|(target, port)| {
                        let srv = SRV::new(0, weight, *port, target.clone());
                        Record::from_rdata(node.name.clone(), ttl, RData::SRV(srv))
                    })
                    .collect();
                let additionals = node.srv.iter().map(|(t, _)| target_records(t)).collect();
                push(RecordType::SRV, records, additionals);
            }
            nodes.insert(key.clone(), Node { rrsets });
        }
        nodes
    }
}
