//! Property tests: random clusters and workloads, every decision checked against the model.

use berth_scheduler::{
    Cluster, Constraint, Decision, Effect, Expression, HostPort, Mode, Node, Operator, Protocol,
    Request, Resources, Strategy as Placement, Taint, Toleration, TolerationOperator, Topology,
};
use proptest::prelude::*;

use crate::oracle::Model;

const ZONES: [&str; 3] = ["a", "b", "c"];
const APPS: [&str; 4] = ["web", "db", "cache", "batch"];

fn topology() -> impl Strategy<Value = Topology> {
    prop_oneof![
        Just(Topology::Node),
        Just(Topology::Label("zone".into())),
        Just(Topology::Label("rack".into())),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Required),
        (1u32..=100).prop_map(|weight| Mode::Preferred { weight })
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        (topology(), 1u32..3).prop_map(|(topology, max)| Constraint::MaxPer { topology, max }),
        (topology(), 1u32..3, mode()).prop_map(|(topology, max_skew, mode)| {
            Constraint::Spread {
                topology,
                max_skew,
                mode,
            }
        }),
        (0..APPS.len(), topology(), mode()).prop_map(|(a, topology, mode)| {
            Constraint::Affinity {
                app: APPS[a].into(),
                topology,
                mode,
            }
        }),
        (0..APPS.len(), topology(), mode()).prop_map(|(a, topology, mode)| {
            Constraint::AntiAffinity {
                app: APPS[a].into(),
                topology,
                mode,
            }
        }),
    ]
}

fn node(i: usize) -> impl Strategy<Value = Node> {
    (
        (500u64..8000, 256u64..8192, 1u32..10),
        (prop::option::of(0..ZONES.len()), prop::option::of(0u8..4)),
        (any::<bool>(), 0u8..10, prop::option::of(1u16..4)),
    )
        .prop_map(move |((cpu, mem, max), (zone, rack), (ssd, taint, port))| {
            let mut n = Node {
                name: format!("n{i:02}"),
                allocatable: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem << 20,
                },
                max_instances: max,
                schedulable: taint != 9,
                ..Node::default()
            };
            if let Some(z) = zone {
                n.labels.insert("zone".into(), ZONES[z].into());
            }
            if let Some(r) = rack {
                n.labels.insert("rack".into(), format!("r{r}"));
            }
            if ssd {
                n.labels.insert("disk".into(), "ssd".into());
            }
            match taint {
                0 => n.taints.push(Taint {
                    key: "gpu".into(),
                    value: "yes".into(),
                    effect: Effect::NoSchedule,
                }),
                1 => n.taints.push(Taint {
                    key: "spot".into(),
                    value: String::new(),
                    effect: Effect::PreferNoSchedule,
                }),
                _ => {}
            }
            if let Some(p) = port {
                n.reserved_ports.push(HostPort::tcp(p * 1000));
            }
            n
        })
}

fn request(i: usize) -> impl Strategy<Value = Request> {
    (
        (0..APPS.len(), 0u64..2500, 0u64..3000, 0u8..3, 0u8..3),
        (
            prop::option::of(1u16..4),
            0u8..6,
            prop::collection::vec(constraint(), 0..3),
            0u8..3,
            any::<bool>(),
        ),
    )
        .prop_map(
            move |((app, cpu, mem, priority, strategy), (port, sel, constraints, tenant, tol))| {
                let mut r = Request {
                    id: format!("i{i:03}"),
                    app: APPS[app].into(),
                    tenant: format!("t{tenant}"),
                    priority: i32::from(priority) * 10,
                    resources: Resources {
                        cpu_millis: cpu,
                        memory_bytes: mem << 20,
                    },
                    constraints,
                    strategy: [Placement::Spread, Placement::BinPack, Placement::Balanced]
                        [strategy as usize],
                    ..Request::default()
                };
                if let Some(p) = port {
                    r.host_ports.push(HostPort {
                        port: p * 1000,
                        protocol: if p == 3 { Protocol::Udp } else { Protocol::Tcp },
                    });
                }
                match sel {
                    0 => {
                        r.node_selector.insert("disk".into(), "ssd".into());
                    }
                    1 => r.node_affinity.push(Expression::is_in("zone", &["a", "b"])),
                    2 => r.node_affinity.push(Expression::not_in("zone", &["a"])),
                    3 => r.node_affinity.push(Expression {
                        key: "rack".into(),
                        operator: Operator::Exists,
                    }),
                    _ => {}
                }
                if tol {
                    r.tolerations.push(Toleration {
                        key: Some("gpu".into()),
                        operator: TolerationOperator::Exists,
                        effect: None,
                    });
                }
                r
            },
        )
}

