//! Node pod subnets, as Kubernetes' node IPAM: every node without a subnet gets the lowest free
//! one of the cluster CIDR; a subnet is held as long as its node object exists; no two nodes
//! share an address.
//!
//! A subnet an admin set in the spec is kept when no other node holds an overlapping one. When
//! two nodes claim overlapping subnets (two writes raced past the API's check), the node created
//! first keeps it and the other is told why in `status.podSubnetError`; its subnet is left for
//! the admin to change, as taking it away could break instances already using it.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::api::{Kind, Node, Object};

use super::World;
use super::network::{first_free_subnet, overlaps};

/// The subnets nodes hold, by node name; invalid and conflicting claims left out, with the
/// reason for each node that has one.
fn claims(world: &World) -> (Vec<(String, IpNet)>, BTreeMap<String, String>) {
    let mut nodes: Vec<&Node> = world
        .of(Kind::Node)
        .filter_map(|o| match o {
            Object::Node(n) => Some(n),
            _ => None,
        })
        .collect();
    // Oldest first: the first claim of an address wins.
    nodes.sort_by_key(|n| (n.metadata.created_revision, n.metadata.name.clone()));
    let mut held: Vec<(String, IpNet)> = Vec::new();
    let mut problems = BTreeMap::new();
    for n in nodes {
        let Some(s) = &n.spec.pod_subnet else {
            continue;
        };
        let name = n.metadata.name.clone();
        match s.parse::<IpNet>() {
            Err(_) => {
                problems.insert(name, format!("podSubnet {s:?} is not a CIDR"));
            }
            Ok(net) => match held.iter().find(|(_, h)| overlaps(h, &net)) {
                Some((other, h)) => {
                    problems.insert(
                        name,
                        format!(
                            "podSubnet {net} overlaps {h} of node {other}: set another or delete \
                             it to get one allocated"
                        ),
                    );
                }
                None => held.push((name, net)),
            },
        }
    }
    (held, problems)
}

/// Allocates subnets to nodes without one and reports conflicting claims.
pub fn reconcile_pod_subnets(world: &mut World) {
    let (mut held, problems) = claims(world);
    let cidr = world.network.cluster_cidr;
    let prefix = world.network.node_prefix;
    let mut waiting: Vec<(u64, String)> = world
        .of(Kind::Node)
        .filter_map(|o| match o {
            Object::Node(n) if n.spec.pod_subnet.is_none() => {
                Some((n.metadata.created_revision, o.key()))
            }
            _ => None,
        })
        .collect();
    waiting.sort();
    for (_, key) in waiting {
        let Some(cidr) = cidr else {
            break;
        };
        let taken: Vec<IpNet> = held.iter().map(|(_, n)| *n).collect();
        let free = first_free_subnet(&cidr, prefix, &taken);
        world.update(&key, |o| {
            let Object::Node(n) = o else { return false };
            match free {
                Some(net) => {
                    tracing::info!(node = %n.metadata.name, subnet = %net, "pod subnet allocated");
                    n.spec.pod_subnet = Some(net.to_string());
                    n.status.pod_subnet_error = None;
                    held.push((n.metadata.name.clone(), net));
                    true
                }
                None => {
                    let why = Some(format!(
                        "no free /{prefix} left in the cluster CIDR {cidr}: delete unused nodes \
                         or widen --cluster-cidr"
                    ));
                    let changed = n.status.pod_subnet_error != why;
                    n.status.pod_subnet_error = why;
                    changed
                }
            }
        });
    }
    // Conflicts are reported, and cleared once resolved.
    let keys: Vec<String> = world
        .of(Kind::Node)
        .filter(|o| matches!(o, Object::Node(n) if n.spec.pod_subnet.is_some()))
        .map(|o| o.key())
        .collect();
    for key in keys {
        world.update(&key, |o| {
            let Object::Node(n) = o else { return false };
            let why = problems.get(&n.metadata.name).cloned();
            if n.status.pod_subnet_error == why {
                return false;
            }
            if let Some(w) = &why {
                tracing::warn!(node = %n.metadata.name, problem = %w, "pod subnet conflict");
            }
            n.status.pod_subnet_error = why;
            true
        });
    }
}
