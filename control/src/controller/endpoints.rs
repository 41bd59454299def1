//! Endpoints: the ready instances behind each service.

use std::collections::BTreeMap;

use crate::api::{EndpointAddress, Endpoints, InstanceState, Kind, Metadata, Object};

use super::World;

/// Computes the endpoints of every service and removes those of deleted services. An instance
/// that control wants stopped leaves its endpoints at once, before its agent signals it.
pub fn reconcile_endpoints(world: &mut World) {
    let mut wanted: BTreeMap<String, Endpoints> = BTreeMap::new();
    // Ready instances by (namespace, app), and node readiness, found once per pass.
    let mut ready_nodes: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    let mut by_app: std::collections::HashMap<(&str, &str), Vec<&crate::api::Instance>> =
        std::collections::HashMap::new();
    for o in world.of(Kind::Instance) {
        let Object::Instance(i) = o else { continue };
        if i.spec.stop || i.status.state != InstanceState::Ready {
            continue;
        }
        // A node that stopped reporting may be gone with its instances.
        let Some(node) = i.spec.node.as_deref() else {
            continue;
        };
        if !*ready_nodes
            .entry(node)
            .or_insert_with(|| super::node_ready(world, node))
        {
            continue;
        }
        by_app
            .entry((i.metadata.namespace.as_str(), i.spec.app.as_str()))
            .or_default()
            .push(i);
    }
    for o in world.of(Kind::Service) {
        let Object::Service(svc) = o else { continue };
        let ns = &svc.metadata.namespace;
        let mut addresses: Vec<EndpointAddress> = by_app
            .get(&(ns.as_str(), svc.spec.app.as_str()))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .copied()
            .filter_map(|i| {
                let ports = svc
                    .spec
                    .ports
                    .iter()
                    .filter_map(|p| i.status.ports.get(p.target()).map(|n| (p.name.clone(), *n)))
                    .collect();
                Some(EndpointAddress {
                    instance: i.metadata.name.clone(),
                    node: i.spec.node.clone()?,
                    address: i.status.address?,
                    ports,
                })
            })
            .collect();
        addresses.sort_by(|a, b| a.instance.cmp(&b.instance));
        let ep = Endpoints {
            metadata: Metadata::new(ns, &svc.metadata.name),
            addresses,
        };
        wanted.insert(Object::Endpoints(ep.clone()).key(), ep);
    }
    let existing: Vec<String> = world.of(Kind::Endpoints).map(|o| o.key()).collect();
    for key in existing {
        if !wanted.contains_key(&key) {
            world.delete(&key);
        }
    }
    for (key, ep) in wanted {
        match world.get(&key) {
            Some(Object::Endpoints(cur)) if cur.addresses == ep.addresses => {}
            Some(Object::Endpoints(cur)) => {
                let mut new = cur.clone();
                new.addresses = ep.addresses;
                world.put(Object::Endpoints(new));
            }
            _ => world.put(Object::Endpoints(ep)),
        }
    }
}
