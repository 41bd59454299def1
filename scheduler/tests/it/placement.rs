//! Strategies, constraints and preferences, each shown to change placement measurably.

use berth_scheduler::{
    Cluster, Constraint, Decision, Effect, HostPort, Mode, Node, Request, Resources, Strategy,
    Taint, Toleration, TolerationOperator, Topology,
};

pub(crate) fn node(name: &str, zone: &str, cpu: u64, mem_mib: u64) -> Node {
    let mut n = Node {
        name: name.into(),
        allocatable: Resources {
            cpu_millis: cpu,
            memory_bytes: mem_mib << 20,
        },
        ..Node::default()
    };
    n.labels.insert("zone".into(), zone.into());
    n
}

pub(crate) fn req(id: &str, app: &str, cpu: u64, mem_mib: u64) -> Request {
    Request {
        id: id.into(),
        app: app.into(),
        resources: Resources {
            cpu_millis: cpu,
            memory_bytes: mem_mib << 20,
        },
        strategy: Strategy::BinPack,
        ..Request::default()
    }
}

fn cluster(nodes: usize) -> Cluster {
    let mut c = Cluster::new();
    for i in 0..nodes {
        c.upsert_node(node(&format!("n{i}"), ["a", "b", "c"][i % 3], 4000, 8192));
    }
    c
}

fn placed(d: &Decision) -> &str {
    match d {
        Decision::Placed { node } => node,
        other => panic!("{other:?}"),
    }
}

/// Distinct nodes and the largest count on one zone for the given decisions.
fn footprint(ds: &[Decision]) -> (usize, usize) {
    let mut nodes = std::collections::BTreeSet::new();
    let mut zones = std::collections::BTreeMap::<&str, usize>::new();
    for d in ds {
        let n = placed(d);
        nodes.insert(n.to_owned());
        let i: usize = n[1..].parse().unwrap();
        *zones.entry(["a", "b", "c"][i % 3]).or_default() += 1;
    }
    (nodes.len(), zones.values().copied().max().unwrap_or(0))
}

fn replicas(app: &str, n: usize, constraints: &[Constraint]) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let mut r = req(&format!("{app}-{i}"), app, 500, 512);
            r.constraints = constraints.to_vec();
            r
        })
        .collect()
}

#[test]
fn bin_pack_uses_fewer_nodes_than_spread() {
    let mut pack = cluster(6);
    let ds = pack.schedule(&replicas("job", 12, &[]));
    let (pack_nodes, _) = footprint(&ds);
    let mut spread = cluster(6);
    let mut rs = replicas("job", 12, &[]);
    for r in &mut rs {
        r.strategy = Strategy::Spread;
    }
    let ds = spread.schedule(&rs);
    let (spread_nodes, _) = footprint(&ds);
    assert_eq!(pack_nodes, 2, "8 of 500m fill a 4000m node");
    assert_eq!(spread_nodes, 6);
}

#[test]
fn balanced_allocation_pairs_cpu_heavy_with_memory_heavy_nodes() {
    let mut c = Cluster::new();
    // n0 is CPU-loaded, n1 memory-loaded; a CPU-light, memory-heavy instance balances n0.
    c.upsert_node(node("n0", "a", 4000, 4096));
    c.upsert_node(node("n1", "a", 4000, 4096));
    c.place(
        "cpu-hog",
        "x",
        Resources {
            cpu_millis: 3000,
            memory_bytes: 512 << 20,
        },
        "n0",
    )
    .unwrap();
    c.place(
        "mem-hog",
        "y",
        Resources {
            cpu_millis: 500,
            memory_bytes: 3072 << 20,
        },
        "n1",
    )
    .unwrap();
    let mut r = req("m", "m", 100, 2048);
    r.strategy = Strategy::Balanced;
    assert_eq!(placed(&c.schedule(&[r])[0]), "n0");
}

