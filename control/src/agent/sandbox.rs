//! An instance's network sandbox in CNI mode: its own network namespace, attached to the node's
//! pod network by a CNI ADD through the exec protocol (as containerd does), and its own
//! `/etc/resolv.conf` pointing at the node's DNS with the Kubernetes search path.
//!
//! Namespaces are iproute2's named namespaces (`/run/netns/NAME`): `ip netns exec` enters one,
//! gives the process a private mount namespace and bind-mounts `/etc/netns/NAME/resolv.conf`
//! over `/etc/resolv.conf` in it. A sandbox outlives restarts of its process (like a pod's);
//! it goes with the instance: CNI DEL, then the namespace and its files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_cni::{Exec, NetworkList, RuntimeConf};

use crate::api::Instance;

/// What every sandbox of a node shares.
#[derive(Debug)]
pub struct CniNetwork {
    /// Runs the plugins of `list` (CNI_PATH is the node's CNI bin directory).
    pub exec: Exec,
    /// The network the node's instances join: the first conflist of the CNI config directory.
    pub list: NetworkList,
    /// iproute2's `ip`.
    pub ip: PathBuf,
    /// Prefix of this node's namespace names (`/run/netns` is shared by the whole machine).
    pub prefix: String,
    /// The node's DNS server, in every instance's resolv.conf.
    pub nameserver: IpAddr,
    /// The cluster DNS zone (search path).
    pub zone: String,
}

/// The host name of an instance: its name, cut to the 63 bytes a host name may have (instance
/// names are DNS labels, so ASCII).
pub fn hostname(inst: &Instance) -> String {
    let name = &inst.metadata.name;
    name.get(..name.len().min(63)).unwrap_or(name).to_owned()
}

/// The /etc/hosts of an instance, as kubelet writes a pod's: loopback, then its own address
/// under its host name.
pub fn hosts_file(address: IpAddr, hostname: &str) -> String {
    format!(
        "# berth-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n"
    )
}

/// The resolv.conf of an instance in namespace `ns`: the node's DNS, and the Kubernetes search
/// path so that `hello` and `hello.other` resolve as they do in a pod.
pub fn resolv_conf(nameserver: IpAddr, ns: &str, zone: &str) -> String {
    format!(
        "# written by the berth agent\nnameserver {nameserver}\nsearch {ns}.svc.{zone} svc.{zone} {zone}\noptions ndots:5\n"
    )
}

/// Finds `ip` on PATH or in the usual places.
pub fn find_ip() -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("ip"))
        .find(|p| p.is_file())
        .context("iproute2's `ip` is not installed (apt-get install iproute2)")
}

/// One instance's sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Namespace name (under `/run/netns`).
    pub name: String,
    /// The instance's address on the pod network.
    pub address: IpAddr,
    container_id: String,
    net: Arc<CniNetwork>,
}

