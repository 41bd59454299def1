//! The controllers driven as pure functions.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::api::*;

fn app(replicas: u32) -> Object {
    Object::App(App {
        metadata: Metadata::new("default", "hello"),
        spec: AppSpec {
            replicas,
            strategy: PlacementStrategy::Spread,
            node_selector: BTreeMap::new(),
            template: Template {
                command: "berth".into(),
                args: vec!["hello-server".into()],
                env: BTreeMap::new(),
                working_dir: None,
                resources: ResourceSpec::default(),
                ports: vec![AppPort {
                    name: "web".into(),
                    protocol: Protocol::Tcp,
                    port: None,
                }],
                readiness_probe: None,
            },
        },
        status: AppStatus::default(),
    })
}

fn node(name: &str) -> Object {
    Object::Node(Node {
        metadata: Metadata::new("", name),
        spec: NodeSpec {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            max_instances: 110,
            unschedulable: false,
        },
        status: NodeStatus { ready: true },
    })
}

fn service() -> Object {
    Object::Service(Service {
        metadata: Metadata::new("default", "hello"),
        spec: ServiceSpec {
            app: "hello".into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: Some("web".into()),
                protocol: Protocol::Tcp,
            }],
            headless: false,
        },
        status: ServiceStatus::default(),
    })
}

fn names() -> impl FnMut(&str) -> String {
    let mut n = 0;
    move |app: &str| {
        n += 1;
        format!("{app}-{n}")
    }
}

fn instances(w: &World) -> Vec<Instance> {
    w.of(Kind::Instance)
        .filter_map(|o| match o {
            Object::Instance(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

/// Runs passes until nothing changes, as the store-driven loop does; panics if it never settles.
fn settle(w: &mut World, names: &mut dyn FnMut(&str) -> String) {
    for _ in 0..10 {
        let mut next = World::new(w.objects.values().cloned());
        reconcile(&mut next, names);
        let changed = next.dirty.len();
        *w = World::new(next.objects.into_values());
        if changed == 0 {
            return;
        }
    }
    panic!("controllers do not converge");
}

fn make_ready(w: &mut World, port_base: u16) {
    for (n, i) in instances(w).iter().enumerate() {
        w.update(&Object::Instance(i.clone()).key(), |o| {
            let Object::Instance(i) = o else { return false };
            i.status.state = InstanceState::Ready;
            i.status.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
            i.status.ports.insert("web".into(), port_base + n as u16);
            true
        });
    }
}

fn endpoints(w: &World) -> Vec<EndpointAddress> {
    match w.get("endpoints/default/hello") {
        Some(Object::Endpoints(e)) => e.addresses.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn app_gets_its_replicas_placed_and_served() {
    let mut names = names();
    let mut w = World::new([app(3), node("n1"), node("n2"), service()]);
    settle(&mut w, &mut names);
    let inst = instances(&w);
    assert_eq!(inst.len(), 3);
    assert!(
        inst.iter()
            .all(|i| i.status.state == InstanceState::Scheduled)
    );
    let on_n1 = inst
        .iter()
        .filter(|i| i.spec.node.as_deref() == Some("n1"))
        .count();
    assert!((1..=2).contains(&on_n1), "spread over both nodes");
    assert!(endpoints(&w).is_empty(), "nothing is ready yet");

    make_ready(&mut w, 31000);
    settle(&mut w, &mut names);
    let eps = endpoints(&w);
    assert_eq!(eps.len(), 3);
    assert_eq!(
        eps[0].ports.get("http"),
        Some(&31000),
        "keyed by service port name"
    );
    let Some(Object::App(a)) = w.get("apps/default/hello") else {
        panic!()
    };
    assert_eq!((a.status.replicas, a.status.ready_replicas), (3, 3));
}

#[test]
fn scale_down_leaves_endpoints_before_stopping_and_forgets_stopped() {
    let mut names = names();
    let mut w = World::new([app(3), node("n1"), service()]);
    settle(&mut w, &mut names);
    make_ready(&mut w, 31000);
    settle(&mut w, &mut names);
    w.put(app(1));
    settle(&mut w, &mut names);
    let stopping: Vec<_> = instances(&w).into_iter().filter(|i| i.spec.stop).collect();
    assert_eq!(stopping.len(), 2);
    assert_eq!(
        endpoints(&w).len(),
        1,
        "stopping instances left endpoints at once"
    );
    // The agent reports them stopped: they are forgotten.
    for i in &stopping {
        w.update(&Object::Instance(i.clone()).key(), |o| {
            let Object::Instance(i) = o else { return false };
            i.status.state = InstanceState::Stopped;
            true
        });
    }
    settle(&mut w, &mut names);
    assert_eq!(instances(&w).len(), 1);
}

#[test]
fn deleted_app_stops_instances_and_deleted_service_drops_endpoints() {
    let mut names = names();
    let mut w = World::new([app(2), node("n1"), service()]);
    settle(&mut w, &mut names);
    w.delete("apps/default/hello");
    w.delete("services/default/hello");
    settle(&mut w, &mut names);
    assert!(instances(&w).iter().all(|i| i.spec.stop));
    assert!(w.get("endpoints/default/hello").is_none());
}

#[test]
fn unschedulable_instances_say_why() {
    let mut names = names();
    let mut w = World::new([app(1)]);
    settle(&mut w, &mut names);
    let i = &instances(&w)[0];
    assert_eq!(i.status.state, InstanceState::Pending);
    assert_eq!(i.status.message.as_deref(), Some("0/0 nodes available"));
    w.put(node("late"));
    settle(&mut w, &mut names);
    assert_eq!(instances(&w)[0].spec.node.as_deref(), Some("late"));
}

#[test]
fn store_pass_skips_objects_changed_since_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.apply(vec![app(2)]).unwrap();
    store
        .transaction(|tx| {
            tx.put(node("n1"));
            Ok(())
        })
        .unwrap();
    while pass(&store).unwrap() > 0 {}
    let (inst, _) = store.list(Kind::Instance, Some("default"));
    assert_eq!(inst.len(), 2);
    assert!(
        inst.iter()
            .all(|o| matches!(&**o, Object::Instance(i) if i.spec.node.is_some()))
    );
    assert_eq!(pass(&store).unwrap(), 0, "converged");
}
