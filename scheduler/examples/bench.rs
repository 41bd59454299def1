//! Placement benchmark: `cargo run --release -p berth-scheduler --example bench -- [cases]`.
//!
//! Builds a cluster of identical nodes over 3 zones and places apps of 10 replicas each, one
//! decision per call (so each decision is timed), in three cases: resources only (`basic`),
//! required anti-affinity between instances of the same app (`anti`), and required topology
//! spread over the zones with max skew 1 (`spread`). All use the bin-pack strategy, so that
//! the nodes used can be compared with first-fit-decreasing on the same instances.
//! Prints one line per case in the format; extra detail (every run's time, CPU time of
//! the fastest, the capacity lower bound on nodes) goes to stderr.
//!
//! Knobs: `REPEAT=n` runs per size, fastest reported (default 3); `STRATEGY=spread|balanced`
//! measures the other strategies; case `over` asks ~1.3 times the capacity of 5,000 nodes.

use std::time::Instant;

use berth_scheduler::{
    Cluster, Constraint, Decision, Mode, Node, Request, Resources, Strategy, Topology,
};

const NODE_CPU: u64 = 16_000;
const NODE_MEM: u64 = 64 << 30;
const NODE_MAX: u32 = 110;
const REPLICAS: usize = 10;

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            name: format!("node-{i:05}"),
            allocatable: Resources {
                cpu_millis: NODE_CPU,
                memory_bytes: NODE_MEM,
            },
            max_instances: NODE_MAX,
            labels: [
                (
                    "topology.kubernetes.io/zone".to_owned(),
                    format!("z{}", i % 3),
                ),
                ("kubernetes.io/hostname".to_owned(), format!("node-{i:05}")),
            ]
            .into_iter()
            .collect(),
            ..Node::default()
        })
        .collect()
}

/// `STRATEGY=spread|balanced` to measure the other strategies (bin-pack by default, which is
/// what the nodes-used comparison needs).
fn strategy() -> Strategy {
    match std::env::var("STRATEGY").as_deref() {
        Ok("spread") => Strategy::Spread,
        Ok("balanced") => Strategy::Balanced,
        _ => Strategy::BinPack,
    }
}

fn instances(m: usize, case: &str, seed: u64) -> Vec<Request> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(m);
    let mut app = 0;
    while out.len() < m {
        let cpu = rng.u64(1..=15) * 100;
        let mem = rng.u64(1..=48) * (128 << 20);
        let name = format!("app-{app}");
        let constraints = match case {
            "anti" => vec![Constraint::AntiAffinity {
                app: name.clone(),
                topology: Topology::Node,
                mode: Mode::Required,
            }],
            "spread" => vec![Constraint::Spread {
                topology: Topology::Label("topology.kubernetes.io/zone".into()),
                max_skew: 1,
                mode: Mode::Required,
            }],
            _ => Vec::new(),
        };
        for r in 0..REPLICAS.min(m - out.len()) {
            out.push(Request {
                id: format!("{name}-{r}"),
                app: name.clone(),
                tenant: format!("tenant-{}", app % 7),
                resources: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                },
                constraints: constraints.clone(),
                strategy: strategy(),
                ..Request::default()
            });
        }
        app += 1;
    }
    // Arrival order is random: replicas of one app are not all back to back.
    rng.shuffle(&mut out);
    out
}

/// First-fit-decreasing on identical nodes, resources and count only: items sorted by
/// decreasing size, each into the first node it fits. In two dimensions "size" is a choice, so
/// both usual ones are tried (dominant share, and sum of shares) and the better count is kept.
fn ffd(requests: &[Request]) -> usize {
    let shares = |r: &Request| {
        (
            r.resources.cpu_millis as f64 / NODE_CPU as f64,
            r.resources.memory_bytes as f64 / NODE_MEM as f64,
        )
    };
    let by_dominant = |r: &Request| {
        let (c, m) = shares(r);
        c.max(m)
    };
    let by_sum = |r: &Request| {
        let (c, m) = shares(r);
        c + m
    };
    let dominant = ffd_by(requests, by_dominant);
    let sum = ffd_by(requests, by_sum);
    dominant.min(sum)
}

