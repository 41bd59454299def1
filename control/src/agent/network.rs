//! The node's networking in CNI mode: CNI bootstrap (plugin binary and conflist), routes to the
//! other nodes' pod subnets (host-gateway, as flannel's host-gw and Calico without overlay do),
//! and service VIPs on a dummy interface so that the node's proxy can listen on them.
//!
//! Routes and addresses are changed with iproute2 (`ip route replace`, `ip addr add`), which is
//! idempotent and is what an operator would type to check them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnet::IpNet;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::Object;
use crate::client::Cache;

use super::sandbox::{CniNetwork, ip};

/// How the agent sets up the node's network in CNI mode.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// Where CNI plugins are installed and looked up (CNI_PATH), e.g. `/opt/cni/bin`.
    pub cni_bin_dir: PathBuf,
    /// Where conflists live, e.g. `/etc/cni/net.d`; the lexically first one is used.
    pub cni_conf_dir: PathBuf,
    /// The berth-cni binary to install (next to the berth binary by default).
    pub plugin: Option<PathBuf>,
    /// The node's pod subnet, overriding the one control allocates.
    pub pod_subnet: Option<IpNet>,
    /// Dummy interface holding the service VIPs.
    pub vip_interface: String,
    /// Port of the node's DNS on the bridge gateway address (53).
    pub dns_port: u16,
    /// Resolvers for names outside the cluster zone (default: the host's resolv.conf).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

impl Default for NetworkOptions {
    fn default() -> NetworkOptions {
        NetworkOptions {
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            plugin: None,
            pod_subnet: None,
            vip_interface: "berth-vip0".into(),
            dns_port: 53,
            dns_upstreams: Vec::new(),
        }
    }
}

/// The gateway (bridge) address of a pod subnet: its first host address, as the plugin uses.
pub fn gateway(subnet: IpNet) -> Option<IpAddr> {
    subnet.hosts().next()
}

/// Installs the plugin, writes the conflist for `subnet` (IPAM state under `data_dir`), and
/// loads the network the node's instances join: the lexically first conflist of the directory,
/// as containerd and CRI-O choose.
pub fn bootstrap(
    opts: &NetworkOptions,
    subnet: IpNet,
    data_dir: &Path,
    node: &str,
    nameserver: IpAddr,
    zone: &str,
) -> Result<Arc<CniNetwork>> {
    let plugin = match &opts.plugin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating the berth binary")?
            .with_file_name(berth_cni::bootstrap::BINARY),
    };
    let installed = berth_cni::bootstrap::install_binary(&plugin, &opts.cni_bin_dir)
        .with_context(|| {
            format!(
                "installing {} into {} (build it with cargo build -p berth-cni, or pass --cni-plugin)",
                plugin.display(),
                opts.cni_bin_dir.display()
            )
        })?;
    let mut net = berth_cni::bootstrap::NodeNetwork::new(vec![subnet]);
    net.data_dir = data_dir.join("ipam");
    let written = berth_cni::bootstrap::write_conflist(&opts.cni_conf_dir, &net)
        .with_context(|| format!("writing the conflist into {}", opts.cni_conf_dir.display()))?;
    tracing::info!(plugin = %installed.display(), conflist = %written.display(), %subnet, "CNI bootstrapped");
    let first = first_conflist(&opts.cni_conf_dir)?;
    let bytes = std::fs::read(&first).with_context(|| format!("reading {}", first.display()))?;
    let list = berth_cni::NetworkList::parse(&bytes)
        .with_context(|| format!("parsing {}", first.display()))?;
    let mut exec = berth_cni::Exec::new(vec![opts.cni_bin_dir.clone()]);
    exec.timeout = std::time::Duration::from_secs(30);
    Ok(Arc::new(CniNetwork {
        exec,
        list,
        ip: super::sandbox::find_ip()?,
        prefix: format!("berth-{node}"),
        nameserver,
        zone: zone.to_owned(),
    }))
}

fn first_conflist(dir: &Path) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .with_context(|| format!("no CNI configuration in {}", dir.display()))
}

/// Every other node's pod subnet with its address.
pub fn node_routes(nodes: &Cache, me: &str) -> BTreeMap<IpNet, IpAddr> {
    nodes
        .objects
        .values()
        .filter_map(|o| match &**o {
            Object::Node(n) if n.metadata.name != me => {
                let subnet: IpNet = n.spec.pod_subnet.as_deref()?.parse().ok()?;
                Some((subnet.trunc(), n.spec.address))
            }
            _ => None,
        })
        .collect()
}

/// Every service VIP.
pub fn vips(services: &Cache) -> BTreeSet<IpAddr> {
    services
        .objects
        .values()
        .filter_map(|o| match &**o {
            Object::Service(s) if !s.spec.headless => s.status.vip,
            _ => None,
        })
        .collect()
}

