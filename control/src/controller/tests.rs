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
            priority: 0,
            constraints: vec![],
            update_strategy: UpdateStrategy::default(),
            revision_history_limit: 10,
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
                liveness_probe: None,
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
            log_port: None,
        },
        status: NodeStatus {
            ready: true,
            heartbeat_at: 0,
            since: 0,
            message: None,
        },
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
            lb_policy: LbPolicy::RoundRobin,
            session_affinity: SessionAffinity::None,
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
        next.now = w.now;
        reconcile(&mut next, names);
        let changed = next.dirty.len();
        let now = w.now;
        *w = World::new(next.objects.into_values());
        w.now = now;
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
    let mut n1 = node("n1");
    if let Object::Node(n) = &mut n1 {
        // A live agent: heartbeats by the server's clock.
        n.status.heartbeat_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
    }
    store
        .transaction(|tx| {
            tx.put(n1);
            Ok(())
        })
        .unwrap();
    while pass(&store, NodePolicy::default()).unwrap() > 0 {}
    let (inst, _) = store.list(Kind::Instance, Some("default"));
    assert_eq!(inst.len(), 2);
    assert!(
        inst.iter()
            .all(|o| matches!(&**o, Object::Instance(i) if i.spec.node.is_some()))
    );
    assert_eq!(pass(&store, NodePolicy::default()).unwrap(), 0, "converged");
}

/// What `berth apply` does: the new spec, the stored status kept.
fn apply(w: &mut World, new: Object) {
    let key = new.key();
    match w.get(&key).cloned() {
        Some(mut cur) => {
            cur.take_spec(new);
            w.put(cur);
        }
        None => w.put(new),
    }
}

fn with_args(mut o: Object, args: &[&str]) -> Object {
    if let Object::App(a) = &mut o {
        a.spec.template.args = args.iter().map(|s| s.to_string()).collect();
    }
    o
}

fn app_status(w: &World) -> AppStatus {
    match w.get("apps/default/hello") {
        Some(Object::App(a)) => a.status.clone(),
        other => panic!("{other:?}"),
    }
}

/// The agent's part: every placed, running instance turns ready; stopped ones report stopped.
fn agent_step(w: &mut World, next_port: &mut u16) {
    for i in instances(w) {
        let key = Object::Instance(i.clone()).key();
        w.update(&key, |o| {
            let Object::Instance(i) = o else { return false };
            match (i.spec.stop, i.status.state) {
                (true, InstanceState::Stopped) => false,
                (true, _) => {
                    i.status.state = InstanceState::Stopped;
                    true
                }
                (false, InstanceState::Scheduled) => {
                    i.status.state = InstanceState::Ready;
                    i.status.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
                    i.status.ports.insert("web".into(), *next_port);
                    *next_port += 1;
                    true
                }
                _ => false,
            }
        });
    }
}

#[test]
fn rolling_update_keeps_capacity_and_surges_by_one() {
    let mut names = names();
    let mut w = World::new([app(3), node("n1"), node("n2"), service()]);
    let mut port = 31000;
    settle(&mut w, &mut names);
    agent_step(&mut w, &mut port);
    settle(&mut w, &mut names);
    assert_eq!(app_status(&w).rollout.phase, RolloutPhase::Complete);
    assert_eq!(app_status(&w).revision, 1);

    apply(&mut w, with_args(app(3), &["hello-server", "--v2"]));
    let mut steps = 0;
    loop {
        settle(&mut w, &mut names);
        let live: Vec<_> = instances(&w).into_iter().filter(|i| !i.spec.stop).collect();
        let ready = endpoints(&w).len();
        assert!(
            live.len() <= 4,
            "at most replicas + maxSurge live: {}",
            live.len()
        );
        assert!(
            ready >= 3,
            "never below replicas ready (maxUnavailable 0): {ready}"
        );
        let s = app_status(&w);
        if s.rollout.phase == RolloutPhase::Complete {
            assert_eq!(s.revision, 2);
            assert!(
                live.iter()
                    .all(|i| i.spec.revision == 2 && i.spec.template.args[1] == "--v2")
            );
            break;
        }
        agent_step(&mut w, &mut port);
        steps += 1;
        assert!(steps < 20, "rollout does not finish: {s:?}");
    }
    assert!(steps >= 3, "one at a time: {steps} steps");
    let history: Vec<u32> = app_status(&w).history.iter().map(|r| r.revision).collect();
    assert_eq!(history, [1, 2]);
}

#[test]
fn undo_brings_the_old_template_back_as_a_new_revision() {
    let mut names = names();
    let mut w = World::new([app(1), node("n1")]);
    let mut port = 31000;
    settle(&mut w, &mut names);
    for args in [&["a"][..], &["b"], &["a"]] {
        apply(&mut w, with_args(app(1), args));
        for _ in 0..6 {
            settle(&mut w, &mut names);
            agent_step(&mut w, &mut port);
        }
    }
    let s = app_status(&w);
    let history: Vec<(u32, String)> = s
        .history
        .iter()
        .map(|r| (r.revision, r.template.args.join(" ")))
        .collect();
    assert_eq!(
        history,
        [
            (1, "hello-server".to_owned()),
            (3, "b".into()),
            (4, "a".into())
        ]
    );
    assert_eq!(s.revision, 4);
    assert_eq!(s.rollout.phase, RolloutPhase::Complete);
    let live: Vec<_> = instances(&w).into_iter().filter(|i| !i.spec.stop).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].spec.template.args, ["a"]);
}