fn ffd_by(requests: &[Request], size: impl Fn(&Request) -> f64) -> usize {
    let mut items: Vec<&Request> = requests.iter().collect();
    items.sort_by(|a, b| size(b).total_cmp(&size(a)));
    let mut bins: Vec<(u64, u64, u32)> = Vec::new();
    for r in items {
        let (c, m) = (r.resources.cpu_millis, r.resources.memory_bytes);
        match bins
            .iter_mut()
            .find(|(fc, fm, n)| *fc >= c && *fm >= m && *n < NODE_MAX)
        {
            Some(b) => {
                b.0 -= c;
                b.1 -= m;
                b.2 += 1;
            }
            None => bins.push((NODE_CPU - c, NODE_MEM - m, 1)),
        }
    }
    bins.len()
}

/// No packing can use fewer nodes than total demand over one node's size, per resource.
fn lower_bound(requests: &[Request]) -> u64 {
    let cpu: u64 = requests.iter().map(|r| r.resources.cpu_millis).sum();
    let mem: u64 = requests.iter().map(|r| r.resources.memory_bytes).sum();
    cpu.div_ceil(NODE_CPU).max(mem.div_ceil(NODE_MEM))
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), 0 where unavailable: the
/// machine is shared, so CPU time shows what the scheduler costs apart from waiting its turn.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One placement run: wall seconds, sorted per-decision latencies in ns, nodes used, placed,
/// CPU seconds.
fn place_all(all: &[Node], reqs: &[Request]) -> (f64, Vec<u64>, usize, usize, f64) {
    let mut cluster = Cluster::with_seed(7);
    for node in all {
        cluster.upsert_node(node.clone());
    }
    let mut lat = Vec::with_capacity(reqs.len());
    let mut placed = 0usize;
    let cpu = thread_cpu_ns();
    let start = Instant::now();
    for r in reqs {
        let t = Instant::now();
        let d = cluster.schedule(std::slice::from_ref(r));
        lat.push(t.elapsed().as_nanos() as u64);
        if matches!(d[0], Decision::Placed { .. }) {
            placed += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns().saturating_sub(cpu) as f64 / 1e9;
    lat.sort_unstable();
    let used = all
        .iter()
        .filter(|node| cluster.usage(&node.name).is_some_and(|u| u.instances > 0))
        .count();
    (secs, lat, used, placed, cpu)
}

fn run(case: &str, n: usize, m: usize) {
    let all = nodes(n);
    let reqs = instances(m, case, 42);
    // The machine is shared: each size runs REPEAT times (default 3) and the fastest run is
    // reported, the usual way to take noise from other processes out of a timing.
    let repeat: usize = std::env::var("REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut best: Option<(f64, Vec<u64>, usize, usize, f64)> = None;
    let mut all_secs = Vec::new();
    for _ in 0..repeat {
        let run = place_all(&all, &reqs);
        all_secs.push(run.0);
        if let Some(b) = &best {
            // Same seed, same inputs: the placement must not depend on the run.
            assert_eq!((b.2, b.3), (run.2, run.3), "decisions differ between runs");
        }
        if best.as_ref().is_none_or(|b| run.0 < b.0) {
            best = Some(run);
        }
    }
    let Some((secs, lat, used, placed, cpu)) = best else {
        return;
    };
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64 / 1000.0;
    let ffd_nodes = ffd(&reqs);
    println!(
        "case={case} nodes={n} instances={m} placements_per_s={:.0} p99_us={p99:.1} nodes_used={used} ffd_nodes={ffd_nodes}",
        m as f64 / secs
    );
    eprintln!(
        "  case={case} nodes={n}: placed {placed}/{m}; runs {all_secs:.3?} s; fastest used {cpu:.3} s of CPU ({:.0} placements per CPU second); capacity lower bound {} nodes",
        m as f64 / cpu,
        lower_bound(&reqs)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cases = if args.is_empty() {
        vec!["basic".to_owned(), "anti".to_owned(), "spread".to_owned()]
    } else {
        args
    };
    for case in &cases {
        // `over` (not part of bench/scheduler.sh): resources only, asking ~1.3 times what 5,000
        // nodes hold, so that a quarter of the decisions are refusals with reasons.
        let sizes: &[(usize, usize)] = if case == "over" {
            &[(5_000, 125_000)]
        } else {
            &[(1_000, 10_000), (5_000, 50_000), (10_000, 150_000)]
        };
        for &(n, m) in sizes {
            run(case, n, m);
        }
    }
}