/// Keeps the node's routes and VIPs in step with the node and service lists until `shutdown`;
/// `vips_ready` gets the VIPs present on the interface after each change (the proxy listens on
/// them next).
pub async fn run(
    ip_bin: PathBuf,
    me: String,
    vip_interface: String,
    mut nodes: watch::Receiver<Arc<Cache>>,
    mut services: watch::Receiver<Arc<Cache>>,
    vips_ready: watch::Sender<BTreeSet<IpAddr>>,
    shutdown: CancellationToken,
) {
    let vip_interface = match ensure_vip_interface(&ip_bin, &vip_interface).await {
        Ok(name) => name,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "service VIP interface; VIPs go on lo");
            "lo".to_owned()
        }
    };
    let mut routes: BTreeMap<IpNet, IpAddr> = BTreeMap::new();
    let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
    loop {
        let n = nodes.borrow_and_update().clone();
        if n.synced {
            sync_routes(&ip_bin, &node_routes(&n, &me), &mut routes).await;
        }
        let s = services.borrow_and_update().clone();
        if s.synced {
            sync_vips(&ip_bin, &vip_interface, &vips(&s), &mut addresses).await;
            vips_ready.send_if_modified(|v| {
                let changed = *v != addresses;
                if changed {
                    v.clone_from(&addresses);
                }
                changed
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = nodes.changed() => if r.is_err() { return },
            r = services.changed() => if r.is_err() { return },
        }
    }
}

/// Creates the dummy interface for VIPs; returns the interface VIPs go on. Kernels without the
/// dummy driver get them on `lo`, which is as local (addresses are only ever added and removed
/// one by one, never the interface's own).
async fn ensure_vip_interface(ip_bin: &Path, name: &str) -> Result<String> {
    if ip(ip_bin, &["link", "show", "dev", name]).await.is_err()
        && let Err(e) = ip(ip_bin, &["link", "add", name, "type", "dummy"]).await
    {
        tracing::warn!(error = %format!("{e:#}"), "no dummy interface for service VIPs: they go on lo");
        return Ok("lo".to_owned());
    }
    ip(ip_bin, &["link", "set", name, "up"]).await?;
    Ok(name.to_owned())
}

async fn sync_routes(
    ip_bin: &Path,
    want: &BTreeMap<IpNet, IpAddr>,
    have: &mut BTreeMap<IpNet, IpAddr>,
) {
    for (subnet, via) in want {
        if have.get(subnet) == Some(via) {
            continue;
        }
        let (s, v) = (subnet.to_string(), via.to_string());
        match ip(ip_bin, &["route", "replace", &s, "via", &v]).await {
            Ok(()) => {
                tracing::info!(subnet = %s, via = %v, "route to a node's pods");
                have.insert(*subnet, *via);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "adding a route"),
        }
    }
    let gone: Vec<IpNet> = have
        .keys()
        .filter(|s| !want.contains_key(s))
        .copied()
        .collect();
    for subnet in gone {
        let s = subnet.to_string();
        match ip(ip_bin, &["route", "del", &s]).await {
            Ok(()) => tracing::info!(subnet = %s, "route removed"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "removing a route"),
        }
        have.remove(&subnet);
    }
}

async fn sync_vips(
    ip_bin: &Path,
    iface: &str,
    want: &BTreeSet<IpAddr>,
    have: &mut BTreeSet<IpAddr>,
) {
    for vip in want.difference(&have.clone()) {
        let prefix = if vip.is_ipv4() { 32 } else { 128 };
        let a = format!("{vip}/{prefix}");
        // `replace` succeeds when the address is there already (an agent restart).
        match ip(ip_bin, &["addr", "replace", &a, "dev", iface]).await {
            Ok(()) => {
                have.insert(*vip);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "adding a service VIP"),
        }
    }
    for vip in have.clone().difference(want) {
        let prefix = if vip.is_ipv4() { 32 } else { 128 };
        let a = format!("{vip}/{prefix}");
        if let Err(e) = ip(ip_bin, &["addr", "del", &a, "dev", iface]).await {
            tracing::warn!(error = %format!("{e:#}"), "removing a service VIP");
        }
        have.remove(vip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(objects: Vec<serde_json::Value>) -> Cache {
        Cache {
            revision: 1,
            objects: objects
                .into_iter()
                .map(|v| {
                    let o: Object = serde_json::from_value(v).unwrap();
                    (o.key(), Arc::new(o))
                })
                .collect(),
            synced: true,
        }
    }

    #[test]
    fn routes_go_to_every_other_node_with_a_subnet() {
        let node = |name: &str, address: &str, subnet: Option<&str>| {
            serde_json::json!({"kind": "Node", "metadata": {"name": name},
                "spec": {"address": address, "podSubnet": subnet, "cpuMillis": 1000,
                    "memoryBytes": 1, "maxInstances": 1}})
        };
        let nodes = cache(vec![
            node("a", "10.0.0.1", Some("10.244.0.0/24")),
            node("b", "10.0.0.2", Some("10.244.1.0/24")),
            node("c", "10.0.0.3", None),
            node("d", "10.0.0.4", Some("not a cidr")),
        ]);
        let routes = node_routes(&nodes, "a");
        let want: BTreeMap<IpNet, IpAddr> = [(
            "10.244.1.0/24".parse().unwrap(),
            IpAddr::from([10, 0, 0, 2]),
        )]
        .into();
        assert_eq!(routes, want);
    }

    #[test]
    fn vips_of_services_that_have_one_and_are_not_headless() {
        let svc = |name: &str, vip: Option<&str>, headless: bool| {
            serde_json::json!({"kind": "Service", "metadata": {"name": name, "namespace": "d"},
                "spec": {"app": name, "ports": [], "headless": headless},
                "status": {"vip": vip}})
        };
        let services = cache(vec![
            svc("a", Some("10.96.0.5"), false),
            svc("b", Some("10.96.0.6"), true),
            svc("c", None, false),
        ]);
        assert_eq!(
            vips(&services),
            BTreeSet::from([IpAddr::from([10, 96, 0, 5])])
        );
    }

    #[test]
    fn gateway_is_the_first_host() {
        let s: IpNet = "10.244.3.0/24".parse().unwrap();
        assert_eq!(gateway(s), Some(IpAddr::from([10, 244, 3, 1])));
    }
}