#[test]
fn rollout_without_progress_fails_after_the_deadline() {
    let mut names = names();
    let mut w = World::new([app(2), node("n1"), service()]);
    w.now = 1_000;
    heartbeat(&mut w, "n1");
    let mut port = 31000;
    settle(&mut w, &mut names);
    agent_step(&mut w, &mut port);
    settle(&mut w, &mut names);
    apply(&mut w, with_args(app(2), &["broken"]));
    settle(&mut w, &mut names);
    // The new instance never turns ready; the node stays alive.
    w.now += 599;
    heartbeat(&mut w, "n1");
    settle(&mut w, &mut names);
    assert_eq!(app_status(&w).rollout.phase, RolloutPhase::Progressing);
    w.now += 2;
    heartbeat(&mut w, "n1");
    settle(&mut w, &mut names);
    let s = app_status(&w);
    assert_eq!(s.rollout.phase, RolloutPhase::Failed, "{s:?}");
    assert!(
        s.rollout.message.contains("no progress for 600 s"),
        "{}",
        s.rollout.message
    );
    assert_eq!(endpoints(&w).len(), 2, "the old instances keep serving");
}

fn heartbeat(w: &mut World, node: &str) {
    let now = w.now;
    w.update(&format!("nodes//{node}"), |o| {
        let Object::Node(n) = o else { return false };
        n.status.heartbeat_at = now;
        true
    });
}

#[test]
fn lost_node_leaves_endpoints_then_its_instances_move() {
    let mut names = names();
    let mut w = World::new([app(2), node("a"), service()]);
    w.now = 1_000;
    heartbeat(&mut w, "a");
    let mut port = 31000;
    settle(&mut w, &mut names);
    agent_step(&mut w, &mut port);
    settle(&mut w, &mut names);
    assert_eq!(endpoints(&w).len(), 2);
    w.put(node("b"));
    heartbeat(&mut w, "b");

    // Node a falls silent; b keeps beating.
    for _ in 0..11 {
        w.now += 1;
        heartbeat(&mut w, "b");
        settle(&mut w, &mut names);
    }
    let Some(Object::Node(a)) = w.get("nodes//a") else {
        panic!()
    };
    assert!(!a.status.ready);
    assert_eq!(a.status.message.as_deref(), Some("no heartbeat for 11 s"));
    assert!(
        endpoints(&w).is_empty(),
        "instances on a lost node leave endpoints at once"
    );
    assert!(
        instances(&w)
            .iter()
            .all(|i| i.spec.node.as_deref() == Some("a")),
        "not moved yet"
    );

    // After the eviction grace they are replaced on b.
    for _ in 0..31 {
        w.now += 1;
        heartbeat(&mut w, "b");
        settle(&mut w, &mut names);
        agent_step(&mut w, &mut port);
    }
    settle(&mut w, &mut names);
    let inst = instances(&w);
    assert_eq!(inst.len(), 2, "{inst:?}");
    assert!(inst.iter().all(|i| i.spec.node.as_deref() == Some("b")));
    assert_eq!(endpoints(&w).len(), 2);
}

fn named_app(name: &str, replicas: u32, cpu: &str, priority: i32) -> Object {
    let mut o = app(replicas);
    if let Object::App(a) = &mut o {
        a.metadata.name = name.into();
        a.spec.priority = priority;
        a.spec.template.resources.cpu = cpu.into();
    }
    o
}

#[test]
fn constraints_reach_the_scheduler() {
    let mut names = names();
    let mut o = app(3);
    if let Object::App(a) = &mut o {
        a.spec.constraints = vec![PlacementConstraint::MaxPer {
            topology: "node".into(),
            max: 1,
        }];
    }
    let mut w = World::new([o, node("n1"), node("n2")]);
    settle(&mut w, &mut names);
    let inst = instances(&w);
    let mut placed: Vec<_> = inst.iter().filter_map(|i| i.spec.node.clone()).collect();
    placed.sort();
    assert_eq!(placed, ["n1", "n2"], "one per node");
    let refused = inst
        .iter()
        .find(|i| i.spec.node.is_none())
        .expect("a third waits");
    assert!(
        refused
            .status
            .message
            .as_deref()
            .unwrap_or("")
            .starts_with("0/2 nodes available"),
        "{refused:?}"
    );
}

#[test]
fn higher_priority_preempts_lower() {
    let mut names = names();
    // n1 has 2000m: the batch app takes all of it.
    let mut w = World::new([named_app("batch", 2, "1000m", 0), node("n1")]);
    let mut port = 31000;
    settle(&mut w, &mut names);
    agent_step(&mut w, &mut port);
    settle(&mut w, &mut names);
    assert!(instances(&w).iter().all(|i| i.spec.node.is_some()));
    w.put(named_app("web", 1, "1000m", 100));
    settle(&mut w, &mut names);
    let inst = instances(&w);
    let web = inst
        .iter()
        .find(|i| i.spec.app == "web")
        .expect("web instance");
    assert_eq!(web.spec.node.as_deref(), Some("n1"), "placed by preemption");
    let stopped: Vec<_> = inst
        .iter()
        .filter(|i| i.spec.app == "batch" && i.spec.stop)
        .collect();
    assert_eq!(stopped.len(), 1, "one victim is enough");
}
