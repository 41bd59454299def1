//! Hollow nodes, like Kubernetes' kubemark: `berth agent --hollow` registers a node and reports
//! each instance placed on it Ready at once, with a made-up address and its ports, and runs no
//! process. Everything else is the real agent: heartbeats, watches, and the node's proxy and DNS
//! fed exactly as on a real node. A few hollow agents on one machine stand in for a large
//! cluster when measuring the control plane and endpoint propagation.
//!
//! Addresses come from 127.0.0.0/8, which never leaves a host: `127.<p>.<x>.<y>` where `p` is
//! derived from the node name and `x.y` from the instance name, probing past collisions, so
//! that instances of one hollow node never share an address.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{Instance, InstanceState, InstanceStatus, Kind, NodeSpec};

use super::runtime::{Ctx, Stop};

/// What a hollow node claims to offer: enough for thousands of default-sized instances
/// (100m CPU, 64Mi each), as kubemark's hollow kubelets claim made-up capacity.
pub(super) fn capacity(spec: &mut NodeSpec) {
    spec.cpu_millis = 10_000 * 1000;
    spec.memory_bytes = 10_000 * (1 << 30);
    spec.max_instances = 100_000;
}

/// The addresses handed out on one hollow node.
#[derive(Debug)]
pub(super) struct Hollow {
    /// The second octet of every address of this node.
    prefix: u8,
    used: Mutex<HashSet<u16>>,
    /// Status writes in flight at most: thousands of instances placed at once must not open
    /// thousands of connections to the API server at once.
    reports: tokio::sync::Semaphore,
}

/// Concurrent status writes of one hollow node.
const MAX_REPORTS: usize = 16;

/// FNV-1a: a stable hash (not the std one, which is randomised per process), so that a node
/// and an instance get the same address across agent restarts.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

impl Hollow {
    /// The allocator of node `node`.
    pub(super) fn new(node: &str) -> Hollow {
        // 1..=254: keeps 127.0.x.y (127.0.0.1, where the real listeners are) out of the way.
        let prefix = u8::try_from(fnv(node.as_bytes()) % 254 + 1).unwrap_or(1);
        Hollow {
            prefix,
            used: Mutex::new(HashSet::new()),
            reports: tokio::sync::Semaphore::new(MAX_REPORTS),
        }
    }