#[test]
fn preferred_anti_affinity_spreads_a_bin_packed_app() {
    let mut without = cluster(6);
    let (nodes_without, _) = footprint(&without.schedule(&replicas("web", 6, &[])));
    let soft = Constraint::AntiAffinity {
        app: "web".into(),
        topology: Topology::Node,
        mode: Mode::Preferred { weight: 100 },
    };
    let mut with = cluster(6);
    let (nodes_with, _) = footprint(&with.schedule(&replicas("web", 6, &[soft])));
    assert_eq!(nodes_without, 1);
    assert_eq!(nodes_with, 6);
}

#[test]
fn required_anti_affinity_and_max_per_node_are_hard() {
    let mut c = cluster(3);
    let ds = c.schedule(&replicas("db", 4, &[Constraint::one_per_node()]));
    assert_eq!(footprint(&ds[..3]).0, 3);
    let Decision::Unschedulable(u) = &ds[3] else {
        panic!("{:?}", ds[3])
    };
    assert_eq!(
        u.to_string(),
        "0/3 nodes available: 3 had the app's maximum instances in its topology domain"
    );
    let anti = Constraint::AntiAffinity {
        app: "db".into(),
        topology: Topology::Label("zone".into()),
        mode: Mode::Required,
    };
    let mut c = cluster(6);
    let ds = c.schedule(&replicas("db", 4, &[anti]));
    assert_eq!(footprint(&ds[..3]), (3, 1));
    assert!(matches!(ds[3], Decision::Unschedulable(_)));
    // Symmetry: an app without rules of its own cannot join a zone db excludes it from.
    let keep_out = Constraint::AntiAffinity {
        app: "cache".into(),
        topology: Topology::Label("zone".into()),
        mode: Mode::Required,
    };
    let mut c = cluster(3);
    let d = c.schedule(&replicas("db", 3, &[keep_out, Constraint::one_per_node()]));
    assert_eq!(footprint(&d).0, 3);
    let d = c.schedule(&[req("cache-0", "cache", 100, 64)]);
    let Decision::Unschedulable(u) = &d[0] else {
        panic!("{d:?}")
    };
    assert_eq!(
        u.to_string(),
        "0/3 nodes available: 3 didn't satisfy existing instances' anti-affinity rules"
    );
}

#[test]
fn topology_spread_keeps_zones_within_the_skew() {
    let spread = |mode| Constraint::Spread {
        topology: Topology::Label("zone".into()),
        max_skew: 1,
        mode,
    };
    // Bin-packing alone fills one node (8 fit) before it opens another.
    let mut c = cluster(6);
    let (_, worst) = footprint(&c.schedule(&replicas("web", 9, &[])));
    assert!(worst >= 8, "{worst}");
    for mode in [Mode::Required, Mode::Preferred { weight: 1 }] {
        let mut c = cluster(6);
        let (_, worst) = footprint(&c.schedule(&replicas("web", 9, &[spread(mode)])));
        assert_eq!(worst, 3, "{mode:?}");
    }
}

#[test]
fn affinity_places_next_to_the_other_app() {
    let mut c = cluster(6);
    let d = c.schedule(&[req("db-0", "db", 3000, 512)]);
    let db_node = placed(&d[0]).to_owned();
    for (i, mode) in [Mode::Required, Mode::Preferred { weight: 50 }]
        .into_iter()
        .enumerate()
    {
        let mut r = req(&format!("web-{i}"), &format!("web-{i}"), 400, 256);
        r.strategy = Strategy::Spread;
        r.constraints.push(Constraint::Affinity {
            app: "db".into(),
            topology: Topology::Node,
            mode,
        });
        assert_eq!(placed(&c.schedule(&[r])[0]), db_node, "{mode:?}");
    }
    let mut r = req("web-x", "web", 100, 64);
    r.constraints.push(Constraint::Affinity {
        app: "nowhere".into(),
        topology: Topology::Node,
        mode: Mode::Required,
    });
    let Decision::Unschedulable(u) = &c.schedule(&[r])[0] else {
        panic!()
    };
    assert_eq!(
        u.to_string(),
        "0/6 nodes available: 6 didn't match app affinity rules"
    );
}

