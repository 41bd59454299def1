//! Turning a [`Zone`] into a [`Snapshot`]: validation, names, record sets, precomputed
//! responses, built per service ([`ServicePart`]) so that an update rebuilds only the service
//! that changed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::tables::{Edit, Tables};
use super::{Apex, NameEntry, Node, Ptr, RrSet, ServiceId, ServicePart, Snapshot, ZoneIndex};
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
    /// Validates `zone` and precomputes every answer, as revision `revision`.
    pub(crate) fn build(zone: &Zone, revision: u64) -> Result<Self, ZoneError> {
        let settings = Settings::new(zone)?;
        let mut upserts = Vec::with_capacity(zone.services.len());
        let mut seen = HashSet::with_capacity(zone.services.len());
        for service in &zone.services {
            let id = service_id(service);
            if !seen.insert(id.clone()) {
                return Err(duplicate(&id));
            }
            upserts.push((id, Arc::new(settings.service(service, None)?)));
        }
        let apex = settings.apex(zone, revision, true)?;
        let mut snapshot = Self {
            revision,
            origin_key: key_of(&settings.origin),
            origin: settings.origin.clone(),
            record_ttl: zone.ttl,
            negative_ttl: negative_ttl(zone),
            apexes: Arc::new(apex.apexes),
            tables: Tables::default(),
            rotation: AtomicUsize::new(0),
        };
        // Nothing to replay the edits on.
        let mut log = None;
        for (key, node) in apex.names {
            snapshot.tables.set(Edit::Node(key, node), &mut log);
        }
        for (id, part) in upserts {
            snapshot.tables.upsert(&settings, id, part, &mut log);
        }
        Ok(snapshot)
    }

    /// Whether parts built with `settings` (from `zone`) fit this snapshot: same origin and TTLs.
    pub(crate) fn fits(&self, settings: &Settings, zone: &Zone) -> bool {
        self.origin == settings.origin
            && self.record_ttl == zone.ttl
            && self.negative_ttl == negative_ttl(zone)
    }

    /// A copy of the snapshot's state, to be changed (when the other buffer is still read).
    pub(crate) fn copy(&self) -> Self {
        Self {
            revision: self.revision,
            origin: self.origin.clone(),
            origin_key: self.origin_key.clone(),
            record_ttl: self.record_ttl,
            negative_ttl: self.negative_ttl,
            apexes: Arc::clone(&self.apexes),
            tables: self.tables.clone(),
            rotation: AtomicUsize::new(0),
        }
    }

    /// Sets what changes with each revision: the serial and the SOA records carrying it.
    pub(crate) fn set_revision(&mut self, revision: u64, apexes: [Apex; 3]) {
        self.revision = revision;
        self.apexes = Arc::new(apexes);
    }

    /// The tables, to be changed.
    pub(crate) fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }
}

/// The id of `service`.
pub(crate) fn service_id(service: &ServiceRecord) -> ServiceId {
    (
        Arc::from(service.namespace.as_str()),
        Arc::from(service.name.as_str()),
    )
}

/// The error for a service given twice.
pub(crate) fn duplicate(id: &ServiceId) -> ZoneError {
    ZoneError::DuplicateService {
        namespace: id.0.to_string(),
        name: id.1.to_string(),
    }
}

impl ServicePart {
    /// The service as it was given.
    pub(crate) fn record(&self) -> &ServiceRecord {
        &self.record
    }
}

/// What changes with each revision, and the zone's own names.
pub(crate) struct ApexNames {
    /// The apexes of the three zones, with the SOA of this revision.
    pub(crate) apexes: [Apex; 3],
    /// The zone's own names (the apex, whose SOA carries the serial, first); `None` for one the
    /// zone does not have.
    pub(crate) names: Vec<NameEntry>,
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

/// The lookup key of the reverse name of `address`, without building the name: the octets
/// (IPv4, in decimal) or nibbles (IPv6, in lowercase hex) last first, then `in-addr.arpa` or
/// `ip6.arpa`.
fn reverse_key(address: IpAddr) -> Vec<u8> {
    let mut key = Vec::with_capacity(72);
    match address {
        IpAddr::V4(ip) => {
            for octet in ip.octets().iter().rev() {
                let digits = octet.to_string();
                // At most 3 digits.
                key.push(digits.len() as u8);
                key.extend_from_slice(digits.as_bytes());
            }
            key.extend_from_slice(b"\x07in-addr\x04arpa");
        }
        IpAddr::V6(ip) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for octet in ip.octets().iter().rev() {
                key.extend_from_slice(&[1, HEX[usize::from(octet & 0xf)]]);
                key.extend_from_slice(&[1, HEX[usize::from(octet >> 4)]]);
            }
            key.extend_from_slice(b"\x03ip6\x04arpa");
        }
    }
    key
}