fn cluster_and_work() -> impl Strategy<Value = (Vec<Node>, Vec<Request>, Vec<u8>)> {
    (1usize..10, 0usize..40).prop_flat_map(|(n, m)| {
        (
            (0..n).map(node).collect::<Vec<_>>(),
            (0..m).map(request).collect::<Vec<_>>(),
            prop::collection::vec(any::<u8>(), m),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every decision, one at a time, agrees with the model: placements are feasible (no
    /// over-commit, ports free, every required constraint holds), refusals have no feasible
    /// node, preemptions evict a minimal set of lower-priority instances. Releases and node
    /// removals are mixed in.
    #[test]
    fn decisions_agree_with_the_model((nodes, reqs, ops) in cluster_and_work(), seed in any::<u64>()) {
        let mut c = Cluster::with_seed(seed);
        let mut model = Model::default();
        for n in &nodes {
            c.upsert_node(n.clone());
            model.nodes.insert(n.name.clone(), n.clone());
        }
        for (r, op) in reqs.iter().zip(&ops) {
            let d = c.schedule(std::slice::from_ref(r));
            model.apply(r, &d[0]);
            model.check_safety(&c);
            match op % 16 {
                0 => {
                    // Release a placed instance.
                    if let Some(id) = model.placed.keys().nth(usize::from(*op) % 3).cloned() {
                        c.release(&id);
                        model.placed.remove(&id);
                    }
                }
                1 if model.nodes.len() > 1 => {
                    let name = model.nodes.keys().next().cloned().unwrap();
                    c.remove_node(&name);
                    model.nodes.remove(&name);
                    model.placed.retain(|_, (_, n)| *n != name);
                }
                _ => {}
            }
            model.check_safety(&c);
        }
    }

    /// A whole batch at once (priorities reordered, fairness when over capacity): still safe,
    /// and every placement recorded where the decision says.
    #[test]
    fn batches_never_over_commit((nodes, reqs, _ops) in cluster_and_work()) {
        let mut c = Cluster::new();
        let mut model = Model::default();
        for n in &nodes {
            c.upsert_node(n.clone());
            model.nodes.insert(n.name.clone(), n.clone());
        }
        let decisions = c.schedule(&reqs);
        for (r, d) in reqs.iter().zip(&decisions) {
            if let Decision::Placed { node } | Decision::Preempted { node, .. } = d {
                model.placed.insert(r.id.clone(), (r.clone(), node.clone()));
            }
            if let Decision::Preempted { victims, .. } = d {
                for v in victims {
                    model.placed.remove(v);
                }
            }
        }
        // Decisions come back in batch order but were taken by priority: a victim may appear
        // before the request that evicted it. What the cluster holds is what survived.
        model.placed.retain(|id, _| c.node_of(id).is_some());
        for (id, (_, node)) in &model.placed {
            prop_assert_eq!(c.node_of(id), Some(node.as_str()));
        }
        model.check_safety(&c);
    }

    /// Same seed, same inputs: same decisions.
    #[test]
    fn deterministic_for_a_seed((nodes, reqs, _ops) in cluster_and_work(), seed in any::<u64>()) {
        let run = || {
            let mut c = Cluster::with_seed(seed);
            for n in &nodes {
                c.upsert_node(n.clone());
            }
            c.schedule(&reqs)
        };
        prop_assert_eq!(run(), run());
    }
}
