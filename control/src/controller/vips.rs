//! Service VIPs, as Kubernetes' ClusterIP allocator: every service that is not headless gets an
//! address of the service range in `status.vip`, the one its `spec.clusterIP` asks for or the
//! lowest free one, and keeps it for its life (the API keeps status across updates); the address
//! is free again when the service is deleted or turns headless.
//!
//! Only this reconciler writes `status.vip`, and it rebuilds the taken set from every service on
//! each pass, so a restarted server knows every address in use. The pass commits with a check
//! that no other service took the same address meanwhile (see [`super::pass`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::api::{Kind, Object, Service};

use super::World;
use super::network::{first_free_address, reserved};

/// Why a requested `spec.clusterIP` cannot be had, if it cannot. `holder` names who holds an
/// address.
pub fn check_cluster_ip(
    range: Option<&ipnet::IpNet>,
    ip: IpAddr,
    holder: impl Fn(IpAddr) -> Option<String>,
) -> Result<(), String> {
    let Some(range) = range else {
        return Err(format!(
            "{ip}: this server has no service range (--service-cidr), so it gives no VIPs"
        ));
    };
    if !range.contains(&ip) {
        return Err(format!("{ip} is not in the service range {range}"));
    }
    if reserved(range, ip) {
        return Err(format!(
            "{ip} is reserved: the network address, the first address (kept for the API, as in \
             Kubernetes) and the IPv4 broadcast address are never given out"
        ));
    }
    if let Some(h) = holder(ip) {
        return Err(format!("{ip} is already allocated to service {h}"));
    }
    Ok(())
}

fn service(o: &Object) -> Option<&Service> {
    match o {
        Object::Service(s) => Some(s),
        _ => None,
    }
}

fn set(world: &mut World, key: &str, vip: Option<IpAddr>, message: Option<String>) {
    world.update(key, |o| {
        let Object::Service(s) = o else { return false };
        if s.status.vip == vip && s.status.message == message {
            return false;
        }
        let name = format!("{}/{}", s.metadata.namespace, s.metadata.name);
        match (s.status.vip, vip) {
            (_, Some(v)) => tracing::info!(service = %name, vip = %v, "service VIP allocated"),
            (Some(v), None) => tracing::info!(service = %name, vip = %v, "service VIP released"),
            (None, None) => {}
        }
        if let Some(m) = &message {
            tracing::warn!(service = %name, problem = %m, "no service VIP");
        }
        s.status.vip = vip;
        s.status.message = message;
        true
    });
}

/// Allocates and releases service VIPs.
pub fn reconcile_vips(world: &mut World) {
    let range = world.network.service_cidr;
    // Who holds what: the first service (in key order) with an address keeps it; a duplicate
    // (which no pass of this reconciler writes) loses its copy and is given another.
    let mut taken: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut needs: Vec<(String, Option<IpAddr>)> = Vec::new();
    let mut releases: Vec<String> = Vec::new();
    for o in world.of(Kind::Service) {
        let Some(s) = service(o) else { continue };
        let key = o.key();
        let name = format!("{}/{}", s.metadata.namespace, s.metadata.name);
        if s.spec.headless {
            if s.status.vip.is_some() || s.status.message.is_some() {
                releases.push(key);
            }
            continue;
        }
        match s.status.vip {
            Some(v) if !taken.contains_key(&v) => {
                taken.insert(v, name);
            }
            _ => needs.push((key, s.spec.cluster_ip)),
        }
    }
    for key in releases {
        set(world, &key, None, None);
    }
    // Without a range (unprivileged `berth dev`), nothing is allocated; addresses given before
    // stay with their services.
    let Some(range) = range else {
        return;
    };
    // Requested addresses first, so that an allocation in this pass cannot take them.
    let (asked, any): (Vec<_>, Vec<_>) = needs.into_iter().partition(|(_, ip)| ip.is_some());
    for (key, ip) in asked {
        let Some(ip) = ip else { continue };
        match check_cluster_ip(Some(&range), ip, |a| taken.get(&a).cloned()) {
            Ok(()) => {
                if let Some(s) = world.get(&key).and_then(service) {
                    taken.insert(ip, format!("{}/{}", s.metadata.namespace, s.metadata.name));
                }
                set(world, &key, Some(ip), None);
            }
            Err(why) => set(world, &key, None, Some(format!("spec.clusterIP: {why}"))),
        }
    }
    let mut used: BTreeSet<IpAddr> = taken.keys().copied().collect();
    for (key, _) in any {
        match first_free_address(&range, &used) {
            Some(ip) => {
                used.insert(ip);
                set(world, &key, Some(ip), None);
            }
            None => set(
                world,
                &key,
                None,
                Some(format!(
                    "the service range {range} is full: delete services or widen --service-cidr"
                )),
            ),
        }
    }
}