/// Whether `node` holds exactly the A and AAAA records of `addresses` (in their order) and
/// nothing else, as a node built from them would.
fn holds_addresses(node: &Node, addresses: &[IpAddr]) -> bool {
    let v4 = addresses.iter().filter_map(|a| match a {
        IpAddr::V4(ip) => Some(*ip),
        IpAddr::V6(_) => None,
    });
    let v6 = addresses.iter().filter_map(|a| match a {
        IpAddr::V6(ip) => Some(*ip),
        IpAddr::V4(_) => None,
    });
    let (v4_count, v6_count) = (v4.clone().count(), v6.clone().count());
    let records = |record_type| node.rrset(record_type).map_or(&[][..], RrSet::records);
    let (a, aaaa) = (records(RecordType::A), records(RecordType::AAAA));
    node.rrsets.len() == usize::from(v4_count > 0) + usize::from(v6_count > 0)
        && a.len() == v4_count
        && aaaa.len() == v6_count
        && a.iter()
            .zip(v4)
            .all(|(r, ip)| matches!(&r.data, RData::A(A(x)) if *x == ip))
        && aaaa
            .iter()
            .zip(v6)
            .all(|(r, ip)| matches!(&r.data, RData::AAAA(AAAA(x)) if *x == ip))
}

/// The names of a service being built, by key.
type Builders = HashMap<Box<[u8]>, NodeBuilder, ahash::RandomState>;

