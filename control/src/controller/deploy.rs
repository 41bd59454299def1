//! Replicas: create instances for apps that have too few, stop the excess, and forget the
//! stopped.

use crate::api::{
    App, AppStatus, Instance, InstanceSpec, InstanceState, InstanceStatus, Kind, Metadata, Object,
};

use super::World;

/// Which live instance goes first when an app scales down: unplaced, then not ready, then the
/// most restarted, then the newest.
fn stop_order(i: &Instance) -> (bool, bool, std::cmp::Reverse<u32>, std::cmp::Reverse<u64>) {
    (
        i.spec.node.is_some(),
        i.status.state == InstanceState::Ready,
        std::cmp::Reverse(i.status.restarts),
        std::cmp::Reverse(i.metadata.created_revision),
    )
}

/// Brings the number of live instances of every app to its replicas.
pub fn reconcile_apps(world: &mut World, new_name: &mut dyn FnMut(&str) -> String) {
    let apps: Vec<App> = world
        .of(Kind::App)
        .filter_map(|o| match o {
            Object::App(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    let instances: Vec<Instance> = world
        .of(Kind::Instance)
        .filter_map(|o| match o {
            Object::Instance(i) => Some(i.clone()),
            _ => None,
        })
        .collect();

    for app in &apps {
        let ns = &app.metadata.namespace;
        let mut live: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                &i.metadata.namespace == ns && i.spec.app == app.metadata.name && !i.spec.stop
            })
            .collect();
        let want = app.spec.replicas as usize;
        if live.len() < want {
            for _ in live.len()..want {
                let name = loop {
                    let n = new_name(&app.metadata.name);
                    if world
                        .get(&crate::api::key(Kind::Instance, ns, &n))
                        .is_none()
                    {
                        break n;
                    }
                };
                let mut metadata = Metadata::new(ns, &name);
                metadata
                    .labels
                    .insert("app".into(), app.metadata.name.clone());
                world.put(Object::Instance(Instance {
                    metadata,
                    spec: InstanceSpec {
                        app: app.metadata.name.clone(),
                        template: app.spec.template.clone(),
                        node: None,
                        stop: false,
                    },
                    status: InstanceStatus::default(),
                }));
            }
        } else if live.len() > want {
            live.sort_by_key(|i| stop_order(i));
            for i in &live[..live.len() - want] {
                stop(world, i);
            }
        }
        // Observed at the start of this pass; the next pass reports the effect of its changes.
        let observed = live.len();
        let ready = live
            .iter()
            .filter(|i| i.status.state == InstanceState::Ready)
            .count();
        let status = AppStatus {
            replicas: u32::try_from(observed).unwrap_or(u32::MAX),
            ready_replicas: u32::try_from(ready).unwrap_or(u32::MAX),
        };
        world.update(&Object::App(app.clone()).key(), |o| match o {
            Object::App(a) if a.status != status => {
                a.status = status;
                true
            }
            _ => false,
        });
    }

    for i in &instances {
        let app_key = crate::api::key(Kind::App, &i.metadata.namespace, &i.spec.app);
        if !i.spec.stop && world.get(&app_key).is_none() {
            stop(world, i);
        }
        // Forget an instance once it is stopped, or if it never ran anywhere.
        if i.spec.stop
            && (i.spec.node.is_none() || matches!(i.status.state, InstanceState::Stopped))
        {
            world.delete(&Object::Instance(i.clone()).key());
        }
    }
}

fn stop(world: &mut World, i: &Instance) {
    world.update(&Object::Instance(i.clone()).key(), |o| match o {
        Object::Instance(i) if !i.spec.stop => {
            i.spec.stop = true;
            true
        }
        _ => false,
    });
}
