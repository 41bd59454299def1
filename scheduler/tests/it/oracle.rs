//! An independent, slow model of what the scheduler must guarantee: the tests replay every
//! decision into it and check each one against it.

use std::collections::{BTreeMap, BTreeSet};

use berth_scheduler::{Constraint, Decision, Effect, Mode, Node, Request, Resources, Topology};

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) nodes: BTreeMap<String, Node>,
    /// id -> (request, node)
    pub(crate) placed: BTreeMap<String, (Request, String)>,
}

fn domain<'a>(node: &'a Node, t: &Topology) -> Option<&'a str> {
    match t {
        Topology::Node => Some(&node.name),
        Topology::Label(k) => node.labels.get(k).map(String::as_str),
    }
}

impl Model {
    pub(crate) fn count(&self, app: &str, t: &Topology, d: &str) -> u32 {
        self.placed
            .values()
            .filter(|(r, n)| r.app == app && domain(&self.nodes[n], t) == Some(d))
            .count() as u32
    }

    /// Over the domains of nodes the request's selector and node affinity admit.
    fn min_count(&self, r: &Request, t: &Topology) -> u32 {
        let app = &r.app;
        let domains: BTreeSet<&str> = self
            .nodes
            .values()
            .filter(|n| {
                r.node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
                    && r.node_affinity.iter().all(|e| e.matches(&n.labels))
            })
            .filter_map(|n| domain(n, t))
            .collect();
        domains
            .iter()
            .map(|d| self.count(app, t, d))
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn used(
        &self,
        node: &str,
    ) -> (Resources, u32, Vec<(u16, berth_scheduler::Protocol)>) {
        let mut used = Resources::default();
        let mut n = 0;
        let mut ports: Vec<_> = self.nodes[node]
            .reserved_ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        for (r, on) in self.placed.values() {
            if on == node {
                used.cpu_millis += r.resources.cpu_millis;
                used.memory_bytes += r.resources.memory_bytes;
                n += 1;
                ports.extend(r.host_ports.iter().map(|p| (p.port, p.protocol)));
            }
        }
        (used, n, ports)
    }

    /// Labels, taints and schedulability.
    pub(crate) fn statically_ok(&self, r: &Request, node: &Node) -> bool {
        node.schedulable
            && node.taints.iter().all(|t| {
                t.effect == Effect::PreferNoSchedule || r.tolerations.iter().any(|x| x.tolerates(t))
            })
            && r.node_selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
            && r.node_affinity.iter().all(|e| e.matches(&node.labels))
    }

    /// Resources, instance count and ports.
    pub(crate) fn fits(&self, r: &Request, node: &Node) -> bool {
        let (used, n, ports) = self.used(&node.name);
        used.cpu_millis + r.resources.cpu_millis <= node.allocatable.cpu_millis
            && used.memory_bytes + r.resources.memory_bytes <= node.allocatable.memory_bytes
            && n < node.max_instances
            && r.host_ports
                .iter()
                .all(|p| !ports.contains(&(p.port, p.protocol)))
    }

    /// Every required constraint of `r`, and those of placed instances against `r`.
    pub(crate) fn constraints_ok(&self, r: &Request, node: &Node) -> bool {
        for c in &r.constraints {
            let ok = match c {
                Constraint::MaxPer { topology, max } => {
                    domain(node, topology).is_some_and(|d| self.count(&r.app, topology, d) < *max)
                }
                Constraint::Spread {
                    topology,
                    max_skew,
                    mode: Mode::Required,
                } => domain(node, topology).is_some_and(|d| {
                    self.count(&r.app, topology, d) < self.min_count(r, topology) + max_skew
                }),
                Constraint::Affinity {
                    app,
                    topology,
                    mode: Mode::Required,
                } => {
                    let vacuous =
                        *app == r.app && !self.placed.values().any(|(p, _)| p.app == r.app);
                    vacuous
                        || domain(node, topology).is_some_and(|d| self.count(app, topology, d) > 0)
                }
                Constraint::AntiAffinity {
                    app,
                    topology,
                    mode: Mode::Required,
                } => domain(node, topology).is_none_or(|d| self.count(app, topology, d) == 0),
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        // Symmetry: a placed instance's required anti-affinity against r's app.
        self.placed.values().all(|(p, on)| {
            p.constraints.iter().all(|c| match c {
                Constraint::AntiAffinity {
                    app,
                    topology,
                    mode: Mode::Required,
                } if *app == r.app => {
                    let theirs = domain(&self.nodes[on], topology);
                    theirs.is_none() || theirs != domain(node, topology)
                }
                _ => true,
            })
        })
    }

    pub(crate) fn feasible(&self, r: &Request, node: &Node) -> bool {
        self.statically_ok(r, node) && self.fits(r, node) && self.constraints_ok(r, node)
    }

    /// Checks one decision against the state before it, then applies it.
    pub(crate) fn apply(&mut self, r: &Request, d: &Decision) {
        match d {
            Decision::Placed { node } => {
                let n = &self.nodes[node];
                assert!(self.feasible(r, n), "{} placed on infeasible {node}", r.id);
                self.placed.insert(r.id.clone(), (r.clone(), node.clone()));
            }
            Decision::Preempted { node, victims } => {
                assert!(!victims.is_empty());
                assert!(
                    !self.nodes.values().any(|n| self.feasible(r, n)),
                    "{} preempted although a node was free",
                    r.id
                );
                let mut vs = Vec::new();
                for v in victims {
                    let (vr, on) = self.placed.remove(v).expect("victim is placed");
                    assert_eq!(&on, node, "victim {v} is on another node");
                    assert!(vr.priority < r.priority, "victim {v} not lower priority");
                    vs.push(vr);
                }
                let n = self.nodes[node].clone();
                assert!(
                    self.feasible(r, &n),
                    "{} still does not fit on {node}",
                    r.id
                );
                self.check_lowest_priorities(r, node, &vs);
                // Minimal: giving any one victim back leaves no room.
                for v in &vs {
                    self.placed.insert(v.id.clone(), (v.clone(), node.clone()));
                    assert!(
                        !(self.fits(r, &n)),
                        "victim {} of {} could have stayed",
                        v.id,
                        r.id
                    );
                    self.placed.remove(&v.id);
                }
                self.placed.insert(r.id.clone(), (r.clone(), node.clone()));
            }
            Decision::Unschedulable(u) => {
                assert_eq!(u.nodes, self.nodes.len());
                assert!(u.reasons.values().sum::<usize>() >= self.nodes.len());
                for n in self.nodes.values() {
                    assert!(
                        !self.feasible(r, n),
                        "{} refused but {} fits: {u} {r:?}",
                        r.id,
                        n.name
                    );
                }
            }
            Decision::Invalid(e) => panic!("{} invalid: {e}", r.id),
        }
    }

    /// No other node could have made room by evicting only priorities below the highest
    /// victim's. Checked where constraints cannot interfere (no rules on either side).
    fn check_lowest_priorities(&self, r: &Request, chosen: &str, victims: &[Request]) {
        let highest = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        if !r.constraints.is_empty() || self.placed.values().any(|(p, _)| !p.constraints.is_empty())
        {
            return;
        }
        for n in self.nodes.values().filter(|n| n.name != chosen) {
            let mut fewer = Model {
                nodes: self.nodes.clone(),
                placed: self.placed.clone(),
            };
            fewer
                .placed
                .retain(|_, (p, on)| *on != n.name || p.priority >= highest);
            assert!(
                !(fewer.statically_ok(r, n) && fewer.fits(r, n)),
                "{} evicted priority {highest} on {chosen} but {} needed only lower",
                r.id,
                n.name
            );
        }
    }

    /// Safety that must hold at all times: no over-commit of resources, count or ports, and no
    /// two instances breaking a required anti-affinity.
    pub(crate) fn check_safety(&self, c: &berth_scheduler::Cluster) {
        for n in self.nodes.values() {
            let (used, count, ports) = self.used(&n.name);
            assert!(
                used.cpu_millis <= n.allocatable.cpu_millis,
                "{} cpu",
                n.name
            );
            assert!(
                used.memory_bytes <= n.allocatable.memory_bytes,
                "{} mem",
                n.name
            );
            assert!(count <= n.max_instances, "{} count", n.name);
            let distinct: BTreeSet<_> = ports.iter().collect();
            assert_eq!(distinct.len(), ports.len(), "{} port taken twice", n.name);
            let u = c.usage(&n.name).expect("node known");
            assert_eq!(
                (u.used, u.instances),
                (used, count),
                "{} bookkeeping",
                n.name
            );
        }
        for (p, on) in self.placed.values() {
            for c in &p.constraints {
                if let Constraint::AntiAffinity {
                    app,
                    topology,
                    mode: Mode::Required,
                } = c
                {
                    let Some(d) = domain(&self.nodes[on], topology) else {
                        continue;
                    };
                    let others = self
                        .placed
                        .values()
                        .filter(|(q, qn)| {
                            q.app == *app
                                && q.id != p.id
                                && domain(&self.nodes[qn], topology) == Some(d)
                        })
                        .count();
                    assert_eq!(others, 0, "{} has {app} in its {topology:?} domain", p.id);
                }
            }
        }
        assert_eq!(c.placement_count(), self.placed.len());
    }
}
