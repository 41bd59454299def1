//! Node bootstrap for the agent: write the conflist for the node's pod subnets into a CNI
//! configuration directory, and install the plugin binary into a CNI bin directory. Both are
//! atomic (write to a temporary file, then rename), so a runtime never reads half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::BUILTIN_IPAM;
use crate::version::Version;

/// The binary name, which is also the plugin `type`.
pub const BINARY: &str = "berth-cni";

/// What a node's network looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Network name (`name` of the conflist).
    pub name: String,
    /// Bridge name.
    pub bridge: String,
    /// The node's pod subnets, one per family (dual stack: one v4, one v6).
    pub subnets: Vec<IpNet>,
    /// MTU of the bridge and the veths.
    pub mtu: u32,
    /// Masquerade traffic leaving the pod network.
    pub masquerade: bool,
    /// Hairpin on bridge ports (an instance reaching itself through a service VIP).
    pub hairpin: bool,
    /// Chain the reference `portmap` plugin (host ports).
    pub portmap: bool,
    /// Where the built-in IPAM keeps its reservations.
    pub data_dir: PathBuf,
}

impl NodeNetwork {
    /// A network with berth's defaults for these subnets.
    pub fn new(subnets: Vec<IpNet>) -> NodeNetwork {
        NodeNetwork {
            name: "berth".into(),
            bridge: "berth0".into(),
            subnets,
            mtu: 1500,
            masquerade: true,
            hairpin: true,
            portmap: false,
            data_dir: PathBuf::from(crate::config::DEFAULT_DATA_DIR),
        }
    }

    /// The conflist, in CNI 1.1.0.
    pub fn conflist(&self) -> Value {
        let ranges: Vec<Value> = self
            .subnets
            .iter()
            .map(|s| json!([{"subnet": s.trunc().to_string()}]))
            .collect();
        let mut plugins = vec![json!({
            "type": BINARY,
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": self.masquerade,
            "hairpinMode": self.hairpin,
            "mtu": self.mtu,
            "capabilities": {"ips": true},
            "ipam": {
                "type": BUILTIN_IPAM,
                "ranges": ranges,
                "dataDir": self.data_dir,
            },
        })];
        if self.portmap {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        }
        json!({
            "cniVersion": Version::LATEST.as_str(),
            "name": self.name,
            "plugins": plugins,
        })
    }

    /// The conflist's file name: runtimes pick the lexically first file in the directory.
    pub fn file_name(&self) -> String {
        format!("10-{}.conflist", self.name)
    }
}

fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Writes the conflist into `conf_dir`; returns its path.
pub fn write_conflist(conf_dir: &Path, net: &NodeNetwork) -> std::io::Result<PathBuf> {
    let path = conf_dir.join(net.file_name());
    let mut bytes = serde_json::to_vec_pretty(&net.conflist()).unwrap_or_default();
    bytes.push(b'\n');
    atomic_write(&path, &bytes, 0o644)?;
    Ok(path)
}

/// Copies the plugin binary `from` into `bin_dir` as `berth-cni` (atomically, so a runtime
/// executing the old binary is not disturbed); returns the installed path.
pub fn install_binary(from: &Path, bin_dir: &Path) -> std::io::Result<PathBuf> {
    let bytes = fs::read(from)?;
    let path = bin_dir.join(BINARY);
    atomic_write(&path, &bytes, 0o755)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_is_valid_plugin_config() {
        let dir = tempfile::tempdir().unwrap();
        let net = NodeNetwork::new(vec![
            "10.42.3.0/24".parse().unwrap(),
            "fd42:3::/64".parse().unwrap(),
        ]);
        let path = write_conflist(dir.path(), &net).unwrap();
        assert!(path.ends_with("10-berth.conflist"));
        let list = crate::exec::NetworkList::parse(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(list.plugins.len(), 1);
        let mut conf = list.plugins[0].clone();
        conf.insert("cniVersion".into(), json!("1.1.0"));
        conf.insert("name".into(), json!("berth"));
        let parsed = crate::config::NetConf::parse(&serde_json::to_vec(&conf).unwrap()).unwrap();
        let crate::config::IpamMode::Builtin(ipam) = parsed.ipam else {
            panic!("builtin ipam")
        };
        assert_eq!(ipam.range_sets.len(), 2);
    }

    #[test]
    fn install_binary_is_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"#!/bin/sh\n").unwrap();
        let installed = install_binary(&src, &dir.path().join("bin")).unwrap();
        assert_eq!(fs::read(&installed).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}
