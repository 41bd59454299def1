//! Turning a [`Zone`] into a [`Snapshot`]: validation, names, record sets, precomputed
//! responses. Services unchanged since the previous snapshot are reused whole, so that an update
//! of one service costs that service plus one pass over the name table.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::{Apex, Node, NodeMap, Ptr, RrSet, ServicePart, Snapshot, Template, ZoneIndex};
use crate::error::ZoneError;
use crate::name::{NameKey, is_dns_label};
use crate::zone::{PortRecord, Protocol, ServiceRecord, Zone};

/// SOA timers, as CoreDNS's kubernetes plugin sets them.
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

/// Total SRV weight shared by the records of one SRV set.
const SRV_TOTAL_WEIGHT: usize = 100;

/// The version of the Kubernetes DNS specification the names follow, served as
/// `dns-version.<zone>` TXT (as CoreDNS does).
const SPEC_VERSION: &str = "1.1.0";

impl Snapshot {
    /// Validates `zone` and precomputes every answer, as revision `revision`, reusing from
    /// `previous` what did not change.
    pub(crate) fn build(
        zone: &Zone,
        revision: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Self, ZoneError> {
        Self::build_changed(zone, revision, previous, None)
    }

    /// As [`Snapshot::build`]; when `changed` names the only service that may differ from
    /// `previous`, the others are reused without comparing them.
    pub(crate) fn build_changed(
        zone: &Zone,
        revision: u64,
        previous: Option<&Snapshot>,
        changed: Option<(&str, &str)>,
    ) -> Result<Self, ZoneError> {
        let origin = parse_origin(&zone.origin)?;
        for ttl in [zone.ttl, zone.negative_ttl] {
            if i32::try_from(ttl).is_err() {
                return Err(ZoneError::InvalidTtl(ttl));
            }
        }
        let settings = Settings {
            origin: origin.clone(),
            ttl: zone.ttl,
        };
        // Parts depend on the origin and the TTL; anything else they hold is their service's.
        let reusable = previous.filter(|p| {
            p.origin == origin
                && p.apexes[0].negative_soa.ttl == negative_ttl(zone)
                && p.record_ttl == zone.ttl
        });

        let mut seen = HashSet::new();
        let mut parts = Vec::with_capacity(zone.services.len());
        for service in &zone.services {
            let id = (service.namespace.clone(), service.name.clone());
            if !seen.insert((service.namespace.as_str(), service.name.as_str())) {
                return Err(ZoneError::DuplicateService {
                    namespace: id.0,
                    name: id.1,
                });
            }
            let unchanged = |part: &&Arc<ServicePart>| match changed {
                Some((namespace, name)) if namespace != id.0 || name != id.1 => true,
                _ => part.record == *service,
            };
            let old = reusable.and_then(|p| p.services.get(&id)).filter(unchanged);
            let part = match old {
                Some(part) => Arc::clone(part),
                None => Arc::new(settings.service(service)?),
            };
            parts.push((id, part));
        }

        let (apex_nodes, apexes) = settings.apex(zone, revision, &parts)?;
        let mut nodes: NodeMap = HashMap::with_capacity_and_hasher(
            apex_nodes.len() + parts.iter().map(|(_, p)| p.len()).sum::<usize>(),
            ahash::RandomState::new(),
        );
        nodes.extend(apex_nodes);
        // Reverse names held by more than one service (an address in several services).
        let mut shared: HashSet<&Arc<[u8]>> = HashSet::new();
        for (_, part) in &parts {
            nodes.extend(
                part.nodes
                    .iter()
                    .map(|(k, n)| (Arc::clone(k), Arc::clone(n))),
            );
            for ptr in &part.ptrs {
                if nodes
                    .insert(Arc::clone(&ptr.key), Arc::clone(&ptr.node))
                    .is_some()
                {
                    shared.insert(&ptr.key);
                }
            }
        }
        if !shared.is_empty() {
            // One PTR per name pointing at the address, as for an address with several names.
            let mut merged: HashMap<&Arc<[u8]>, Vec<&Ptr>> = HashMap::new();
            for ptr in parts.iter().flat_map(|(_, p)| &p.ptrs) {
                if shared.contains(&ptr.key) {
                    merged.entry(&ptr.key).or_default().push(ptr);
                }
            }
            for (key, ptrs) in merged {
                let targets = ptrs.iter().map(|p| p.target.clone()).collect();
                let node = settings.ptr_node(&ptrs[0].reverse, targets);
                nodes.insert(Arc::clone(key), Arc::new(node));
            }
        }

        let record_count = nodes
            .values()
            .flat_map(|n| &n.rrsets)
            .map(|s| s.records.len())
            .sum();
        Ok(Self {
            revision,
            origin_key: key_of(&origin),
            origin,
            record_ttl: zone.ttl,
            apexes,
            nodes,
            services: parts.into_iter().collect(),
            record_count,
            rotation: AtomicUsize::new(0),
        })
    }
}

impl ServicePart {
    fn len(&self) -> usize {
        self.nodes.len() + self.ptrs.len()
    }
}

/// The negative TTL of `zone`: min(SOA TTL, SOA minimum) (RFC 2308 section 3).
fn negative_ttl(zone: &Zone) -> u32 {
    zone.ttl.min(zone.negative_ttl)
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
    if text == "in-addr.arpa" || text == "ip6.arpa" || text.ends_with(".arpa") || text == "arpa" {
        return Err(invalid(
            "the reverse zones are served beside the cluster zone",
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

fn key_of(name: &Name) -> Box<[u8]> {
    // Invariant: hickory keeps every `Name` within 255 wire octets, and a key is one octet
    // shorter than the wire form, so it fits.
    #[allow(clippy::expect_used)]
    NameKey::new(name)
        .expect("a Name's key fits in 255 octets")
        .as_bytes()
        .into()
}

/// Creates the node of `name` and of its ancestors up to `top`, empty if missing.
fn ensure<S: std::hash::BuildHasher>(
    builders: &mut HashMap<Box<[u8]>, NodeBuilder, S>,
    name: &Name,
    top: &Name,
) {
    let mut ancestor = name.clone();
    while ancestor.num_labels() > top.num_labels() {
        ancestor = ancestor.base_name();
        builders
            .entry(key_of(&ancestor))
            .or_insert_with(|| NodeBuilder::new(ancestor.clone()));
    }
    builders
        .entry(key_of(name))
        .or_insert_with(|| NodeBuilder::new(name.clone()));
}

/// The reverse name of `address`, in `in-addr.arpa` or `ip6.arpa`.
fn reverse_name(address: IpAddr) -> (Name, ZoneIndex) {
    let zone = match address {
        IpAddr::V4(_) => ZoneIndex::ReverseV4,
        IpAddr::V6(_) => ZoneIndex::ReverseV6,
    };
    (Name::from(address), zone)
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

/// What a name collects while a service is walked.
#[derive(Debug)]
struct NodeBuilder {
    name: Name,
    /// Addresses, deduplicated, in first-seen order.
    addresses: Vec<IpAddr>,
    /// SRV targets (host name, port), deduplicated, in first-seen order.
    srv: Vec<(Name, u16)>,
    /// Record sets given whole (apex SOA, NS, TXT; PTR), one type each.
    other: Vec<Record>,
}

impl NodeBuilder {
    fn new(name: Name) -> Self {
        Self {
            name,
            addresses: Vec::new(),
            srv: Vec::new(),
            other: Vec::new(),
        }
    }
}

/// What every part of a snapshot is built with.
struct Settings {
    origin: Name,
    ttl: u32,
}

impl Settings {
    /// The nodes of the zone's own names (apex, `dns-version`, `svc`, one per namespace) and the
    /// apexes for negative answers.
    #[allow(clippy::type_complexity)]
    fn apex(
        &self,
        zone: &Zone,
        revision: u64,
        parts: &[((String, String), Arc<ServicePart>)],
    ) -> Result<(Vec<(Arc<[u8]>, Arc<Node>)>, [Apex; 3]), ZoneError> {
        let origin = &self.origin;
        let ns = child(&["ns", "dns"], origin, || "zone".to_owned())?;
        let soa_of = |apex: &Name, ttl| {
            let hostmaster = child(&["hostmaster"], origin, || "zone".to_owned())?;
            Ok::<_, ZoneError>(Record::from_rdata(
                apex.clone(),
                ttl,
                RData::SOA(SOA::new(
                    ns.clone(),
                    hostmaster,
                    // Serial arithmetic (RFC 1982) wraps; the low 32 bits keep increasing
                    // modulo 2^32.
                    revision as u32,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    zone.negative_ttl,
                )),
            ))
        };
        let negative = negative_ttl(zone);
        // Invariant: both are valid constant names.
        #[allow(clippy::expect_used)]
        let (reverse_v4, reverse_v6) = (
            Name::from_ascii("in-addr.arpa.").expect("a valid name"),
            Name::from_ascii("ip6.arpa.").expect("a valid name"),
        );
        let apexes = [
            self.negative_apex(soa_of(origin, negative)?),
            self.negative_apex(soa_of(&reverse_v4, negative)?),
            self.negative_apex(soa_of(&reverse_v6, negative)?),
        ];

        let mut apex = NodeBuilder::new(origin.clone());
        apex.other.push(soa_of(origin, self.ttl)?);
        apex.other.push(Record::from_rdata(
            origin.clone(),
            self.ttl,
            RData::NS(NS(ns.clone())),
        ));
        let version_name = child(&["dns-version"], origin, || "zone".to_owned())?;
        let mut version = NodeBuilder::new(version_name.clone());
        version.other.push(Record::from_rdata(
            version_name,
            self.ttl,
            RData::TXT(TXT::new(vec![SPEC_VERSION.to_owned()])),
        ));
        let svc = NodeBuilder::new(child(&["svc"], origin, || "zone".to_owned())?);
        let mut builders = vec![apex, version, svc];
        if !zone.nameserver_addresses.is_empty() {
            let mut server = NodeBuilder::new(ns.clone());
            for address in &zone.nameserver_addresses {
                if !server.addresses.contains(address) {
                    server.addresses.push(*address);
                }
            }
            builders.push(NodeBuilder::new(ns.base_name()));
            builders.push(server);
        }
        let namespaces: HashSet<&str> = parts.iter().map(|((ns, _), _)| ns.as_str()).collect();
        for namespace in namespaces {
            // Each part checked its namespace label already.
            let name = child(&[namespace, "svc"], origin, || {
                format!("namespace {namespace}")
            })?;
            builders.push(NodeBuilder::new(name));
        }
        let none: HashMap<Box<[u8]>, NodeBuilder> = HashMap::new();
        let nodes = builders
            .iter()
            .map(|b| {
                let key: Arc<[u8]> = key_of(&b.name).into();
                (key, Arc::new(self.node(b, ZoneIndex::Cluster, &none)))
            })
            .collect();
        Ok((nodes, apexes))
    }

    fn negative_apex(&self, soa: Record) -> Apex {
        let mut wire = Vec::new();
        let mut encoder = BinEncoder::new(&mut wire);
        // Canonical form: no name compression, so the bytes can follow any question.
        encoder.set_canonical_form(true);
        if soa.emit(&mut encoder).is_err() {
            // The SOA is a few hundred octets at most; an encoder failure cannot happen here,
            // and an empty tail would only drop the authority record.
            wire.clear();
        }
        Apex {
            negative_soa: soa,
            negative_soa_wire: wire.into(),
        }
    }

    /// Everything `service` puts in the zone.
    fn service(&self, service: &ServiceRecord) -> Result<ServicePart, ZoneError> {
        let (ns, svc) = (service.namespace.as_str(), service.name.as_str());
        let owner = || format!("service {ns}/{svc}");
        check_label(svc, "name", owner)?;
        check_label(ns, "namespace", owner)?;
        let service_name = child(&[svc, ns, "svc"], &self.origin, owner)?;
        let mut builders: HashMap<Box<[u8]>, NodeBuilder, ahash::RandomState> = HashMap::default();
        ensure(&mut builders, &service_name, &service_name);
        let mut addresses: Vec<(Name, IpAddr)> = Vec::new();
        let mut ptrs: Vec<(IpAddr, Name)> = Vec::new();
        if let Some(vip) = service.vip {
            addresses.push((service_name.clone(), vip));
            ptrs.push((vip, service_name.clone()));
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
            ensure(&mut builders, &host_name, &service_name);
            if service.vip.is_none() {
                addresses.push((service_name.clone(), endpoint.address));
            }
            addresses.push((host_name.clone(), endpoint.address));
            if !ptrs.iter().any(|(a, _)| *a == endpoint.address) {
                ptrs.push((endpoint.address, host_name.clone()));
            }
            for port in &endpoint.ports {
                if let Some(targets) = srv_set(&mut srv_sets, port, &owner)? {
                    let target = (host_name.clone(), port.port);
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
        }
        let mut srv_names = Vec::new();
        for ((port, protocol), targets) in srv_sets {
            let port_label = format!("_{port}");
            let name = child(
                &[port_label.as_str(), protocol.srv_label()],
                &service_name,
                owner,
            )?;
            ensure(&mut builders, &name, &service_name);
            srv_names.push((name, targets));
        }
        for (name, address) in addresses {
            if let Some(node) = builders.get_mut(&key_of(&name))
                && !node.addresses.contains(&address)
            {
                node.addresses.push(address);
            }
        }
        for (name, targets) in srv_names {
            if let Some(node) = builders.get_mut(&key_of(&name)) {
                node.srv.extend(targets);
            }
        }

        let nodes = builders
            .values()
            .map(|b| {
                let key: Arc<[u8]> = key_of(&b.name).into();
                (key, Arc::new(self.node(b, ZoneIndex::Cluster, &builders)))
            })
            .collect();
        let ptrs = ptrs
            .into_iter()
            .map(|(address, target)| {
                let (reverse, _) = reverse_name(address);
                let node = Arc::new(self.ptr_node(&reverse, vec![target.clone()]));
                Ptr {
                    key: key_of(&reverse).into(),
                    reverse,
                    target,
                    node,
                }
            })
            .collect();
        Ok(ServicePart {
            record: service.clone(),
            nodes,
            ptrs,
        })
    }

    /// The PTR node of `reverse`, pointing at `targets`.
    fn ptr_node(&self, reverse: &Name, targets: Vec<Name>) -> Node {
        let zone = if reverse.num_labels() > 6 {
            ZoneIndex::ReverseV6
        } else {
            ZoneIndex::ReverseV4
        };
        let mut builder = NodeBuilder::new(reverse.clone());
        builder.other = targets
            .into_iter()
            .map(|t| Record::from_rdata(reverse.clone(), self.ttl, RData::PTR(PTR(t))))
            .collect();
        self.node(&builder, zone, &HashMap::<_, _>::new())
    }

    /// The record sets of `node`, with their precomputed responses; SRV targets' addresses are
    /// looked up in `names`.
    fn node<S: std::hash::BuildHasher>(
        &self,
        node: &NodeBuilder,
        zone: ZoneIndex,
        names: &HashMap<Box<[u8]>, NodeBuilder, S>,
    ) -> Node {
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
            let node = names.get(&key_of(target));
            node.map(|node| {
                let mut records = address_records(node, true);
                records.extend(address_records(node, false));
                records
            })
            .unwrap_or_default()
        };

        let mut rrsets = Vec::new();
        let mut push = |record_type, records: Vec<Record>, additionals| {
            if !records.is_empty() {
                let mut rrset = RrSet {
                    record_type,
                    records,
                    additionals,
                    templates: Box::new([]),
                };
                rrset.templates = rrset
                    .rotation_starts()
                    .filter_map(|start| Template::build(&node.name, &rrset, start))
                    .collect();
                rrsets.push(rrset);
            }
        };
        for record_type in [
            RecordType::SOA,
            RecordType::NS,
            RecordType::TXT,
            RecordType::PTR,
        ] {
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
        Node { zone, rrsets }
    }
}