#[test]
fn taints_ports_and_selectors_filter_with_reasons() {
    let mut c = Cluster::new();
    let mut gpu = node("gpu", "a", 4000, 4096);
    gpu.taints.push(Taint {
        key: "gpu".into(),
        value: "yes".into(),
        effect: Effect::NoSchedule,
    });
    c.upsert_node(gpu);
    let mut web = node("web", "b", 4000, 4096);
    web.reserved_ports.push(HostPort::tcp(80));
    c.upsert_node(web);
    let mut r = req("a", "a", 100, 64);
    r.host_ports.push(HostPort::tcp(80));
    let Decision::Unschedulable(u) = &c.schedule(std::slice::from_ref(&r))[0] else {
        panic!()
    };
    assert_eq!(
        u.to_string(),
        "0/2 nodes available: 1 didn't have free host ports, 1 had untolerated taint"
    );
    r.tolerations.push(Toleration {
        key: Some("gpu".into()),
        operator: TolerationOperator::Equal("yes".into()),
        effect: Some(Effect::NoSchedule),
    });
    assert_eq!(placed(&c.schedule(std::slice::from_ref(&r))[0]), "gpu");
    // The port is now taken on gpu too.
    r.id = "b".into();
    assert!(matches!(c.schedule(&[r])[0], Decision::Unschedulable(_)));
    assert_eq!(c.ports_in_use("gpu"), Some(vec![HostPort::tcp(80)]));
}

#[test]
fn prefer_no_schedule_is_avoided_not_refused() {
    let mut c = Cluster::new();
    let mut spot = node("spot", "a", 4000, 4096);
    spot.taints.push(Taint {
        key: "spot".into(),
        value: String::new(),
        effect: Effect::PreferNoSchedule,
    });
    c.upsert_node(spot);
    c.upsert_node(node("plain", "a", 1000, 1024));
    let mut r = req("a", "a", 500, 64);
    r.strategy = Strategy::Spread;
    assert_eq!(placed(&c.schedule(&[r])[0]), "plain");
    let big = req("b", "b", 3000, 64);
    assert_eq!(placed(&c.schedule(&[big])[0]), "spot");
}

#[test]
fn different_seeds_break_ties_differently() {
    let pick = |seed| {
        let mut c = Cluster::with_seed(seed);
        for i in 0..50 {
            c.upsert_node(node(&format!("n{i}"), "a", 1000, 1024));
        }
        placed(&c.schedule(&[req("x", "x", 1, 1)])[0]).to_owned()
    };
    assert_eq!(pick(1), pick(1));
    let picks: std::collections::BTreeSet<_> = (0..20).map(pick).collect();
    assert!(picks.len() > 5, "{picks:?}");
}

#[test]
fn spread_skew_counts_only_zones_the_selector_admits() {
    // Zone c is excluded by the selector: it must not pin the minimum at 0.
    let mut c = cluster(6);
    let rs: Vec<Request> = (0..4)
        .map(|i| {
            let mut r = req(&format!("web-{i}"), "web", 100, 64);
            r.node_affinity
                .push(berth_scheduler::Expression::is_in("zone", &["a", "b"]));
            r.constraints.push(Constraint::Spread {
                topology: Topology::Label("zone".into()),
                max_skew: 1,
                mode: Mode::Required,
            });
            r
        })
        .collect();
    let ds = c.schedule(&rs);
    let mut zones = std::collections::BTreeMap::<usize, usize>::new();
    for d in &ds {
        let i: usize = placed(d)[1..].parse().unwrap();
        *zones.entry(i % 3).or_default() += 1;
    }
    assert_eq!(zones.into_iter().collect::<Vec<_>>(), [(0, 2), (1, 2)]);
}