/// Runs iproute2's `ip` with `args`; fails with what it printed.
pub(crate) async fn ip(ip: &Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(ip)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// SIGKILLs every process in the named namespace.
async fn kill_in(ip: &Path, name: &str) {
    let Ok(out) = tokio::process::Command::new(ip)
        .args(["netns", "pids", name])
        .output()
        .await
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn runtime_conf(name: &str, container_id: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: container_id.to_owned(),
        netns: Path::new("/run/netns").join(name),
        ifname: "eth0".into(),
        ..RuntimeConf::default()
    }
}

/// The first address of a CNI result (`ips[0].address`, "10.1.2.3/24").
fn result_address(result: &serde_json::Value) -> Option<IpAddr> {
    let cidr = result
        .get("ips")?
        .as_array()?
        .first()?
        .get("address")?
        .as_str()?;
    cidr.split('/').next()?.parse().ok()
}

impl CniNetwork {
    /// The namespace name and CNI container ID of an instance.
    fn names(&self, inst: &Instance) -> (String, String) {
        let m = &inst.metadata;
        (
            format!("{}-{}-{}", self.prefix, m.namespace, m.name),
            format!("{}.{}", m.namespace, m.name),
        )
    }

    fn etc_dir(name: &str) -> PathBuf {
        Path::new("/etc/netns").join(name)
    }

    /// Creates the sandbox of `inst`: a fresh namespace (anything left under its name by a
    /// previous life goes first), its resolv.conf, and the CNI ADD.
    pub async fn create(self: &Arc<Self>, inst: &Instance) -> Result<Sandbox> {
        let (name, container_id) = self.names(inst);
        let stale = Sandbox {
            name: name.clone(),
            address: IpAddr::from([0, 0, 0, 0]),
            container_id: container_id.clone(),
            net: self.clone(),
        };
        if Path::new("/run/netns").join(&name).exists() {
            stale.destroy().await;
        }
        ip(&self.ip, &["netns", "add", &name]).await?;
        let created = async {
            // Runtimes bring the sandbox's loopback up (containerd with the loopback plugin):
            // instances expect 127.0.0.1.
            ip(&self.ip, &["-n", &name, "link", "set", "lo", "up"]).await?;
            let etc = Self::etc_dir(&name);
            std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
            let resolv = resolv_conf(self.nameserver, &inst.metadata.namespace, &self.zone);
            std::fs::write(etc.join("resolv.conf"), resolv)
                .with_context(|| format!("writing {}/resolv.conf", etc.display()))?;
            let net = self.clone();
            let rt = runtime_conf(&name, &container_id);
            let result = tokio::task::spawn_blocking(move || net.exec.add(&net.list, &rt))
                .await
                .context("CNI ADD task")?
                .context("CNI ADD")?;
            let address = result_address(&result)
                .with_context(|| format!("CNI ADD result has no address: {result}"))?;
            // As kubelet does: the instance's own name resolves to its address, and
            // /etc/hostname says its name (its UTS namespace gets it too, see `hostname`).
            let name = hostname(inst);
            std::fs::write(etc.join("hosts"), hosts_file(address, &name))
                .with_context(|| format!("writing {}/hosts", etc.display()))?;
            std::fs::write(etc.join("hostname"), format!("{name}\n"))
                .with_context(|| format!("writing {}/hostname", etc.display()))?;
            Ok(address)
        };
        match created.await {
            Ok(address) => Ok(Sandbox { address, ..stale }),
            Err(e) => {
                stale.destroy().await;
                Err(e)
            }
        }
    }

    /// Whether the sandbox of `inst` exists, with its address (an agent adopting instances).
    pub fn existing(self: &Arc<Self>, inst: &Instance, address: IpAddr) -> Option<Sandbox> {
        let (name, container_id) = self.names(inst);
        Path::new("/run/netns")
            .join(&name)
            .exists()
            .then(|| Sandbox {
                name,
                address,
                container_id,
                net: self.clone(),
            })
    }

    /// Namespaces of this node that no instance in `keep` owns.
    pub fn orphans(&self, keep: &std::collections::HashSet<String>) -> Vec<String> {
        let prefix = format!("{}-", self.prefix);
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix) && !keep.contains(n))
            .collect()
    }

    /// Removes an orphaned namespace: kills what runs in it and deletes it (its veth pair goes
    /// with it). Its address reservation is freed by the CNI GC the caller runs next with the
    /// attachments it knows.
    pub async fn remove_orphan(&self, name: &str) {
        kill_in(&self.ip, name).await;
        if let Err(e) = ip(&self.ip, &["netns", "delete", name]).await {
            tracing::warn!(netns = %name, error = %format!("{e:#}"), "removing an orphaned namespace");
        }
        let _ = std::fs::remove_dir_all(Self::etc_dir(name));
    }

    /// CNI GC: frees every reservation and leftover of this network that is not one of
    /// `instances` (the instances this node runs).
    pub async fn gc(self: &Arc<Self>, instances: &[Instance]) -> Result<()> {
        let valid: Vec<berth_cni::config::Attachment> = instances
            .iter()
            .map(|i| {
                let (_, container_id) = self.names(i);
                berth_cni::config::Attachment {
                    container_id,
                    ifname: "eth0".into(),
                }
            })
            .collect();
        let net = self.clone();
        tokio::task::spawn_blocking(move || net.exec.gc(&net.list, &valid))
            .await
            .context("CNI GC task")?
            .context("CNI GC")
    }

    /// The namespace name an instance's sandbox has.
    pub fn netns_name(&self, inst: &Instance) -> String {
        self.names(inst).0
    }
}

impl Sandbox {
    /// `argv` run inside the sandbox.
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        [
            self.net.ip.to_string_lossy().into_owned(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
        .into_iter()
        .chain(argv.iter().cloned())
        .collect()
    }

    /// SIGKILLs every process in the namespace.
    pub async fn kill_all(&self) {
        kill_in(&self.net.ip, &self.name).await;
    }

    /// CNI DEL, then the namespace and its files. Best effort: each step is logged and the next
    /// runs anyway (DEL of what is gone succeeds, as the spec requires).
    pub async fn destroy(&self) {
        let net = self.net.clone();
        let rt = runtime_conf(&self.name, &self.container_id);
        match tokio::task::spawn_blocking(move || net.exec.del(&net.list, &rt, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(netns = %self.name, error = %e, "CNI DEL failed"),
            Err(e) => tracing::warn!(netns = %self.name, error = %e, "CNI DEL task failed"),
        }
        if Path::new("/run/netns").join(&self.name).exists()
            && let Err(e) = ip(&self.net.ip, &["netns", "delete", &self.name]).await
        {
            tracing::warn!(netns = %self.name, error = %format!("{e:#}"), "removing the namespace");
        }
        let _ = std::fs::remove_dir_all(CniNetwork::etc_dir(&self.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_name_the_instance_and_host_names_fit() {
        let hosts = hosts_file(IpAddr::from([10, 244, 1, 7]), "hello-x2b4d");
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.ends_with("10.244.1.7\thello-x2b4d\n"), "{hosts}");
        let mut inst: Instance = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a".repeat(70), "namespace": "default"},
            "spec": {"app": "a", "template": {"command": "true"}}
        }))
        .unwrap();
        assert_eq!(hostname(&inst).len(), 63);
        inst.metadata.name = "hello-x2b4d".into();
        assert_eq!(hostname(&inst), "hello-x2b4d");
    }

    #[test]
    fn resolv_conf_has_the_kubernetes_search_path() {
        let r = resolv_conf(IpAddr::from([10, 244, 1, 1]), "shop", "berth.local");
        assert!(r.contains("nameserver 10.244.1.1\n"), "{r}");
        assert!(
            r.contains("search shop.svc.berth.local svc.berth.local berth.local\n"),
            "{r}"
        );
        assert!(r.contains("options ndots:5"), "{r}");
    }

    #[test]
    fn addresses_come_from_the_first_ip_of_the_result() {
        let r = serde_json::json!({"ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1"}]});
        assert_eq!(result_address(&r), Some(IpAddr::from([10, 244, 1, 7])));
        assert_eq!(result_address(&serde_json::json!({"ips": []})), None);
    }
}