    fn address_of(&self, low: u16) -> IpAddr {
        let [x, y] = low.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(127, self.prefix, x, y))
    }

    /// An address for `inst`: the one it already reports if it is one of ours and free (an
    /// agent restarted), else one from its name, else the next free one.
    fn allocate(&self, inst: &Instance) -> Option<IpAddr> {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(IpAddr::V4(a)) = inst.status.address {
            let [a0, a1, x, y] = a.octets();
            let low = u16::from_be_bytes([x, y]);
            if a0 == 127 && a1 == self.prefix && low != 0 && used.insert(low) {
                return inst.status.address;
            }
        }
        let name = format!("{}/{}", inst.metadata.namespace, inst.metadata.name);
        let start = fnv(name.as_bytes()) as u16;
        // Probe past collisions; 0 is skipped so that no address ends in .0.0.
        (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|low| *low != 0 && used.insert(*low))
            .map(|low| self.address_of(low))
    }

    fn release(&self, address: IpAddr) {
        if let IpAddr::V4(a) = address {
            let [_, _, x, y] = a.octets();
            self.used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&u16::from_be_bytes([x, y]));
        }
    }

    /// "Runs" an instance: reports it Ready with an address and its ports, then waits to be
    /// told to stop and reports that as a real agent would (Terminating, the drain, Stopped).
    pub(super) async fn supervise(
        self: Arc<Self>,
        ctx: Arc<Ctx>,
        inst: Instance,
        mut stop: watch::Receiver<Stop>,
    ) {
        let Some(address) = self.allocate(&inst) else {
            let status = InstanceStatus {
                state: InstanceState::Failed,
                message: Some("hollow node: no address left".to_owned()),
                ..inst.status.clone()
            };
            self.report(&ctx, &inst, &status, &mut stop).await;
            return;
        };
        let mut status = InstanceStatus {
            state: InstanceState::Ready,
            address: Some(address),
            ports: ports(&inst),
            restarts: inst.status.restarts,
            message: None,
            pid: None,
        };
        // Adopted as it is (an agent restart), or reported Ready now.
        if inst.status != status {
            self.report(&ctx, &inst, &status, &mut stop).await;
        }
        let _ = stop.wait_for(|s| *s != Stop::No).await;
        let why = *stop.borrow();
        if why == Stop::Report {
            // Out of endpoints already (control asked); a real instance keeps serving for the
            // drain while every node catches up.
            status.state = InstanceState::Terminating;
            self.report(&ctx, &inst, &status, &mut stop).await;
            tokio::time::sleep(ctx.drain).await;
        }
        if matches!(why, Stop::Report | Stop::Now) {
            status.state = InstanceState::Stopped;
            self.report(&ctx, &inst, &status, &mut stop).await;
        }
        self.release(address);
    }

    /// Writes `status`, retrying with backoff (up to 2 s) while the API is unreachable or
    /// overloaded: until written, or until the instance is deleted. A stop report is tried 3
    /// times only, so that an agent shutting down with its server gone does not hang.
    async fn report(
        &self,
        ctx: &Ctx,
        inst: &Instance,
        status: &InstanceStatus,
        stop: &mut watch::Receiver<Stop>,
    ) {
        let m = &inst.metadata;
        let mut delay = Duration::from_millis(100);
        let stopping = status.state != InstanceState::Ready;
        for attempt in 1u32.. {
            let written = {
                // Never closed: the semaphore lives as long as the node.
                let _permit = self.reports.acquire().await;
                ctx.client
                    .put_status(Kind::Instance, &m.namespace, &m.name, status)
                    .await
            };
            match written {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(instance = %m.name, attempt, error = %format!("{e:#}"), "hollow status report failed");
                }
            }
            if *stop.borrow() == Stop::Silent || (stopping && attempt >= 3) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// The ports of a hollow instance: the declared number, else 8080, 8081, ... in order.
fn ports(inst: &Instance) -> BTreeMap<String, u16> {
    inst.spec
        .template
        .ports
        .iter()
        .zip(8080u16..)
        .map(|(p, fallback)| (p.name.clone(), p.port.unwrap_or(fallback)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built from JSON, as a manifest would be, so that fields added later take defaults.
    fn instance(name: &str, ports: &[(&str, Option<u16>)]) -> Instance {
        let ports: Vec<_> = ports
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "port": p}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"app": "a", "node": "n", "template": {"command": "true", "ports": ports}},
        }))
        .unwrap()
    }

    #[test]
    fn addresses_are_distinct_loopback_and_stable() {
        let h = Hollow::new("hollow-0");
        let mut seen = HashSet::new();
        for i in 0..5000 {
            let a = h.allocate(&instance(&format!("a-{i}"), &[])).unwrap();
            assert!(a.is_loopback(), "{a}");
            assert_ne!(a, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
            assert!(seen.insert(a), "{a} handed out twice");
        }
        // The same name on a fresh allocator (an agent restart) gets the same address.
        let again = Hollow::new("hollow-0");
        let first = again.allocate(&instance("a-0", &[])).unwrap();
        assert_eq!(
            first,
            Hollow::new("hollow-0")
                .allocate(&instance("a-0", &[]))
                .unwrap()
        );
        // An adopted instance keeps the address it reports; a released address is free again.
        let mut adopted = instance("zzz", &[]);
        adopted.status.address = Some(first);
        let fresh = Hollow::new("hollow-0");
        assert_eq!(fresh.allocate(&adopted), Some(first));
        assert_ne!(fresh.allocate(&adopted), Some(first), "taken now");
        fresh.release(first);
        assert_eq!(fresh.allocate(&adopted), Some(first));
    }

    #[test]
    fn ports_are_declared_or_numbered() {
        let inst = instance("a", &[("http", None), ("admin", Some(9000)), ("dns", None)]);
        let p = ports(&inst);
        assert_eq!(p["http"], 8080);
        assert_eq!(p["admin"], 9000);
        assert_eq!(p["dns"], 8082);
    }

    #[test]
    fn capacity_fits_thousands_of_instances() {
        let mut spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "address": "127.0.0.1", "cpuMillis": 2000, "memoryBytes": 1u64 << 30, "maxInstances": 110,
        }))
        .unwrap();
        capacity(&mut spec);
        assert!(spec.max_instances >= 10_000);
        assert!(spec.cpu_millis >= 10_000 * 100);
        assert!(spec.memory_bytes >= 10_000 * (64 << 20));
    }
}
