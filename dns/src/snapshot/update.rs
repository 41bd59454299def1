//! Updates in the size of what changed: two snapshots take turns (left-right double buffering).
//!
//! The live snapshot is read by queries and never written. The other one, the standby, is the
//! snapshot that was live before the last update; once the queries that still read it are done
//! (a query holds a snapshot for microseconds), it is caught up by replaying the last update's
//! edits, given the new edits, and swapped in; the snapshot it replaces becomes the standby.
//! An update thus costs twice the edits of the service that changed, and the query path keeps
//! one flat hash table. Should a reader hold the standby for long, the update copies the live
//! tables instead (the cost of a full build's table pass, but correct).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::Snapshot;
use super::build::{Settings, duplicate, service_id};
use super::tables::{Edit, Log};
use crate::error::ZoneError;
use crate::zone::{ServiceRecord, Zone};

/// Longest an update waits for the queries still reading the standby before copying instead.
const STANDBY_WAIT: Duration = Duration::from_millis(5);

/// What an update changes.
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// The whole zone: every service, the settings.
    Zone,
    /// One service added or replaced.
    Service(ServiceRecord),
    /// One service taken out.
    Remove {
        /// Its namespace.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
}

/// The writer's side of the double buffer. Callers serialise updates (one `&mut` at a time).
#[derive(Debug, Default)]
pub(crate) struct Updater {
    /// The snapshot that was live before the last update, if any.
    standby: Option<Arc<Snapshot>>,
    /// The edits the last update made, which the standby lacks.
    pending: Vec<Edit>,
}

impl Updater {
    /// Applies `change` to the snapshot in `live` and swaps the result in, as the next revision.
    /// `zone` gives the settings (origin, TTLs, name server), and for [`Change::Zone`] also the
    /// services. `Ok(false)`: a removed service was not there, nothing changed. On error the
    /// live snapshot stays.
    pub(crate) fn update(
        &mut self,
        live: &ArcSwap<Snapshot>,
        zone: &Zone,
        change: Change<'_>,
    ) -> Result<bool, ZoneError> {
        let settings = Settings::new(zone)?;
        let current = live.load_full();
        let revision = current.revision() + 1;
        if matches!(change, Change::Zone) && !current.fits(&settings, zone) {
            // New origin or TTLs: every part changes, nothing to reuse.
            let snapshot = Snapshot::build(zone, revision)?;
            live.store(Arc::new(snapshot));
            self.standby = None;
            self.pending.clear();
            return Ok(true);
        }
        let mut next = self.writable(&current);
        drop(current);
        let prepared = match prepare(&next, &settings, zone, revision, change) {
            Ok(Some(prepared)) => prepared,
            outcome => {
                // Nothing was changed: `next` is the live state, a standby with nothing pending.
                self.standby = Some(Arc::new(next));
                return outcome.map(|_| false);
            }
        };
        let mut log: Log = Some(Vec::new());
        let tables = next.tables_mut();
        for (key, node) in prepared.names {
            tables.set(Edit::Node(key, node), &mut log);
        }
        for id in prepared.removes {
            tables.remove(&settings, &id, &mut log);
        }
        for (id, part) in prepared.upserts {
            tables.upsert(&settings, id, part, &mut log);
        }
        next.set_revision(revision, prepared.apexes);
        let old = live.swap(Arc::new(next));
        self.standby = Some(old);
        self.pending = log.unwrap_or_default();
        Ok(true)
    }

    /// A snapshot with the state of `current`, owned: the standby caught up, or a copy.
    fn writable(&mut self, current: &Snapshot) -> Snapshot {
        if let Some(mut standby) = self.standby.take() {
            let deadline = Instant::now() + STANDBY_WAIT;
            loop {
                match Arc::try_unwrap(standby) {
                    Ok(mut snapshot) => {
                        let tables = snapshot.tables_mut();
                        for edit in self.pending.drain(..) {
                            tables.apply(edit);
                        }
                        return snapshot;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        standby = shared;
                        std::thread::yield_now();
                    }
                    Err(_) => {
                        tracing::debug!("dns standby snapshot still read; copying the live one");
                        break;
                    }
                }
            }
        }
        self.pending.clear();
        current.copy()
    }
}

/// What an update puts in, built before anything is changed so that an error leaves the
/// tables alone.
struct Prepared {
    apexes: [super::Apex; 3],
    names: Vec<super::NameEntry>,
    removes: Vec<super::ServiceId>,
    upserts: Vec<(super::ServiceId, Arc<super::ServicePart>)>,
}

/// Builds what `change` puts into `snapshot`; `None` when it changes nothing.
fn prepare(
    snapshot: &Snapshot,
    settings: &Settings,
    zone: &Zone,
    revision: u64,
    change: Change<'_>,
) -> Result<Option<Prepared>, ZoneError> {
    let tables = snapshot.tables();
    let mut removes = Vec::new();
    let mut upserts = Vec::new();
    let build = |service: &ServiceRecord, upserts: &mut Vec<_>| {
        let id = service_id(service);
        let old = tables.service(&id);
        // An unchanged service keeps its part (a new revision all the same).
        if old.is_none_or(|p| p.record() != service) {
            let part = settings.service(service, old.map(|p| &**p))?;
            upserts.push((id, Arc::new(part)));
        }
        Ok::<_, ZoneError>(())
    };
    let all = match change {
        Change::Zone => {
            let mut seen = HashSet::with_capacity(zone.services.len());
            for service in &zone.services {
                let id = service_id(service);
                if !seen.insert(id) {
                    return Err(duplicate(&service_id(service)));
                }
                build(service, &mut upserts)?;
            }
            removes.extend(
                tables
                    .service_ids()
                    .filter(|id| !seen.contains(*id))
                    .cloned(),
            );
            true
        }
        Change::Service(service) => {
            build(&service, &mut upserts)?;
            false
        }
        Change::Remove { namespace, name } => {
            let id = (Arc::from(namespace), Arc::from(name));
            if tables.service(&id).is_none() {
                return Ok(None);
            }
            removes.push(id);
            false
        }
    };
    let apex = settings.apex(zone, revision, all)?;
    Ok(Some(Prepared {
        apexes: apex.apexes,
        names: apex.names,
        removes,
        upserts,
    }))
}