/// Adds `address` to the name `key` (the service's, or `host`'s) unless `seen` has it there.
fn add_address<'a>(
    builders: &mut Builders,
    seen: &mut HashSet<(Option<&'a str>, IpAddr), ahash::RandomState>,
    key: &[u8],
    host: Option<&'a str>,
    address: IpAddr,
) {
    if seen.insert((host, address))
        && let Some(node) = builders.get_mut(key)
    {
        node.addresses.push(address);
    }
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
pub(crate) struct Settings {
    origin: Name,
    ttl: u32,
}

impl Settings {
    /// The settings of `zone`, validated.
    pub(crate) fn new(zone: &Zone) -> Result<Self, ZoneError> {
        let origin = parse_origin(&zone.origin)?;
        for ttl in [zone.ttl, zone.negative_ttl] {
            if i32::try_from(ttl).is_err() {
                return Err(ZoneError::InvalidTtl(ttl));
            }
        }
        Ok(Self {
            origin,
            ttl: zone.ttl,
        })
    }

    /// The apexes for negative answers and the nodes of the zone's own names: the apex only,
    /// or with `all` also `dns-version`, `svc`, `dns` and `ns.dns` (namespaces' names come and
    /// go with their services).
    pub(crate) fn apex(
        &self,
        zone: &Zone,
        revision: u64,
        all: bool,
    ) -> Result<ApexNames, ZoneError> {
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
            version_name.clone(),
            self.ttl,
            RData::TXT(TXT::new(vec![SPEC_VERSION.to_owned()])),
        ));
        let svc_name = child(&["svc"], origin, || "zone".to_owned())?;
        let svc = NodeBuilder::new(svc_name.clone());
        let mut builders = vec![Some(apex)];
        if all {
            builders.push(Some(version));
            builders.push(Some(svc));
            if zone.nameserver_addresses.is_empty() {
                // Taken out if an earlier zone had them.
                builders.push(None);
                builders.push(None);
            } else {
                let mut server = NodeBuilder::new(ns.clone());
                for address in &zone.nameserver_addresses {
                    if !server.addresses.contains(address) {
                        server.addresses.push(*address);
                    }
                }
                builders.push(Some(NodeBuilder::new(ns.base_name())));
                builders.push(Some(server));
            }
        }
        let fixed = [origin.clone(), version_name, svc_name, ns.base_name(), ns];
        let none: HashMap<Box<[u8]>, NodeBuilder> = HashMap::new();
        let names = fixed
            .iter()
            .zip(builders)
            .map(|(name, builder)| {
                let key: Arc<[u8]> = key_of(name).into();
                let node = builder.map(|b| Arc::new(self.node(&b, ZoneIndex::Cluster, &none)));
                (key, node)
            })
            .collect();
        Ok(ApexNames { apexes, names })
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

    /// Everything `service` puts in the zone. Names and PTRs that `old` (the service's previous
    /// part, built with the same settings) has unchanged are shared, not built again: an
    /// endpoint change rebuilds that endpoint's names and the service's sets.
    pub(crate) fn service(
        &self,
        service: &ServiceRecord,
        old: Option<&ServicePart>,
    ) -> Result<ServicePart, ZoneError> {
        let (ns, svc) = (service.namespace.as_str(), service.name.as_str());
        let owner = || format!("service {ns}/{svc}");
        check_label(svc, "name", owner)?;
        check_label(ns, "namespace", owner)?;
        let service_name = child(&[svc, ns, "svc"], &self.origin, owner)?;
        let mut builders = Builders::default();
        ensure(&mut builders, &service_name, &service_name);
        let service_key = key_of(&service_name);
        // Sets beside the lists keep deduplication linear in the service's size: a service of
        // thousands of endpoints is as common as one of ten.
        let mut seen_addresses: HashSet<(Option<&str>, IpAddr), ahash::RandomState> =
            HashSet::default();
        let mut add_address = |builders: &mut Builders, key: &[u8], host, address| {
            add_address(builders, &mut seen_addresses, key, host, address);
        };
        let mut ptrs: Vec<(IpAddr, Name)> = Vec::new();
        let mut ptr_addresses: HashSet<IpAddr, ahash::RandomState> = HashSet::default();
        if let Some(vip) = service.vip {
            add_address(&mut builders, &service_key, None, vip);
            ptr_addresses.insert(vip);
            ptrs.push((vip, service_name.clone()));
        }

        // SRV sets by (port name, protocol), in first-seen order: the service's own ports first,
        // so that a declared port with no endpoint yet still exists (as NODATA).
        let mut srv_sets: Vec<SrvSet<'_>> = Vec::new();
        let mut srv_seen: HashSet<(&str, Protocol, &str, u16), ahash::RandomState> =
            HashSet::default();
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
                add_address(&mut builders, &service_key, None, endpoint.address);
            }
            add_address(
                &mut builders,
                &key_of(&host_name),
                Some(host),
                endpoint.address,
            );
            if ptr_addresses.insert(endpoint.address) {
                ptrs.push((endpoint.address, host_name.clone()));
            }
            for port in &endpoint.ports {
                if let Some(targets) = srv_set(&mut srv_sets, port, &owner)?
                    && srv_seen.insert((port.name.as_str(), port.protocol, host, port.port))
                {
                    targets.push((host_name.clone(), port.port));
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
        for (name, targets) in srv_names {
            if let Some(node) = builders.get_mut(&key_of(&name)) {
                node.srv.extend(targets);
            }
        }

        let nodes = builders
            .iter()
            .map(|(key, b)| {
                // A name with addresses only (an instance, a service with a VIP, an empty
                // non-terminal) is the same node if it has the same addresses; SRV sets depend
                // on other names, and are rebuilt.
                let same = old
                    .filter(|_| b.srv.is_empty() && b.other.is_empty())
                    .and_then(|old| old.nodes.get(&**key))
                    .filter(|node| holds_addresses(node, &b.addresses));
                let node = match same {
                    Some(node) => Arc::clone(node),
                    None => Arc::new(self.node(b, ZoneIndex::Cluster, &builders)),
                };
                (Arc::from(&**key), node)
            })
            .collect();
        let ptrs = ptrs
            .into_iter()
            .map(|(address, target)| {
                let key: Arc<[u8]> = reverse_key(address).into();
                let same = old
                    .and_then(|old| old.ptrs.get(&key))
                    .filter(|ptr| ptr.target == target);
                let ptr = match same {
                    Some(ptr) => Arc::clone(ptr),
                    None => {
                        let (reverse, _) = reverse_name(address);
                        let node = Arc::new(self.ptr_node(&reverse, vec![target.clone()]));
                        Arc::new(Ptr {
                            reverse,
                            target,
                            node,
                        })
                    }
                };
                (key, ptr)
            })
            .collect();
        Ok(ServicePart {
            record: service.clone(),
            namespace_key: key_of(&service_name.base_name()).into(),
            nodes,
            ptrs,
        })
    }

    /// The PTR node of `reverse`, pointing at `targets`.
    pub(crate) fn ptr_node(&self, reverse: &Name, targets: Vec<Name>) -> Node {
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
                rrsets.push(RrSet::new(record_type, records, additionals));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_key_is_the_key_of_the_reverse_name() {
        for address in [
            "10.0.0.1",
            "0.0.0.0",
            "255.254.9.100",
            "fd00::1",
            "2001:db8:abcd:12::ff00:42",
            "::",
        ] {
            let address: IpAddr = address.parse().unwrap();
            let (name, _) = reverse_name(address);
            assert_eq!(reverse_key(address), &*key_of(&name), "{address}");
        }
    }
}
