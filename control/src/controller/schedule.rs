//! Scheduling: pending instances are placed through the scheduler crate.

use berth_scheduler::{
    Cluster, Constraint, Decision, Mode, Request, Resources, Strategy, Topology,
};

use crate::api::{
    Instance, InstanceState, Kind, Object, PlacementConstraint, PlacementStrategy, TaintEffect,
    TolerationOperator, parse_cpu, parse_memory,
};

use super::World;

fn resources(i: &Instance) -> Resources {
    // Templates were validated on apply; an unparsable quantity counts as nothing rather than
    // blocking the instance forever.
    Resources {
        cpu_millis: parse_cpu(&i.spec.template.resources.cpu).unwrap_or(0),
        memory_bytes: parse_memory(&i.spec.template.resources.memory).unwrap_or(0),
    }
}

/// The scheduler's identity of an app: apps are per namespace.
fn app_id(namespace: &str, app: &str) -> String {
    format!("{namespace}/{app}")
}

fn topology(t: &str) -> Topology {
    if t == "node" {
        Topology::Node
    } else {
        Topology::Label(t.to_owned())
    }
}

fn effect(e: TaintEffect) -> berth_scheduler::Effect {
    match e {
        TaintEffect::NoSchedule => berth_scheduler::Effect::NoSchedule,
        TaintEffect::PreferNoSchedule => berth_scheduler::Effect::PreferNoSchedule,
        TaintEffect::NoExecute => berth_scheduler::Effect::NoExecute,
    }
}

/// A node's taints as the scheduler takes them.
fn taints(n: &crate::api::Node) -> Vec<berth_scheduler::Taint> {
    n.spec
        .taints
        .iter()
        .map(|t| berth_scheduler::Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: effect(t.effect),
        })
        .collect()
}

/// An app's tolerations as the scheduler takes them.
fn tolerations(ts: &[crate::api::Toleration]) -> Vec<berth_scheduler::Toleration> {
    ts.iter()
        .map(|t| berth_scheduler::Toleration {
            key: (!t.key.is_empty()).then(|| t.key.clone()),
            operator: match t.operator {
                TolerationOperator::Exists => berth_scheduler::TolerationOperator::Exists,
                TolerationOperator::Equal => {
                    berth_scheduler::TolerationOperator::Equal(t.value.clone())
                }
            },
            effect: t.effect.map(effect),
        })
        .collect()
}

fn mode(required: bool, weight: u32) -> Mode {
    if required {
        Mode::Required
    } else {
        Mode::Preferred { weight }
    }
}

/// What the scheduler needs to know of an instance: its app's priority, strategy, selector and
/// constraints, its tenant (namespace) and its resources.
fn request(world: &World, key: &str, i: &Instance) -> Request {
    let ns = &i.metadata.namespace;
    let app = match world.get(&crate::api::key(Kind::App, ns, &i.spec.app)) {
        Some(Object::App(a)) => Some(a),
        _ => None,
    };
    let constraints = app
        .map(|a| {
            a.spec
                .constraints
                .iter()
                .map(|c| match c {
                    PlacementConstraint::MaxPer { topology: t, max } => Constraint::MaxPer {
                        topology: topology(t),
                        max: *max,
                    },
                    PlacementConstraint::Spread {
                        topology: t,
                        max_skew,
                        required,
                    } => Constraint::Spread {
                        topology: topology(t),
                        max_skew: *max_skew,
                        mode: mode(*required, 50),
                    },
                    PlacementConstraint::Affinity {
                        app: other,
                        topology: t,
                        required,
                        weight,
                    } => Constraint::Affinity {
                        app: app_id(ns, other),
                        topology: topology(t),
                        mode: mode(*required, *weight),
                    },
                    PlacementConstraint::AntiAffinity {
                        app: other,
                        topology: t,
                        required,
                        weight,
                    } => Constraint::AntiAffinity {
                        app: app_id(ns, other),
                        topology: topology(t),
                        mode: mode(*required, *weight),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Request {
        id: key.to_owned(),
        app: app_id(ns, &i.spec.app),
        tenant: ns.clone(),
        priority: app.map_or(0, |a| a.spec.priority),
        resources: resources(i),
        node_selector: app
            .map(|a| a.spec.node_selector.clone())
            .unwrap_or_default(),
        tolerations: app
            .map(|a| tolerations(&a.spec.tolerations))
            .unwrap_or_default(),
        constraints,
        strategy: match app.map(|a| a.spec.strategy) {
            Some(PlacementStrategy::BinPack) => Strategy::BinPack,
            _ => Strategy::Spread,
        },
        ..Default::default()
    }
}

/// Builds the scheduler's view of the cluster and places every pending instance.
pub fn reconcile_scheduling(world: &mut World) {
    let mut cluster = Cluster::new();
    for o in world.of(Kind::Node) {
        if let Object::Node(n) = o {
            cluster.upsert_node(berth_scheduler::Node {
                name: n.metadata.name.clone(),
                allocatable: Resources {
                    cpu_millis: n.spec.cpu_millis,
                    memory_bytes: n.spec.memory_bytes,
                },
                max_instances: n.spec.max_instances,
                labels: n.metadata.labels.clone(),
                taints: taints(n),
                schedulable: n.status.ready && !n.spec.unschedulable,
                ..Default::default()
            });
        }
    }
    let mut pending = Vec::new();
    for o in world.of(Kind::Instance) {
        let Object::Instance(i) = o else { continue };
        match &i.spec.node {
            Some(node) if i.status.state != InstanceState::Stopped => {
                // Recorded with its priority and constraints, so that later decisions respect
                // them and preemption knows what it may evict. Instances on nodes that are gone
                // hold nothing; node loss is handled elsewhere.
                let _ = cluster.place_request(&request(world, &o.key(), i), node);
            }
            Some(_) => {}
            None if !i.spec.stop => pending.push((o.key(), i.clone())),
            None => {}
        }
    }
    // Oldest first (the scheduler orders by priority, and by fairness between tenants).
    pending.sort_by_key(|(_, i)| i.metadata.created_revision);
    let batch: Vec<Request> = pending
        .iter()
        .map(|(key, i)| request(world, key, i))
        .collect();
    let decisions = cluster.schedule(&batch);
    for ((key, _), decision) in pending.iter().zip(decisions) {
        if let Decision::Preempted { victims, .. } = &decision {
            // Victims are store keys of running instances; stopping them frees their node.
            for victim in victims {
                world.update(victim, |o| {
                    let Object::Instance(v) = o else { return false };
                    let changed = !v.spec.stop;
                    v.spec.stop = true;
                    changed
                });
            }
        }
        world.update(key, |o| {
            let Object::Instance(i) = o else { return false };
            match decision {
                Decision::Placed { node } | Decision::Preempted { node, .. } => {
                    i.spec.node = Some(node);
                    i.status.state = InstanceState::Scheduled;
                    i.status.message = None;
                    true
                }
                Decision::Unschedulable(why) => {
                    let msg = Some(why.to_string());
                    if i.status.message == msg {
                        return false;
                    }
                    i.status.state = InstanceState::Pending;
                    i.status.message = msg;
                    true
                }
                Decision::Invalid(why) => {
                    let msg = Some(why.to_string());
                    if i.status.message == msg {
                        return false;
                    }
                    i.status.state = InstanceState::Pending;
                    i.status.message = msg;
                    true
                }
            }
        });
    }
}
