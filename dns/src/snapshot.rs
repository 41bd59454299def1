//! An immutable, precomputed view of the zone: every name the zone holds, with its record sets
//! already built and encoded as ready-to-send responses, so that answering a common query is one
//! hash lookup and one copy.
//!
//! A snapshot is immutable while it is served. Updates cost the size of the service that changed,
//! not of the zone: [`Updater`] keeps a second snapshot beside the live one (left-right double
//! buffering), brings it up to date with the last update's edits once no query reads it any more,
//! applies the new edits and swaps it in. The query path stays one flat hash lookup.

mod build;
mod tables;
mod template;
#[cfg(test)]
mod tests;
mod update;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use hickory_proto::rr::{Name, Record, RecordType};

use self::tables::Tables;
pub(crate) use self::template::Template;
pub(crate) use self::update::{Change, Updater};
use crate::name::NameKey;
use crate::zone::ServiceRecord;

/// Keys hash with ahash: the lookup is on the query path of every query.
type NodeMap = HashMap<Arc<[u8]>, Arc<Node>, ahash::RandomState>;

/// A name's key and its node; `None` takes the name out.
pub(crate) type NameEntry = (Arc<[u8]>, Option<Arc<Node>>);

/// A service: (namespace, name).
pub(crate) type ServiceId = (Arc<str>, Arc<str>);

/// One revision of the zone, ready to answer from. Built by [`Snapshot::build`] or by an
/// [`Updater`], never changed while it is served except for the rotation counter.
#[derive(Debug)]
pub(crate) struct Snapshot {
    revision: u64,
    /// The apex, lowercase and fully qualified.
    origin: Name,
    /// The [`NameKey`] of the origin.
    origin_key: Box<[u8]>,
    /// TTL of the zone's records.
    record_ttl: u32,
    /// TTL of negative answers.
    negative_ttl: u32,
    /// The cluster zone and the two reverse zones: what negative answers carry. Shared with the
    /// other buffer of the [`Updater`].
    apexes: Arc<[Apex; 3]>,
    /// Every name and what each service contributed.
    tables: Tables,
    /// Bumped by each answer that rotates a record set, so that clients taking the first record
    /// spread over all of them.
    rotation: AtomicUsize,
}

/// Which apex a name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ZoneIndex {
    /// The cluster zone.
    Cluster = 0,
    /// `in-addr.arpa`.
    ReverseV4 = 1,
    /// `ip6.arpa`.
    ReverseV6 = 2,
}

/// The apex of a served zone, as negative answers need it.
#[derive(Debug)]
pub(crate) struct Apex {
    /// The SOA with the negative TTL, min(SOA TTL, SOA minimum) (RFC 2308 section 3).
    negative_soa: Record,
    /// That record in wire format without name compression, so that it can follow any question.
    negative_soa_wire: Box<[u8]>,
}

/// What one service puts in the zone.
#[derive(Debug)]
pub(crate) struct ServicePart {
    /// The service as it was given, to tell whether the next zone changed it.
    record: ServiceRecord,
    /// The key of its namespace's name, `<namespace>.svc.<origin>`: an empty non-terminal while
    /// the namespace has a service.
    namespace_key: Arc<[u8]>,
    /// Its names: the service, its instances, its SRV names and their empty non-terminals.
    nodes: HashMap<Arc<[u8]>, Arc<Node>, ahash::RandomState>,
    /// Reverse names of its addresses, each with its PTR node alone, by key.
    ptrs: HashMap<Arc<[u8]>, Arc<Ptr>, ahash::RandomState>,
}

/// A PTR a service contributes: the reverse name of an address and the name it points at.
#[derive(Debug)]
pub(crate) struct Ptr {
    reverse: Name,
    target: Name,
    node: Arc<Node>,
}

/// The record sets of one name; no record set for an empty non-terminal.
#[derive(Debug)]
pub(crate) struct Node {
    zone: ZoneIndex,
    rrsets: Vec<RrSet>,
}

/// The records of one name and type, in their canonical order, and the precomputed responses.
#[derive(Debug)]
pub(crate) struct RrSet {
    record_type: RecordType,
    records: Vec<Record>,
    /// For each record (same index), what goes into the ADDITIONAL section with it: an SRV
    /// target's A/AAAA records. Empty when the type has no additional processing.
    additionals: Vec<Vec<Record>>,
    /// Responses for a query of this name (lowercase) and type, one per rotation start, each
    /// encoded by the first query that needs it: an update then costs building the records, not
    /// encoding every response they could give (most names are never asked for between two
    /// updates of their service). `None` inside: the encoder failed, the general path answers.
    templates: Box<[OnceLock<Option<Template>>]>,
}

