//! The tables of a snapshot and the edits that change them.
//!
//! Every change is a list of [`Edit`]s: single-key inserts and removals whose cost is the size of
//! the service changed. The same list, replayed, brings the other buffer of the
//! [`super::Updater`] to the same state, so an edit must depend on nothing but the tables it is
//! applied to (and it may not read them: it says what the key holds afterwards).

use std::collections::HashMap;
use std::sync::Arc;

use super::build::Settings;
use super::{Node, NodeMap, Ptr, ServiceId, ServicePart, ZoneIndex};

/// The services sharing a reverse name (an address in several services), ordered by
/// [`ServiceId`] so that the merged PTR set does not depend on the order of updates.
type Owners = Arc<[(ServiceId, Arc<Ptr>)]>;

/// One key of one table set to a value, or removed (`None`).
#[derive(Clone, Debug)]
pub(crate) enum Edit {
    Node(Arc<[u8]>, Option<Arc<Node>>),
    Service(ServiceId, Option<Arc<ServicePart>>),
    Ptr(Arc<[u8]>, Option<Owners>),
    Namespace(Arc<[u8]>, Option<usize>),
}

/// Where the edits of a change go besides the tables: kept for the other buffer, or dropped
/// when there is none (a snapshot built from scratch).
pub(crate) type Log = Option<Vec<Edit>>;

/// Every name served and the bookkeeping that lets one service change without a pass over the
/// others.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tables {
    /// Every name served, empty non-terminals of the cluster zone included, by
    /// [`crate::name::NameKey`]. The only table queries read.
    pub(super) nodes: NodeMap,
    /// What each service contributed: what to take out when it changes, and what tells whether
    /// it did.
    services: HashMap<ServiceId, Arc<ServicePart>, ahash::RandomState>,
    /// Which services hold a PTR for each reverse name.
    ptrs: HashMap<Arc<[u8]>, Owners, ahash::RandomState>,
    /// Services per namespace, by the key of `<namespace>.svc.<origin>`.
    namespaces: HashMap<Arc<[u8]>, usize, ahash::RandomState>,
    /// Records of every node.
    record_count: usize,
}

impl Tables {
    pub(crate) fn record_count(&self) -> usize {
        self.record_count
    }

    /// The part of service `id`, if the zone has it.
    pub(crate) fn service(&self, id: &ServiceId) -> Option<&Arc<ServicePart>> {
        self.services.get(id)
    }

    /// The services in the zone.
    pub(crate) fn service_ids(&self) -> impl Iterator<Item = &ServiceId> {
        self.services.keys()
    }

