//! An immutable, precomputed view of the zone: every name the zone holds, with its record sets
//! already built, so that answering a query is one hash lookup.

mod build;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::{Name, Record, RecordType};

use crate::name::NameKey;

/// One revision of the zone, ready to answer from. Built by [`Snapshot::build`], never changed
/// afterwards except for the rotation counter.
#[derive(Debug)]
pub(crate) struct Snapshot {
    revision: u64,
    /// The apex, lowercase and fully qualified.
    origin: Name,
    /// The apex SOA, also the AUTHORITY of negative answers.
    soa: Record,
    /// Every name in the zone, empty non-terminals included, by [`NameKey`].
    nodes: HashMap<Box<[u8]>, Node>,
    /// Bumped by each answer that rotates a record set, so that clients taking the first record
    /// spread over all of them.
    rotation: AtomicUsize,
}

/// The record sets of one name; no record set for an empty non-terminal.
#[derive(Debug, Default)]
pub(crate) struct Node {
    rrsets: Vec<RrSet>,
}

/// The records of one name and type, in their canonical order.
#[derive(Debug)]
pub(crate) struct RrSet {
    record_type: RecordType,
    records: Vec<Record>,
    /// For each record (same index), what goes into the ADDITIONAL section with it: an SRV
    /// target's A/AAAA records. Empty when the type has no additional processing.
    additionals: Vec<Vec<Record>>,
}

/// Where a name stands in a snapshot.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// Not at or below the origin: not ours to answer.
    OutOfZone,
    /// Below the origin, but no such name.
    NxDomain,
    /// The name exists (maybe as an empty non-terminal).
    Found(&'a Node),
}

impl Snapshot {
    /// The revision the snapshot was built as; the SOA serial.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The apex of the zone.
    pub(crate) fn origin(&self) -> &Name {
        &self.origin
    }

    /// The apex SOA record.
    pub(crate) fn soa(&self) -> &Record {
        &self.soa
    }

    /// Finds `name` (any case).
    pub(crate) fn lookup(&self, name: &Name) -> Lookup<'_> {
        if !self.origin.zone_of(name) {
            return Lookup::OutOfZone;
        }
        let node = NameKey::new(name).and_then(|key| self.nodes.get(key.as_bytes()));
        match node {
            Some(node) => Lookup::Found(node),
            None => Lookup::NxDomain,
        }
    }

    /// A fresh rotation offset; callers reduce it modulo the record set length.
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of names, empty non-terminals included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

impl Node {
    /// The record set of `record_type`, if the name has one.
    pub(crate) fn rrset(&self, record_type: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.record_type == record_type)
    }

    /// All record sets of the name.
    pub(crate) fn rrsets(&self) -> &[RrSet] {
        &self.rrsets
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
        )
    }
}
