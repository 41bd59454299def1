//! Endpoints: the ready instances behind each service.

use std::collections::BTreeMap;

use crate::api::{EndpointAddress, Endpoints, InstanceState, Kind, Metadata, Object};

use super::World;

/// Computes the endpoints of every service and removes those of deleted services. An instance
/// that control wants stopped leaves its endpoints at once, before its agent signals it.
pub fn reconcile_endpoints(world: &mut World) {
    let mut wanted: BTreeMap<String, Endpoints> = BTreeMap::new();
    for o in world.of(Kind::Service) {
        let Object::Service(svc) = o else { continue };
        let ns = &svc.metadata.namespace;
        let mut addresses: Vec<EndpointAddress> = world
            .of(Kind::Instance)
            .filter_map(|o| match o {
                Object::Instance(i) => Some(i),
                _ => None,
            })
            .filter(|i| {
                &i.metadata.namespace == ns
                    && i.spec.app == svc.spec.app
                    && !i.spec.stop
                    && i.status.state == InstanceState::Ready
                    // A node that stopped reporting may be gone with its instances.
                    && i.spec.node.as_deref().is_some_and(|n| super::node_ready(world, n))
            })
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