    /// Applies `edit` (replaying it on the other buffer).
    pub(crate) fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Node(key, node) => {
                if let Some(node) = &node {
                    self.record_count += node.record_count();
                }
                let old = match node {
                    Some(node) => self.nodes.insert(key, node),
                    None => self.nodes.remove(&key),
                };
                if let Some(old) = old {
                    // `old` was counted when it went in.
                    self.record_count = self.record_count.saturating_sub(old.record_count());
                }
            }
            Edit::Service(id, part) => {
                match part {
                    Some(part) => self.services.insert(id, part),
                    None => self.services.remove(&id),
                };
            }
            Edit::Ptr(key, owners) => {
                match owners {
                    Some(owners) => self.ptrs.insert(key, owners),
                    None => self.ptrs.remove(&key),
                };
            }
            Edit::Namespace(key, count) => {
                match count {
                    Some(count) => self.namespaces.insert(key, count),
                    None => self.namespaces.remove(&key),
                };
            }
        }
    }

    /// Applies `edit` and logs it.
    pub(crate) fn set(&mut self, edit: Edit, log: &mut Log) {
        if let Some(log) = log {
            log.push(edit.clone());
        }
        self.apply(edit);
    }

    /// Puts `part` in as service `id`, replacing what the service had.
    pub(crate) fn upsert(
        &mut self,
        settings: &Settings,
        id: ServiceId,
        part: Arc<ServicePart>,
        log: &mut Log,
    ) {
        let old = self.services.get(&id).cloned();
        match &old {
            Some(old) => {
                for key in old.nodes.keys().filter(|k| !part.nodes.contains_key(*k)) {
                    self.set(Edit::Node(Arc::clone(key), None), log);
                }
            }
            None => self.count_namespace(&part.namespace_key, 1, log),
        }
        for (key, node) in &part.nodes {
            // A name the new part shares with the old one is in the table already.
            let same = old
                .as_ref()
                .and_then(|old| old.nodes.get(key))
                .is_some_and(|n| Arc::ptr_eq(n, node));
            if !same {
                self.set(Edit::Node(Arc::clone(key), Some(Arc::clone(node))), log);
            }
        }
        self.update_ptrs(settings, &id, old.as_deref(), Some(&part), log);
        self.set(Edit::Service(id, Some(part)), log);
    }

    /// Takes service `id` out; `false` if the zone does not have it.
    pub(crate) fn remove(&mut self, settings: &Settings, id: &ServiceId, log: &mut Log) -> bool {
        let Some(old) = self.services.get(id).cloned() else {
            return false;
        };
        for key in old.nodes.keys() {
            self.set(Edit::Node(Arc::clone(key), None), log);
        }
        self.update_ptrs(settings, id, Some(&old), None, log);
        self.count_namespace(&old.namespace_key, -1, log);
        self.set(Edit::Service(id.clone(), None), log);
        true
    }

    /// Moves the PTRs of service `id` from `old` to `new`, merging with other services' PTRs
    /// of the same addresses.
    fn update_ptrs(
        &mut self,
        settings: &Settings,
        id: &ServiceId,
        old: Option<&ServicePart>,
        new: Option<&ServicePart>,
        log: &mut Log,
    ) {
        let gone = old
            .into_iter()
            .flat_map(|p| p.ptrs.keys())
            .filter(|key| new.is_none_or(|new| !new.ptrs.contains_key(*key)))
            .map(|key| (key, None::<&Arc<Ptr>>));
        let kept = new
            .into_iter()
            .flat_map(|p| &p.ptrs)
            .map(|(key, ptr)| (key, Some(ptr)));
        let changes: Vec<_> = gone.chain(kept).collect();
        for (key, ptr) in changes {
            let mut owners: Vec<(ServiceId, Arc<Ptr>)> = self
                .ptrs
                .get(key)
                .map(|owners| owners.iter().filter(|(o, _)| o != id).cloned().collect())
                .unwrap_or_default();
            if let Some(ptr) = ptr {
                let at = owners.partition_point(|(o, _)| o < id);
                owners.insert(at, (id.clone(), Arc::clone(ptr)));
            }
            let node = match owners.as_slice() {
                [] => None,
                [(_, only)] => Some(Arc::clone(&only.node)),
                [(_, first), ..] => {
                    // One PTR per name pointing at the address, as for an address with several
                    // names.
                    let targets = owners.iter().map(|(_, p)| p.target.clone()).collect();
                    Some(Arc::new(settings.ptr_node(&first.reverse, targets)))
                }
            };
            let owners = (!owners.is_empty()).then(|| Owners::from(owners));
            self.set(Edit::Ptr(Arc::clone(key), owners), log);
            self.set(Edit::Node(Arc::clone(key), node), log);
        }
    }

    /// Adds `delta` services to namespace `key`; its name exists while the count is positive.
    fn count_namespace(&mut self, key: &Arc<[u8]>, delta: isize, log: &mut Log) {
        let count = self.namespaces.get(key).copied().unwrap_or(0);
        let count = count.saturating_add_signed(delta);
        if count == 0 {
            self.set(Edit::Namespace(Arc::clone(key), None), log);
            self.set(Edit::Node(Arc::clone(key), None), log);
        } else {
            if count == 1 && delta > 0 {
                let empty = Arc::new(Node {
                    zone: ZoneIndex::Cluster,
                    rrsets: Vec::new(),
                });
                self.set(Edit::Node(Arc::clone(key), Some(empty)), log);
            }
            self.set(Edit::Namespace(Arc::clone(key), Some(count)), log);
        }
    }
}
