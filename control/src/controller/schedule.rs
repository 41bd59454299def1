//! Scheduling: pending instances are placed through the scheduler crate.

use berth_scheduler::{Cluster, Decision, Request, Resources, Strategy};

use crate::api::{
    Instance, InstanceState, Kind, Object, PlacementStrategy, parse_cpu, parse_memory,
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
                // Instances on nodes that are gone hold nothing; node loss is handled elsewhere.
                let _ = cluster.place(&o.key(), &i.spec.app, resources(i), node);
            }
            Some(_) => {}
            None if !i.spec.stop => pending.push((o.key(), i.clone())),
            None => {}
        }
    }
    // Oldest first: fair to those that waited longest.
    pending.sort_by_key(|(_, i)| i.metadata.created_revision);
    let app_strategy =
        |world: &World, i: &Instance| -> (Strategy, std::collections::BTreeMap<String, String>) {
            match world.get(&crate::api::key(
                Kind::App,
                &i.metadata.namespace,
                &i.spec.app,
            )) {
                Some(Object::App(a)) => (
                    match a.spec.strategy {
                        PlacementStrategy::Spread => Strategy::Spread,
                        PlacementStrategy::BinPack => Strategy::BinPack,
                    },
                    a.spec.node_selector.clone(),
                ),
                _ => (Strategy::Spread, Default::default()),
            }
        };
    let batch: Vec<Request> = pending
        .iter()
        .map(|(key, i)| {
            let (strategy, node_selector) = app_strategy(world, i);
            Request {
                id: key.clone(),
                app: format!("{}/{}", i.metadata.namespace, i.spec.app),
                resources: resources(i),
                node_selector,
                strategy,
                ..Default::default()
            }
        })
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
