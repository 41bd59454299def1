use super::*;
use crate::model::Strategy;

pub(super) fn node(name: &str, cpu: u64, mem: u64) -> Node {
    Node {
        name: name.into(),
        allocatable: Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
        },
        ..Node::default()
    }
}

pub(super) fn req(id: &str, app: &str, cpu: u64, mem: u64, strategy: Strategy) -> Request {
    Request {
        id: id.into(),
        app: app.into(),
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
        },
        strategy,
        ..Request::default()
    }
}

#[test]
fn spread_puts_replicas_on_different_nodes() {
    let mut c = Cluster::new();
    for n in ["a", "b", "c"] {
        c.upsert_node(node(n, 4000, 8 << 30));
    }
    let batch: Vec<_> = (0..3)
        .map(|i| {
            req(
                &format!("hello-{i}"),
                "hello",
                100,
                64 << 20,
                Strategy::Spread,
            )
        })
        .collect();
    let mut nodes: Vec<_> = c
        .schedule(&batch)
        .into_iter()
        .map(|d| match d {
            Decision::Placed { node } => node,
            other => panic!("{other:?}"),
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["a", "b", "c"]);
}

#[test]
fn bin_pack_fills_one_node_first() {
    let mut c = Cluster::new();
    for n in ["a", "b"] {
        c.upsert_node(node(n, 1000, 1 << 30));
    }
    let batch: Vec<_> = (0..4)
        .map(|i| req(&format!("job-{i}"), "job", 250, 1 << 20, Strategy::BinPack))
        .collect();
    let placed = c.schedule(&batch);
    let first = placed[0].clone();
    assert!(placed.iter().all(|d| *d == first), "{placed:?}");
}

#[test]
fn reasons_are_counted_like_kube_scheduler() {
    let mut c = Cluster::new();
    c.upsert_node(node("small", 100, 1 << 30));
    c.upsert_node(node("tiny", 50, 1 << 20));
    let mut cordoned = node("cordoned", 8000, 8 << 30);
    cordoned.schedulable = false;
    c.upsert_node(cordoned);
    let d = c.schedule(&[req("x", "x", 500, 512 << 20, Strategy::Spread)]);
    let Decision::Unschedulable(u) = &d[0] else {
        panic!("{d:?}")
    };
    assert_eq!(
        u.to_string(),
        "0/3 nodes available: 2 insufficient cpu, 1 insufficient memory, 1 unschedulable"
    );
}

#[test]
fn release_frees_resources_and_node_selector_filters() {
    let mut c = Cluster::new();
    let mut labelled = node("east", 1000, 1 << 30);
    labelled.labels.insert("zone".into(), "east".into());
    c.upsert_node(labelled);
    c.upsert_node(node("west", 1000, 1 << 30));
    let mut r = req("a", "a", 1000, 1, Strategy::Spread);
    r.node_selector.insert("zone".into(), "east".into());
    assert_eq!(
        c.schedule(std::slice::from_ref(&r)),
        [Decision::Placed {
            node: "east".into()
        }]
    );
    r.id = "b".into();
    let d = c.schedule(std::slice::from_ref(&r));
    let Decision::Unschedulable(u) = &d[0] else {
        panic!("{d:?}")
    };
    assert_eq!(
        u.to_string(),
        "0/2 nodes available: 1 didn't match node selector, 1 insufficient cpu"
    );
    c.release("a");
    assert_eq!(
        c.schedule(&[r]),
        [Decision::Placed {
            node: "east".into()
        }]
    );
    assert_eq!(c.free("east").map(|f| f.cpu_millis), Some(0));
}

#[test]
fn invalid_and_duplicate_requests_are_refused_with_the_field() {
    let mut c = Cluster::new();
    c.upsert_node(node("a", 1000, 1 << 30));
    let mut bad = req("x", "x", 1, 1, Strategy::Spread);
    bad.constraints.push(Constraint::Spread {
        topology: Topology::Label("zone".into()),
        max_skew: 0,
        mode: Mode::Required,
    });
    let ok = req("y", "y", 1, 1, Strategy::Spread);
    let d = c.schedule(&[bad, ok.clone(), ok]);
    assert_eq!(
        d[0],
        Decision::Invalid(RequestError::Invalid {
            id: "x".into(),
            field: "constraints[0].max_skew".into(),
            reason: "must be at least 1",
        })
    );
    assert_eq!(d[1], Decision::Placed { node: "a".into() });
    assert_eq!(
        d[2],
        Decision::Invalid(RequestError::Duplicate { id: "y".into() })
    );
    let again = c.schedule(&[req("y", "y", 1, 1, Strategy::Spread)]);
    assert_eq!(
        again[0],
        Decision::Invalid(RequestError::AlreadyPlaced { id: "y".into() })
    );
}

#[test]
fn updating_a_node_keeps_its_placements_and_moves_domains() {
    let mut c = Cluster::new();
    let mut a = node("a", 1000, 1 << 30);
    a.labels.insert("zone".into(), "z1".into());
    c.upsert_node(a.clone());
    let mut b = node("b", 1000, 1 << 30);
    b.labels.insert("zone".into(), "z2".into());
    c.upsert_node(b);
    let anti = |id: &str| {
        let mut r = req(id, "db", 100, 1, Strategy::Spread);
        r.constraints.push(Constraint::AntiAffinity {
            app: "db".into(),
            topology: Topology::Label("zone".into()),
            mode: Mode::Required,
        });
        r
    };
    let d = c.schedule(&[anti("db-0"), anti("db-1")]);
    assert!(matches!(d[0], Decision::Placed { .. }) && matches!(d[1], Decision::Placed { .. }));
    // Move node a into zone z2: both instances now share a zone, a third fits nowhere.
    let on_a = c.node_of("db-0").unwrap() == "a";
    let _ = on_a;
    a.labels.insert("zone".into(), "z2".into());
    c.upsert_node(a);
    assert_eq!(
        c.usage("a").unwrap().instances + c.usage("b").unwrap().instances,
        2
    );
    let d = c.schedule(&[anti("db-2")]);
    let Decision::Unschedulable(u) = &d[0] else {
        panic!("{d:?}")
    };
    assert_eq!(
        u.to_string(),
        "0/2 nodes available: 2 didn't match app anti-affinity rules"
    );
    c.remove_node("b");
    assert_eq!(c.placement_count(), 1);
}

mod walk_matches_scan {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The ordered walk returns exactly the node a scan of every node would, on clusters of
        /// mixed node sizes, with preferences that add and subtract, after every placement.
        #[test]
        fn ordered_walk_equals_full_scan(
            nodes in prop::collection::vec((1u64..16, 1u64..16, 1u32..6, 0u8..3), 1..24),
            reqs in prop::collection::vec((0u64..3000, 0u64..3000, 0u8..3, 0u8..4, 0u8..3), 1..60),
            seed in any::<u64>(),
        ) {
            let mut c = Cluster::with_seed(seed);
            for (i, (cpu, mem, max, zone)) in nodes.iter().enumerate() {
                let mut n = node(&format!("n{i}"), cpu * 500, mem * (256 << 20));
                n.max_instances = *max;
                n.labels.insert("zone".into(), zone.to_string());
                c.upsert_node(n);
            }
            for (i, (cpu, mem, strategy, pref, app)) in reqs.iter().enumerate() {
                let strategy = [crate::Strategy::Spread, crate::Strategy::BinPack, crate::Strategy::Balanced][*strategy as usize];
                let mut r = req(&format!("r{i}"), &format!("app{app}"), *cpu, mem << 20, strategy);
                let topology = Topology::Label("zone".into());
                match pref {
                    0 => r.constraints.push(Constraint::Affinity {
                        app: "app0".into(),
                        topology,
                        mode: Mode::Preferred { weight: 30 },
                    }),
                    1 => r.constraints.push(Constraint::AntiAffinity {
                        app: r.app.clone(),
                        topology,
                        mode: Mode::Preferred { weight: 60 },
                    }),
                    2 => r.constraints.push(Constraint::Spread {
                        topology,
                        max_skew: 1,
                        mode: Mode::Preferred { weight: 10 },
                    }),
                    _ => {}
                }
                let bounds = c.inv_bounds();
                let compiled = c.compile(&r);
                prop_assert_eq!(c.best_ordered(&compiled, bounds), c.best_flat(&compiled));
                c.schedule(&[r]);
            }
        }
    }
}
