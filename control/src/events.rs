//! The event stream: what happened in the cluster, for people (as Marathon's event bus):
//! instances scheduled, ready, failed; rollouts started, complete, failed; nodes lost.
//!
//! Events are derived from store changes by comparing each object with its previous version,
//! kept in a bounded log for listing and broadcast live to `GET /api/v1/events?watch=1`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::api::{InstanceState, Kind, Object, RolloutPhase};
use crate::store::{EventType, Store};

/// Events kept for listing.
const KEEP: usize = 1000;
/// Events a slow live subscriber may fall behind by before it misses some.
const LIVE_BUFFER: usize = 1024;

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEvent {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// The store revision of the change.
    pub revision: u64,
    /// What happened, as a word: `InstanceReady`, `RolloutComplete`, `NodeNotReady`, ...
    pub reason: String,
    /// To what: `Instance default/hello-x7k2p`.
    pub object: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The recent events and the live feed.
pub struct EventLog {
    recent: Mutex<VecDeque<Arc<ClusterEvent>>>,
    live: broadcast::Sender<Arc<ClusterEvent>>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

impl EventLog {
    fn push(&self, e: ClusterEvent) {
        let e = Arc::new(e);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(e.clone());
        // No subscriber is fine.
        let _ = self.live.send(e);
    }

    /// The kept events, oldest first.
    pub fn recent(&self) -> Vec<Arc<ClusterEvent>> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ClusterEvent>> {
        self.live.subscribe()
    }
}

fn name(o: &Object) -> String {
    let m = o.meta();
    if o.kind().namespaced() {
        format!("{} {}/{}", o.kind(), m.namespace, m.name)
    } else {
        format!("{} {}", o.kind(), m.name)
    }
}

/// The events one change makes, given the object before it (`None` if it is new).
pub fn derive(before: Option<&Object>, after: &Object, kind: EventType) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut ev = |reason: &str, message: String| out.push((reason.to_owned(), message));
    match (kind, before, after) {
        (EventType::Deleted, _, Object::Endpoints(_)) => {}
        (EventType::Deleted, _, o) => ev(&format!("{}Deleted", o.kind()), String::new()),
        (_, _, Object::Endpoints(_)) => {}
        (_, None, Object::Instance(i)) => {
            ev(
                "InstanceCreated",
                format!("app {} revision {}", i.spec.app, i.spec.revision),
            );
            // Created and placed in one controller pass.
            if let Some(n) = &i.spec.node {
                ev("InstanceScheduled", format!("on node {n}"));
            }
        }
        (_, None, Object::Node(n)) => ev("NodeRegistered", format!("address {}", n.spec.address)),
        (_, None, o) => ev(&format!("{}Created", o.kind()), String::new()),
        (_, Some(Object::Instance(b)), Object::Instance(a)) => {
            if b.spec.node.is_none()
                && let Some(n) = &a.spec.node
            {
                ev("InstanceScheduled", format!("on node {n}"));
            }
            if !b.spec.stop && a.spec.stop {
                ev(
                    "InstanceStopRequested",
                    "left endpoints; stopping after the drain".into(),
                );
            }
            if a.status.state == InstanceState::Pending
                && a.status.message != b.status.message
                && let Some(m) = &a.status.message
            {
                ev("InstanceUnschedulable", m.clone());
            }
            if a.status.state != b.status.state {
                let s = &a.status;
                match s.state {
                    InstanceState::Starting => {
                        ev("InstanceStarting", format!("pid {}", s.pid.unwrap_or(0)))
                    }
                    InstanceState::Ready => {
                        let ports: Vec<String> =
                            s.ports.iter().map(|(n, p)| format!("{n}:{p}")).collect();
                        let addr = s.address.map(|a| a.to_string()).unwrap_or_default();
                        ev("InstanceReady", format!("{addr} {}", ports.join(",")))
                    }
                    InstanceState::Running => {
                        ev("InstanceNotReady", "readiness check failing".into())
                    }
                    InstanceState::Failed => ev(
                        "InstanceFailed",
                        format!(
                            "{} (restart {})",
                            s.message.clone().unwrap_or_default(),
                            s.restarts
                        ),
                    ),
                    InstanceState::Terminating => ev("InstanceStopping", String::new()),
                    InstanceState::Stopped => ev("InstanceStopped", String::new()),
                    InstanceState::Pending | InstanceState::Scheduled => {}
                }
            }
        }
        (_, Some(Object::App(b)), Object::App(a)) => {
            if a.spec.replicas != b.spec.replicas {
                ev(
                    "AppScaled",
                    format!("from {} to {} replicas", b.spec.replicas, a.spec.replicas),
                );
            }
            if a.status.revision != b.status.revision {
                ev("RolloutStarted", format!("revision {}", a.status.revision));
            }
            if a.status.rollout.phase != b.status.rollout.phase {
                match a.status.rollout.phase {
                    RolloutPhase::Complete => {
                        ev("RolloutComplete", a.status.rollout.message.clone())
                    }
                    RolloutPhase::Failed => ev("RolloutFailed", a.status.rollout.message.clone()),
                    RolloutPhase::Progressing => {}
                }
            }
        }
        (_, Some(Object::Node(b)), Object::Node(a)) => {
            if a.status.ready != b.status.ready {
                if a.status.ready {
                    ev("NodeReady", String::new());
                } else {
                    ev("NodeNotReady", a.status.message.clone().unwrap_or_default());
                }
            }
        }
        (_, Some(b), a) => {
            if !a.same_spec(b) {
                ev(&format!("{}Updated", a.kind()), String::new());
            }
        }
    }
    out
}

/// Derives events from the store until `shutdown`.
pub async fn run(store: Store, log: Arc<EventLog>, shutdown: CancellationToken) {
    loop {
        let mut previous: HashMap<String, Arc<Object>> = HashMap::new();
        let mut revision = store.revision();
        for kind in Kind::ALL {
            let (items, rev) = store.list(kind, None);
            revision = revision.min(rev);
            previous.extend(items.into_iter().map(|o| (o.key(), o)));
        }
        let Ok(mut watcher) = store.watch(revision) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let events = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = watcher.next() => e,
            };
            let Ok(events) = events else { break };
            for e in events {
                let key = e.object.key();
                let before = previous.get(&key).cloned();
                for (reason, message) in derive(before.as_deref(), &e.object, e.kind) {
                    log.push(ClusterEvent {
                        time: now_secs(),
                        revision: e.revision,
                        reason,
                        object: name(&e.object),
                        message,
                    });
                }
                match e.kind {
                    EventType::Deleted => previous.remove(&key),
                    _ => previous.insert(key, e.object.clone()),
                };
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Instance, InstanceSpec, InstanceStatus, Metadata, Template};

    fn inst(node: Option<&str>, state: InstanceState) -> Object {
        Object::Instance(Instance {
            metadata: Metadata::new("default", "hello-x"),
            spec: InstanceSpec {
                app: "hello".into(),
                revision: 1,
                template: Template {
                    command: "berth".into(),
                    args: vec![],
                    env: Default::default(),
                    working_dir: None,
                    resources: Default::default(),
                    ports: vec![],
                    readiness_probe: None,
                    liveness_probe: None,
                },
                node: node.map(str::to_owned),
                stop: false,
            },
            status: InstanceStatus {
                state,
                ..InstanceStatus::default()
            },
        })
    }

    #[test]
    fn instance_life_cycle_events() {
        let reasons = |b: Option<&Object>, a: &Object| -> Vec<String> {
            derive(b, a, EventType::Modified)
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        };
        let pending = inst(None, InstanceState::Pending);
        assert_eq!(
            derive(None, &pending, EventType::Added)[0].0,
            "InstanceCreated"
        );
        let placed = inst(Some("n1"), InstanceState::Scheduled);
        assert_eq!(reasons(Some(&pending), &placed), ["InstanceScheduled"]);
        let ready = inst(Some("n1"), InstanceState::Ready);
        assert_eq!(reasons(Some(&placed), &ready), ["InstanceReady"]);
        let failed = inst(Some("n1"), InstanceState::Failed);
        assert_eq!(reasons(Some(&ready), &failed), ["InstanceFailed"]);
        assert!(reasons(Some(&ready), &ready).is_empty());
        assert_eq!(
            derive(Some(&ready), &ready, EventType::Deleted)[0].0,
            "InstanceDeleted"
        );
    }
}