/// Where a name stands in a snapshot.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// Not in a zone we answer for.
    OutOfZone,
    /// Below the cluster origin, but no such name.
    NxDomain,
    /// The name exists (maybe as an empty non-terminal).
    Found(&'a Node),
}

impl Snapshot {
    /// The revision the snapshot was built as; the SOA serial.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The apex of the cluster zone.
    pub(crate) fn origin(&self) -> &Name {
        &self.origin
    }

    /// Number of records in the zone.
    pub(crate) fn record_count(&self) -> usize {
        self.tables.record_count()
    }

    /// The apex of `zone`.
    pub(crate) fn apex(&self, zone: ZoneIndex) -> &Apex {
        &self.apexes[zone as usize]
    }

    /// Finds `name` (any case).
    pub(crate) fn lookup(&self, name: &Name) -> Lookup<'_> {
        match NameKey::new(name) {
            Some(key) => self.find(key.as_bytes()),
            None => Lookup::OutOfZone,
        }
    }

    /// Finds the name with lookup key `key`. Reverse names the zone holds no PTR for are out of
    /// zone: they go on to the upstream, as CoreDNS's `fallthrough` does.
    pub(crate) fn find(&self, key: &[u8]) -> Lookup<'_> {
        if let Some(node) = self.tables.nodes.get(key) {
            return Lookup::Found(node);
        }
        if is_below(key, &self.origin_key) {
            Lookup::NxDomain
        } else {
            Lookup::OutOfZone
        }
    }

    /// A fresh rotation offset.
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of names, empty non-terminals included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tables.nodes.len()
    }
}

/// Whether the name of `key` is `zone` or below it (label boundaries respected).
fn is_below(key: &[u8], zone: &[u8]) -> bool {
    let mut at = 0;
    loop {
        if key.get(at..) == Some(zone) {
            return true;
        }
        match key.get(at) {
            Some(&len) => at += 1 + usize::from(len),
            None => return false,
        }
    }
}

impl Apex {
    pub(crate) fn negative_soa(&self) -> &Record {
        &self.negative_soa
    }

    pub(crate) fn negative_soa_wire(&self) -> &[u8] {
        &self.negative_soa_wire
    }
}

impl Node {
    /// Number of records of the name.
    fn record_count(&self) -> usize {
        self.rrsets.iter().map(|s| s.records.len()).sum()
    }

    /// The record set of `record_type`, if the name has one.
    pub(crate) fn rrset(&self, record_type: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.record_type == record_type)
    }

    /// The record set of type code `code`, if the name has one.
    pub(crate) fn rrset_by_code(&self, code: u16) -> Option<&RrSet> {
        self.rrsets
            .iter()
            .find(|s| u16::from(s.record_type) == code)
    }

    /// The record set a query of type ANY gets (RFC 8482 section 4.2: one RRset of the name).
    pub(crate) fn any_rrset(&self) -> Option<&RrSet> {
        self.rrsets.first()
    }

    /// The zone the name is in.
    pub(crate) fn zone(&self) -> ZoneIndex {
        self.zone
    }
}

impl RrSet {
    /// The records, in canonical (unrotated) order; never empty.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    /// The additional records that go with `records()[index]`.
    pub(crate) fn additionals(&self, index: usize) -> &[Record] {
        self.additionals.get(index).map_or(&[], Vec::as_slice)
    }

    /// Whether answers rotate the order of this set (address and SRV sets do).
    pub(crate) fn rotates(&self) -> bool {
        matches!(
            self.record_type,
            RecordType::A | RecordType::AAAA | RecordType::SRV
        ) && self.records.len() > 1
    }

    /// A set of `records` of `record_type`, with `additionals` (one list per record, or none).
    pub(crate) fn new(
        record_type: RecordType,
        records: Vec<Record>,
        additionals: Vec<Vec<Record>>,
    ) -> Self {
        let mut rrset = Self {
            record_type,
            records,
            additionals,
            templates: Box::new([]),
        };
        rrset.templates = (0..rrset.template_count())
            .map(|_| OnceLock::new())
            .collect();
        rrset
    }

    /// How many rotations get a template: every one for small sets, evenly spread ones for
    /// large sets (so that memory stays linear in the set size).
    fn template_count(&self) -> usize {
        if self.rotates() {
            self.records.len().min(template::MAX_ROTATIONS)
        } else {
            1
        }
    }

    /// The precomputed response for rotation counter `rotation`, encoded now if it is the first
    /// query to need it.
    pub(crate) fn template(&self, rotation: usize) -> Option<&Template> {
        let count = self.templates.len();
        let index = rotation % count.max(1);
        let slot = self.templates.get(index)?;
        slot.get_or_init(|| {
            // The owner of every record of the set is the name queried (in lowercase).
            let owner = &self.records.first()?.name;
            Template::build(owner, self, index * self.records.len() / count)
        })
        .as_ref()
    }
}
