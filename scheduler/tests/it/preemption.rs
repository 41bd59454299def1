//! Preemption picks the lowest priorities and the fewest victims.

use berth_scheduler::{Cluster, Decision, Request};

use crate::placement::{node, req};

fn with_priority(mut r: Request, p: i32) -> Request {
    r.priority = p;
    r
}

fn run(c: &mut Cluster, r: Request) -> Decision {
    c.schedule(&[r]).remove(0)
}

#[test]
fn evicts_the_lowest_priority_node_first() {
    let mut c = Cluster::new();
    c.upsert_node(node("n0", "a", 1000, 1024));
    c.upsert_node(node("n1", "a", 1000, 1024));
    assert!(matches!(
        run(&mut c, with_priority(req("mid", "m", 1000, 64), 50)),
        Decision::Placed { .. }
    ));
    assert!(matches!(
        run(&mut c, with_priority(req("low", "l", 1000, 64), 10)),
        Decision::Placed { .. }
    ));
    let d = run(&mut c, with_priority(req("high", "h", 600, 64), 100));
    assert_eq!(
        d,
        Decision::Preempted {
            node: c.node_of("high").unwrap().to_owned(),
            victims: vec!["low".into()]
        }
    );
    assert_eq!(c.node_of("mid").map(|_| ()), Some(()));
    assert_eq!(c.node_of("low"), None);
    // Equal or higher priorities are never victims.
    let d = run(&mut c, with_priority(req("peer", "p", 600, 64), 50));
    assert!(matches!(d, Decision::Unschedulable(_)), "{d:?}");
}

#[test]
fn evicts_the_fewest_and_keeps_what_still_fits() {
    let mut c = Cluster::new();
    c.upsert_node(node("many", "a", 1000, 1024));
    c.upsert_node(node("one", "a", 1000, 1024));
    for i in 0..4 {
        let d = c.schedule(&[with_priority(req(&format!("small-{i}"), "s", 250, 64), 0)]);
        assert!(matches!(d[0], Decision::Placed { .. }));
    }
    // Whatever node the smalls landed on, fill the other with one big instance.
    let small_node = c.node_of("small-0").unwrap().to_owned();
    assert!((0..4).all(|i| c.node_of(&format!("small-{i}")) == Some(small_node.as_str())));
    let d = c.schedule(&[with_priority(req("big", "b", 1000, 64), 0)]);
    let big_node = match &d[0] {
        Decision::Placed { node } => node.clone(),
        other => panic!("{other:?}"),
    };
    // Needs 500m: two smalls or one big would do; one victim wins.
    let d = run(&mut c, with_priority(req("urgent", "u", 500, 64), 10));
    assert_eq!(
        d,
        Decision::Preempted {
            node: big_node,
            victims: vec!["big".into()]
        }
    );
    // Needs 750m: the other node has 500m free and nothing lower; on the smalls' node three
    // of four go and one stays.
    let d = run(&mut c, with_priority(req("urgent-2", "u", 750, 64), 10));
    let Decision::Preempted { node, victims } = d else {
        panic!("{d:?}")
    };
    assert_eq!(node, small_node);
    assert_eq!(victims.len(), 3);
    assert_eq!(c.usage(&small_node).unwrap().instances, 2);
}

#[test]
fn lower_victim_priority_beats_fewer_victims() {
    let mut c = Cluster::new();
    c.upsert_node(node("n0", "a", 1000, 1024));
    c.upsert_node(node("n1", "a", 1000, 1024));
    let place = |c: &mut Cluster, id: &str, cpu, p, n: &str| {
        c.place_request(&with_priority(req(id, id, cpu, 64), p), n)
            .unwrap();
    };
    place(&mut c, "one-mid", 1000, 5, "n0");
    place(&mut c, "low-a", 500, 1, "n1");
    place(&mut c, "low-b", 500, 1, "n1");
    let d = run(&mut c, with_priority(req("x", "x", 1000, 64), 10));
    let Decision::Preempted { node, mut victims } = d else {
        panic!("{d:?}")
    };
    victims.sort();
    assert_eq!(
        (node.as_str(), victims),
        ("n1", vec!["low-a".to_owned(), "low-b".to_owned()])
    );
}
